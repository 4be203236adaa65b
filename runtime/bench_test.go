package runtime

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchJob runs a bounded job of b.N source records to completion and
// reports records per second of wall time and per CPU-second (per core).
func benchJob(b *testing.B, nodes int, spec string, place func(v string, i int) string) {
	c := newTestCluster(b, nodes, nil)
	g := c.parse(fmt.Sprintf(spec, b.N-1))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	c.deploy("bench", g, place)
	subs := c.waitAll("bench", 10*time.Minute)
	wall, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	requireState(b, subs, StateFinished)
	b.ReportMetric(float64(b.N)/wall.Seconds(), "rec/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "rec/cpu-s")
}

func onNode0(string, int) string { return "n0" }

// (a) sequence → map → discard, chained by forward edges on one node.
func BenchmarkSequenceMapDiscard(b *testing.B) {
	benchJob(b, 1, `{"name":"a","vertices":[
	  {"id":"src","operator":"sequence","params":{"to":%d}},
	  {"id":"map","operator":"map","inputs":[{"from":"src"}],"params":{"expr":"{\"n\": n, \"sq\": n * n}"}},
	  {"id":"sink","operator":"discard","inputs":[{"from":"map"}]}]}`, onNode0)
}

func hashCountSpec(p int) string {
	return strings.Replace(`{"name":"b","parallelism":P,"vertices":[
	  {"id":"src","operator":"sequence","params":{"to":%d}},
	  {"id":"count","operator":"count","inputs":[{"from":"src","ship":"hash","key":"n %% 10000"}]},
	  {"id":"sink","operator":"discard","inputs":[{"from":"count"}]}]}`, "P", strconv.Itoa(p), 1)
}

// (b) sequence → hash → count → discard on one node (1M distinct keys).
func BenchmarkSequenceHashCount(b *testing.B) {
	benchJob(b, 1, hashCountSpec(1), onNode0)
}

// (c) as (b) with parallelism 2 over two executors on loopback TCP: every
// subtask i runs on node i, so half of the hash exchange crosses the
// network.
func BenchmarkSequenceHashCountTCP(b *testing.B) {
	benchJob(b, 2, hashCountSpec(2), func(v string, i int) string { return []string{"n0", "n1"}[i] })
}

// (c') the source on one node and the count on the other: all records
// cross the network.
func BenchmarkSequenceHashCountTCPAllRemote(b *testing.B) {
	benchJob(b, 2, hashCountSpec(1), func(v string, i int) string {
		if v == "src" {
			return "n0"
		}
		return "n1"
	})
}

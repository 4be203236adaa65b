package runtime

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// (b) sequence → hash → count → discard, with a checkpoint every second
// (interval=1s) or none (interval=0). Compare rec/s:
//
//	go test ./runtime -run XXX -bench CheckpointOverhead -benchtime 20000000x
func BenchmarkCheckpointOverhead(b *testing.B) {
	for _, interval := range []time.Duration{0, time.Second} {
		b.Run(fmt.Sprintf("interval=%s", interval), func(b *testing.B) {
			cc := newCPClusterBuf(b, 1, 512)
			spec := strings.Replace(hashCountSpec(1), `"vertices"`, `"checkpointing":{"interval":"1s"},"vertices"`, 1)
			g := cc.parse(fmt.Sprintf(spec, b.N-1))
			co := newCoordinator(cc, "bench", jobgraph.ExactlyOnce)
			co.setAttempt(1, g)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, t0 := cpuTime(), time.Now()
			cc.deployAttempt("bench", 1, g, cc.live(), nil)
			if interval > 0 {
				co.start(interval)
			}
			subs := cc.waitAttempt("bench", 1, 3, 10*time.Minute)
			wall, cpu := time.Since(t0), cpuTime()-cpu0
			co.stopTriggers()
			b.StopTimer()
			requireState(b, subs, StateFinished)
			b.ReportMetric(float64(b.N)/wall.Seconds(), "rec/s")
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "rec/cpu-s")
			b.ReportMetric(float64(co.completedCount()), "checkpoints")
		})
	}
}

// Time to checkpoint keyed state of a running job end to end (trigger to
// the last ack): an unbounded sequence counted by n % keys, so the count
// holds `keys` entries (~7 bytes each serialised).
//
//	go test ./runtime -run XXX -bench CheckpointKeyedState -benchtime 3x
func BenchmarkCheckpointKeyedState(b *testing.B) {
	for _, keys := range []int{1_500_000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			cc := newCPClusterBuf(b, 1, 512)
			g := cc.parse(fmt.Sprintf(`{"name":"state","checkpointing":{"interval":"1s"},"vertices":[
			  {"id":"src","operator":"sequence","params":{"from":0}},
			  {"id":"count","operator":"count","inputs":[{"from":"src","ship":"hash","key":"n %% %d"}]},
			  {"id":"sink","operator":"discard","inputs":[{"from":"count"}]}]}`, keys))
			co := newCoordinator(cc, "state", jobgraph.ExactlyOnce)
			co.setAttempt(1, g)
			cc.deployAttempt("state", 1, g, cc.live(), nil)
			cc.waitFor("state to fill", 2*time.Minute, func() bool {
				s := cc.subtask("state", "count", 0)
				return s.Metrics.NumRecordsIn > int64(keys)
			})
			b.ResetTimer()
			var size, syncMs, asyncMs int64
			for i := 0; i < b.N; i++ {
				before := co.completedCount()
				if co.trigger(Checkpoint{}) == 0 {
					b.Fatalf("trigger refused: %v", co.failed)
				}
				cc.waitFor("checkpoint", time.Minute, func() bool { return co.completedCount() > before })
				l, _ := co.latest()
				for _, a := range l.acks {
					if a.VertexID == "count" {
						size, syncMs, asyncMs = a.StateSize, a.SyncMs, a.AsyncMs
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(size)/1e6, "MB")
			b.ReportMetric(float64(syncMs), "sync-ms")
			b.ReportMetric(float64(asyncMs), "async-ms")
			cc.execs["n0"].Cancel("state")
		})
	}
}

// Snapshot and restore cost of one subtask's keyed state of a given size
// through the real code path (serialise, Storage.Write with fsync, read,
// decode, restore key groups), without a pipeline around it. 10 MB always;
// DISPATCHER_BIG_STATE=1 adds 100 MB and 1 GB (needs ~6 GB of memory);
// DISPATCHER_BIG_STATE=100 runs only 100 MB.
func TestKeyedStateSnapshotCost(t *testing.T) {
	sizes := []int{10 << 20}
	if os.Getenv("DISPATCHER_BIG_STATE") != "" {
		sizes = append(sizes, 100<<20, 1<<30)
		if os.Getenv("DISPATCHER_BIG_STATE") == "100" {
			sizes = []int{100 << 20}
		}
	} else if testing.Short() {
		t.Skip("short")
	}
	for _, size := range sizes {
		cc := newCPCluster(t, 1)
		g := cc.parse(`{"name":"st","checkpointing":{"interval":"1s"},"vertices":[
		  {"id":"src","operator":"sequence"},
		  {"id":"count","operator":"count","inputs":[{"from":"src","ship":"hash","key":"k"}]}]}`)
		v := g.Vertex("count")
		mk := func() (*subtask, *aggregate) {
			j := &job{id: "st", attempt: 1, graph: g, ctx: t.Context()}
			s := &subtask{e: cc.execs["n0"], job: j, vertex: v, ctx: t.Context(),
				opctx: &OpContext{Ctx: t.Context(), Vertex: v, Parallelism: 1, MaxParallelism: g.MaxParallelism,
					Inputs: g.InEdges("count"), KeyGroups: jobgraph.KeyGroupRangeForOperator(g.MaxParallelism, 1, 0)}}
			a := newAggregate(aggCount, v.Params).(*aggregate)
			if err := a.Open(s.opctx); err != nil {
				t.Fatal(err)
			}
			s.op = a
			return s, a
		}
		s, a := mk()
		// Keys of 100 bytes: ~105 bytes per entry serialised.
		pad := strings.Repeat("x", 90)
		n := size / 105
		for i := 0; i < n; i++ {
			key := fmt.Sprintf("%s%010d", pad, i)
			e, _ := a.state.get(jobgraph.KeyGroupForKey(key, g.MaxParallelism), key)
			e.v = number{i: int64(i), set: true}
		}
		cp := &Checkpoint{ID: 1, Dir: fmt.Sprintf("st/chk-%d", size)}
		t0 := time.Now()
		data, err := s.encodeSnapshot(cp, a)
		if err != nil {
			t.Fatal(err)
		}
		syncD := time.Since(t0)
		t1 := time.Now()
		if err := cc.storage.Write(t.Context(), s.stateName(cp), data); err != nil {
			t.Fatal(err)
		}
		asyncD := time.Since(t1)
		s2, a2 := mk()
		t2 := time.Now()
		s2.job.restore = &Restore{CheckpointID: 1, Dir: cp.Dir, Attempt: 1}
		if err := s2.restore(s2.job.restore); err != nil {
			t.Fatal(err)
		}
		restoreD := time.Since(t2)
		got := 0
		a2.state.each(func(*entry[number]) { got++ })
		if got != n {
			t.Fatalf("restored %d keys, want %d", got, n)
		}
		t.Logf("keyed state %d MB (%d keys): snapshot sync %v, write+fsync %v (%.0f MB/s), restore %v",
			len(data)>>20, n, syncD.Round(time.Millisecond), asyncD.Round(time.Millisecond),
			float64(len(data))/1e6/asyncD.Seconds(), restoreD.Round(time.Millisecond))
	}
}

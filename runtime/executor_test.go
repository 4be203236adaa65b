package runtime

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

func TestOperatorsMatchJobgraph(t *testing.T) {
	for _, name := range jobgraph.OperatorNames() {
		if _, ok := operators[name]; !ok {
			t.Errorf("jobgraph operator %q has no implementation", name)
		}
	}
	for name := range operators {
		if _, ok := jobgraph.Operator(name); !ok {
			t.Errorf("implemented operator %q is not defined in jobgraph", name)
		}
	}
}

// A bounded word count over three executors: lines are read from a file,
// split by flat-map, hashed to 4 count subtasks and written by one file
// sink. The final count of each word (the last update per key) must equal
// the count computed here, and records must have crossed the network.
func TestWordCountAcrossExecutors(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.BufferSize = 64 })
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string]int64{}
	var lines strings.Builder
	for i := 0; i < 3000; i++ {
		var words []string
		for j := 0; j < 1+rng.IntN(8); j++ {
			w := vocabulary[rng.IntN(40)]
			words = append(words, w)
			want[w]++
		}
		fmt.Fprintf(&lines, "{\"line\": %q}\n", strings.Join(words, " "))
	}
	if err := os.WriteFile(filepath.Join(c.in, "lines.jsonl"), []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	g := c.parse(`{"name":"word-count","vertices":[
	  {"id":"lines","operator":"file-source","parallelism":2,"params":{"path":"lines.jsonl"}},
	  {"id":"words","operator":"flat-map","parallelism":2,"inputs":[{"from":"lines"}],"params":{"expr":"map(split(line, \" \"), {{\"word\": #}})"}},
	  {"id":"count","operator":"count","parallelism":4,"inputs":[{"from":"words","ship":"hash","key":"word"}]},
	  {"id":"out","operator":"file-sink","parallelism":1,"inputs":[{"from":"count","ship":"rebalance"}],"params":{"path":"word-count"}}]}`)
	nodes := []string{"n0", "n1", "n2"}
	c.deploy("wc", g, func(v string, i int) string { return nodes[i%3] })
	subs := c.waitAll("wc", 30*time.Second)
	requireState(t, subs, StateFinished)

	got := map[string]int64{}
	var updates int
	for _, r := range readOutput(t, c.out, "word-count") {
		updates++
		w, n := r["key"].(string), r["count"].(int64)
		got[w] = max(got[w], n)
	}
	var total int64
	for w, n := range want {
		total += n
		if got[w] != n {
			t.Errorf("count(%q) = %d, want %d", w, got[w], n)
		}
	}
	if len(got) != len(want) || int64(updates) != total {
		t.Errorf("%d keys / %d updates, want %d / %d", len(got), updates, len(want), total)
	}
	// count[1] and count[2] run on n1/n2 and are fed by words[0] on n0.
	var remoteBytes int64
	for _, s := range subs {
		if s.VertexID == "count" {
			if s.NodeID != "n0" && s.Metrics.NumBytesIn == 0 {
				t.Errorf("count[%d] on %s received no bytes over the network", s.Subtask, s.NodeID)
			}
			remoteBytes += s.Metrics.NumBytesIn
		}
	}
	if remoteBytes == 0 {
		t.Error("no bytes crossed the network")
	}
	// Every subtask went through Flink's states in order.
	order := []string{StateCreated, StateScheduled, StateDeploying, StateInitializing, StateRunning, StateFinished}
	for _, s := range subs {
		prev := int64(0)
		for _, st := range order {
			ts, ok := s.Timestamps[st]
			if !ok || ts < prev {
				t.Errorf("%s[%d]: timestamp of %s missing or out of order: %v", s.VertexID, s.Subtask, st, s.Timestamps)
			}
			prev = ts
		}
	}
	events := map[string]int{}
	for _, ev := range c.events.all() {
		if ev.JobID == "wc" {
			events[ev.State]++
		}
	}
	if events[StateFinished] != len(subs) || events[StateScheduled] != len(subs) || events[StateCreated] != 0 {
		t.Errorf("reported events %v for %d subtasks (CREATED is the initial state and not reported)", events, len(subs))
	}
}

// A slow sink stalls its producer across the network: the producer is
// back-pressured (time metric and sampling), the sleeper is busy and not
// back-pressured, and in-flight data stays within the credits.
func TestBackPressure(t *testing.T) {
	const bufSize, credits = 16, 2
	c := newTestCluster(t, 2, func(cfg *Config) { cfg.BufferSize, cfg.Credits = bufSize, credits })
	g := c.parse(`{"name":"bp","vertices":[
	  {"id":"src","operator":"sequence"},
	  {"id":"slow","operator":"sleep","inputs":[{"from":"src"}],"params":{"perRecord":"2ms"}},
	  {"id":"sink","operator":"discard","inputs":[{"from":"slow"}]}]}`)
	c.deploy("bp", g, func(v string, i int) string {
		if v == "src" {
			return "n0"
		}
		return "n1"
	})
	c.waitFor("metrics", 10*time.Second, func() bool {
		src := c.subtask("bp", "src", 0)
		return src.State == StateRunning && src.Metrics.BackPressuredTimeMsPerSecond > 500 &&
			time.Since(time.UnixMilli(src.Timestamps[StateRunning])) > 2*time.Second
	})
	src, slow := c.subtask("bp", "src", 0), c.subtask("bp", "slow", 0)
	t.Logf("src: %+v", src.Metrics)
	t.Logf("slow: %+v", slow.Metrics)
	if slow.Metrics.BackPressuredTimeMsPerSecond > 100 || slow.Metrics.BusyTimeMsPerSecond < 800 {
		t.Errorf("sleeper: back-pressured %.0f ms/s, busy %.0f ms/s; want not back-pressured and busy",
			slow.Metrics.BackPressuredTimeMsPerSecond, slow.Metrics.BusyTimeMsPerSecond)
	}
	if src.Metrics.OutPoolUsage < 0.99 || src.Metrics.OutputQueueLength != credits {
		t.Errorf("producer outPoolUsage %.2f, outputQueueLength %d; want full", src.Metrics.OutPoolUsage, src.Metrics.OutputQueueLength)
	}
	ratios, err := c.execs["n0"].SampleBackPressure(context.Background(), "bp", "src", 20, 5*time.Millisecond)
	if err != nil || ratios[0] <= 0.5 {
		t.Errorf("sampled producer ratio %v (%v), want HIGH (> 0.5)", ratios, err)
	}
	ratios, err = c.execs["n1"].SampleBackPressure(context.Background(), "bp", "slow", 20, 5*time.Millisecond)
	if err != nil || ratios[0] > 0.1 {
		t.Errorf("sampled sleeper ratio %v (%v), want OK (<= 0.1)", ratios, err)
	}
	// Bounded memory: what the producer sent and the sleeper has not taken
	// from its queue is at most one buffer per credit.
	src, slow = c.subtask("bp", "src", 0), c.subtask("bp", "slow", 0)
	if inFlight := src.Metrics.NumRecordsOut - slow.Metrics.NumRecordsIn; inFlight > credits*bufSize {
		t.Errorf("%d records in flight, want <= %d", inFlight, credits*bufSize)
	}
	c.execs["n0"].Cancel("bp")
	c.execs["n1"].Cancel("bp")
	requireState(t, c.waitAll("bp", 5*time.Second), StateCanceled)
}

// A runtime expression error fails the subtask with the message, reported
// to the Reporter.
func TestExpressionErrorFails(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	g := c.parse(`{"name":"err","vertices":[
	  {"id":"src","operator":"sequence","params":{"to":1000}},
	  {"id":"m","operator":"map","inputs":[{"from":"src"}],"params":{"expr":"n < 500 ? {\"n\": n} : {\"n\": n * missing}"}},
	  {"id":"out","operator":"discard","inputs":[{"from":"m"}]}]}`)
	c.deploy("err", g, func(string, int) string { return "n0" })
	c.waitFor("failure", 10*time.Second, func() bool { return c.subtask("err", "m", 0).State == StateFailed })
	m := c.subtask("err", "m", 0)
	if !strings.Contains(m.Failure, `failed on record {"n":500}`) || !strings.Contains(m.Failure, "invalid operation") {
		t.Errorf("failure message %q", m.Failure)
	}
	c.waitFor("reported failure", 5*time.Second, func() bool {
		for _, ev := range c.events.all() {
			if ev.VertexID == "m" && ev.State == StateFailed && ev.Failure == m.Failure {
				return true
			}
		}
		return false
	})
	// The cluster layer decides: here it cancels the rest of the job.
	c.execs["n0"].Cancel("err")
	for _, s := range c.waitAll("err", 5*time.Second) {
		if s.VertexID != "m" && s.State != StateCanceled && s.State != StateFinished {
			t.Errorf("%s is %s", s.VertexID, s.State)
		}
	}
}

// Cancel stops an unbounded job spread over two executors promptly, and no
// goroutine outlives the executors.
func TestCancelLeavesNothingRunning(t *testing.T) {
	before := goruntime.NumGoroutine()
	func() {
		c := newTestCluster(t, 2, nil)
		g := c.parse(`{"name":"forever","parallelism":2,"vertices":[
		  {"id":"src","operator":"datagen","params":{"kind":"nexmark-bids"}},
		  {"id":"sum","operator":"sum","inputs":[{"from":"src","ship":"hash","key":"auction"}],"params":{"field":"price"}},
		  {"id":"slow","operator":"sleep","inputs":[{"from":"sum"}],"params":{"perRecord":"1ms"}},
		  {"id":"sink","operator":"discard","inputs":[{"from":"slow","ship":"rebalance"}]}]}`)
		c.deploy("forever", g, func(v string, i int) string { return []string{"n0", "n1"}[i] })
		c.waitFor("records flowing", 10*time.Second, func() bool { return c.subtask("forever", "sink", 1).Metrics.NumRecordsIn > 100 })
		start := time.Now()
		for _, e := range c.execs {
			e.Cancel("forever")
		}
		subs := c.waitAll("forever", 2*time.Second)
		requireState(t, subs, StateCanceled)
		t.Logf("cancelled in %s", time.Since(start))
		for _, s := range subs {
			if _, ok := s.Timestamps[StateCanceling]; !ok {
				t.Errorf("%s[%d] did not pass CANCELING", s.VertexID, s.Subtask)
			}
		}
		c.close()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for goruntime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, goruntime.NumGoroutine(), buf[:goruntime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Losing a data connection fails the subtasks that need it.
func TestLostConnectionFails(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	g := c.parse(`{"name":"lost","vertices":[
	  {"id":"src","operator":"sequence","params":{"ratePerSecond":1000}},
	  {"id":"sink","operator":"discard","inputs":[{"from":"src"}]}]}`)
	c.deploy("lost", g, func(v string, i int) string {
		if v == "src" {
			return "n0"
		}
		return "n1"
	})
	c.waitFor("records flowing", 10*time.Second, func() bool { return c.subtask("lost", "sink", 0).Metrics.NumRecordsIn > 10 })
	c.execs["n0"].Close() // the source's node goes away
	c.waitFor("sink failure", 5*time.Second, func() bool { return c.execs["n1"].Subtasks("lost")[0].State == StateFailed })
	if f := c.execs["n1"].Subtasks("lost")[0].Failure; !strings.Contains(f, "lost data connection") {
		t.Errorf("failure %q", f)
	}
}

// exec runs a program per subtask; records go through its stdin/stdout.
func TestExec(t *testing.T) {
	c := newTestCluster(t, 1, func(cfg *Config) { cfg.AllowExec, cfg.ExecPaths = true, []string{"/bin", "/usr/bin"} })
	g := c.parse(`{"name":"exec","vertices":[
	  {"id":"src","operator":"sequence","parallelism":2,"params":{"to":999}},
	  {"id":"cat","operator":"exec","parallelism":2,"inputs":[{"from":"src"}],"params":{"command":"/bin/cat"}},
	  {"id":"out","operator":"file-sink","inputs":[{"from":"cat","ship":"rebalance"}],"params":{"path":"cat"}}]}`)
	c.deploy("exec", g, func(string, int) string { return "n0" })
	requireState(t, c.waitAll("exec", 20*time.Second), StateFinished)
	var ns []int
	for _, r := range readOutput(t, c.out, "cat") {
		ns = append(ns, int(r["n"].(int64)))
	}
	sort.Ints(ns)
	if len(ns) != 1000 || ns[0] != 0 || ns[999] != 999 {
		t.Errorf("got %d records", len(ns))
	}

	g = c.parse(`{"name":"exec-fail","vertices":[
	  {"id":"src","operator":"sequence","params":{"to":99999}},
	  {"id":"sh","operator":"exec","inputs":[{"from":"src"}],"params":{"command":"/bin/sh","args":["-c","read x; echo broken >&2; exit 3"]}},
	  {"id":"out","operator":"discard","inputs":[{"from":"sh"}]}]}`)
	c.deploy("exec-fail", g, func(string, int) string { return "n0" })
	c.waitFor("exec failure", 10*time.Second, func() bool { return c.subtask("exec-fail", "sh", 0).State == StateFailed })
	if f := c.subtask("exec-fail", "sh", 0).Failure; !strings.Contains(f, "exit status 3") || !strings.Contains(f, "broken") {
		t.Errorf("failure %q", f)
	}
	c.execs["n0"].Cancel("exec-fail")
	c.waitAll("exec-fail", 5*time.Second)

	// A source exec (no inputs).
	g = c.parse(`{"name":"exec-src","vertices":[
	  {"id":"sh","operator":"exec","params":{"command":"/bin/sh","args":["-c","for i in 1 2 3; do echo \"{\\\"i\\\": $i}\"; done"]}},
	  {"id":"out","operator":"file-sink","inputs":[{"from":"sh"}],"params":{"path":"exec-src"}}]}`)
	c.deploy("exec-src", g, func(string, int) string { return "n0" })
	requireState(t, c.waitAll("exec-src", 10*time.Second), StateFinished)
	if recs := readOutput(t, c.out, "exec-src"); len(recs) != 3 || recs[2]["i"] != int64(3) {
		t.Errorf("exec source output %v", recs)
	}
}

// Partly filled buffers are flushed after FlushTimeout.
func TestFlushTimeout(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	g := c.parse(`{"name":"slow","vertices":[
	  {"id":"src","operator":"sequence","params":{"to":19,"ratePerSecond":20}},
	  {"id":"sink","operator":"discard","inputs":[{"from":"src"}]}]}`)
	c.deploy("slow", g, func(v string, i int) string {
		if v == "src" {
			return "n0"
		}
		return "n1"
	})
	time.Sleep(600 * time.Millisecond)
	if n := c.subtask("slow", "sink", 0).Metrics.NumRecordsIn; n < 5 || n >= 20 {
		t.Errorf("after 600ms the sink has %d of 20 records; want them trickling in", n)
	}
	requireState(t, c.waitAll("slow", 5*time.Second), StateFinished)
	if n := c.subtask("slow", "sink", 0).Metrics.NumRecordsIn; n != 20 {
		t.Errorf("sink got %d records", n)
	}
}

// The other operators, checked on their output.
func TestOperators(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	g := c.parse(`{"name":"ops","vertices":[
	  {"id":"seq","operator":"sequence","parallelism":2,"params":{"from":1,"to":1000}},
	  {"id":"even","operator":"filter","parallelism":2,"inputs":[{"from":"seq"}],"params":{"expr":"n % 2 == 0"}},
	  {"id":"kv","operator":"map","parallelism":2,"inputs":[{"from":"even"}],"params":{"expr":"{\"k\": n % 3, \"v\": n, \"half\": int(n / 2)}"}},
	  {"id":"sum","operator":"sum","parallelism":3,"inputs":[{"from":"kv","ship":"hash","key":"k"}],"params":{"field":"v"}},
	  {"id":"min","operator":"min","parallelism":2,"inputs":[{"from":"kv","ship":"hash","key":"k"}],"params":{"field":"half"}},
	  {"id":"max","operator":"max","parallelism":1,"inputs":[{"from":"kv","ship":"hash","key":"k"}],"params":{"field":"v"}},
	  {"id":"win","operator":"window","parallelism":2,"inputs":[{"from":"kv","ship":"hash","key":"k"}],"params":{"size":"2h","slide":"1h","agg":"avg","field":"v"}},
	  {"id":"thr","operator":"throttle","parallelism":2,"inputs":[{"from":"kv","ship":"broadcast"}],"params":{"ratePerSecond":100000}},
	  {"id":"bids","operator":"datagen","parallelism":2,"params":{"kind":"nexmark-bids","count":200,"seed":5}},
	  {"id":"people","operator":"datagen","params":{"kind":"nexmark-persons","count":10}},
	  {"id":"auctions","operator":"datagen","params":{"kind":"nexmark-auctions","count":10}},
	  {"id":"log","operator":"log-sink","inputs":[{"from":"people"},{"from":"auctions"}]},
	  {"id":"o-sum","operator":"file-sink","inputs":[{"from":"sum"}],"params":{"path":"sum"}},
	  {"id":"o-min","operator":"file-sink","inputs":[{"from":"min"}],"params":{"path":"min"}},
	  {"id":"o-max","operator":"file-sink","inputs":[{"from":"max"}],"params":{"path":"max"}},
	  {"id":"o-win","operator":"file-sink","inputs":[{"from":"win"}],"params":{"path":"win"}},
	  {"id":"o-thr","operator":"file-sink","inputs":[{"from":"thr"}],"params":{"path":"thr"}},
	  {"id":"o-bids","operator":"file-sink","parallelism":2,"inputs":[{"from":"bids"}],"params":{"path":"bids","rollSize":4096}}]}`)
	c.deploy("ops", g, func(v string, i int) string { return []string{"n0", "n1"}[i%2] })
	requireState(t, c.waitAll("ops", 30*time.Second), StateFinished)

	wantSum, wantMin, wantMax, wantCount := map[int64]int64{}, map[int64]int64{}, map[int64]int64{}, map[int64]int64{}
	for n := int64(2); n <= 1000; n += 2 {
		k := n % 3
		wantSum[k] += n
		wantCount[k]++
		if wantMin[k] == 0 || n/2 < wantMin[k] {
			wantMin[k] = n / 2
		}
		wantMax[k] = max(wantMax[k], n)
	}
	final := func(dir, field string, better func(a, b int64) bool) map[int64]int64 {
		got := map[int64]int64{}
		for _, r := range readOutput(t, c.out, dir) {
			k, v := r["key"].(int64), r[field].(int64)
			if old, ok := got[k]; !ok || better(v, old) {
				got[k] = v
			}
		}
		return got
	}
	greater := func(a, b int64) bool { return a > b }
	if got := final("sum", "sum", greater); fmt.Sprint(got) != fmt.Sprint(wantSum) {
		t.Errorf("sum %v, want %v", got, wantSum)
	}
	if got := final("min", "min", func(a, b int64) bool { return a < b }); fmt.Sprint(got) != fmt.Sprint(wantMin) {
		t.Errorf("min %v, want %v", got, wantMin)
	}
	if got := final("max", "max", greater); fmt.Sprint(got) != fmt.Sprint(wantMax) {
		t.Errorf("max %v, want %v", got, wantMax)
	}
	// Sliding 2h/1h: every record is in two windows, flushed at the end.
	win := readOutput(t, c.out, "win")
	if len(win) != 6 {
		t.Errorf("window output %v", win)
	}
	for _, r := range win {
		k := r["key"].(int64)
		if avg := r["avg"].(float64); avg != float64(wantSum[k])/float64(wantCount[k]) {
			t.Errorf("window %v: avg %v, want %v", r, avg, float64(wantSum[k])/float64(wantCount[k]))
		}
		if r["window_end"].(int64)-r["window_start"].(int64) != 2*3600*1000 {
			t.Errorf("window bounds %v", r)
		}
	}
	if n := len(readOutput(t, c.out, "thr")); n != 2*500 {
		t.Errorf("broadcast to 2 throttle subtasks gave %d records, want 1000", n)
	}
	bids := readOutput(t, c.out, "bids")
	if len(bids) != 200 || bids[0]["auction"] == nil || bids[0]["price"] == nil {
		t.Errorf("%d bids, first %v", len(bids), bids[0])
	}
	parts, _ := filepath.Glob(filepath.Join(c.out, "bids", "part-*"))
	if len(parts) < 4 {
		t.Errorf("rollSize produced only %v", parts)
	}
	if hidden, _ := filepath.Glob(filepath.Join(c.out, "*", ".part-*")); len(hidden) != 0 {
		t.Errorf("in-progress files left: %v", hidden)
	}
	filtered := int64(0)
	for _, s := range c.subtasks("ops") {
		if s.VertexID == "even" {
			filtered += s.Metrics.Accumulators["numRecordsFiltered"]
		}
	}
	if filtered != 500 {
		t.Errorf("numRecordsFiltered = %d, want 500", filtered)
	}
}

func TestDatagenDeterministic(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	for i, p := range []int{1, 3} {
		g := c.parse(fmt.Sprintf(`{"name":"gen","vertices":[
		  {"id":"g","operator":"datagen","parallelism":%d,"params":{"kind":"words","count":5000,"seed":7}},
		  {"id":"c","operator":"count","parallelism":2,"inputs":[{"from":"g","ship":"hash","key":"word"}]},
		  {"id":"o","operator":"file-sink","inputs":[{"from":"c"}],"params":{"path":"gen%d"}}]}`, p, i))
		c.deploy(fmt.Sprint("gen", i), g, func(string, int) string { return "n0" })
		requireState(t, c.waitAll(fmt.Sprint("gen", i), 10*time.Second), StateFinished)
	}
	counts := func(dir string) map[string]int64 {
		m := map[string]int64{}
		for _, r := range readOutput(t, c.out, dir) {
			m[r["key"].(string)] = max(m[r["key"].(string)], r["count"].(int64))
		}
		return m
	}
	a, b := counts("gen0"), counts("gen1")
	var total int64
	for _, n := range a {
		total += n
	}
	if total != 5000 || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("total %d; parallelism 1 and 3 differ: %v vs %v", total, a, b)
	}
}

func TestDeployIdempotentAndValidated(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	g := c.parse(`{"name":"i","vertices":[{"id":"s","operator":"sequence","params":{"to":10}},{"id":"d","operator":"discard","inputs":[{"from":"s"}]}]}`)
	e := c.execs["n0"]
	d := Deployment{JobID: "i", Attempt: 1, Graph: g, Placement: map[string][]string{"s": {"n0"}, "d": {"n0"}}}
	if err := e.Deploy(d); err != nil {
		t.Fatal(err)
	}
	if err := e.Deploy(d); err != nil {
		t.Fatal(err)
	}
	if n := len(e.Subtasks("i")); n != 2 {
		t.Errorf("%d subtasks after deploying twice", n)
	}
	c.waitAll("i", 5*time.Second)
	d.Attempt = 0
	if err := e.Deploy(d); err == nil {
		t.Error("an older attempt was accepted")
	}
	d.Attempt, d.Placement = 2, map[string][]string{"s": {"n0"}}
	if err := e.Deploy(d); err == nil || !strings.Contains(err.Error(), "placement") {
		t.Errorf("bad placement: %v", err)
	}
	// The node re-validates: this node does not allow exec.
	ge := c.parse(`{"name":"x","vertices":[{"id":"x","operator":"exec","params":{"command":"/bin/cat"}}]}`)
	if err := e.Deploy(Deployment{JobID: "x", Attempt: 1, Graph: ge, Placement: map[string][]string{"x": {"n0"}}}); err == nil {
		t.Error("exec deployed on a node that does not allow it")
	}
}

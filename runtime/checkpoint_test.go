package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/checkpoint"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// cpCluster is a test cluster whose nodes have their own output directory
// and share a checkpoint storage, with a test coordinator.
type cpCluster struct {
	*testCluster
	outs    map[string]string
	chkRoot string
	storage *checkpoint.DirStorage
	dead    map[string]bool
}

func newCPCluster(t testing.TB, nodes int) *cpCluster { return newCPClusterBuf(t, nodes, 64) }

func newCPClusterBuf(t testing.TB, nodes, bufSize int) *cpCluster {
	base := t.TempDir()
	cc := &cpCluster{outs: map[string]string{}, chkRoot: filepath.Join(base, "checkpoints"), dead: map[string]bool{}}
	cc.storage = checkpoint.NewDirStorage(cc.chkRoot)
	cc.testCluster = newTestCluster(t, nodes, func(cfg *Config) {
		dir := filepath.Join(base, "out-"+cfg.NodeID)
		os.MkdirAll(dir, 0o755)
		cc.outs[cfg.NodeID] = dir
		cfg.OutputDir = dir
		cfg.Storage = cc.storage
		cfg.BufferSize = bufSize
	})
	return cc
}

func (cc *cpCluster) live() []string {
	var out []string
	for id := range cc.execs {
		if !cc.dead[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// kill closes a node's executor (its subtasks end, its connections drop).
func (cc *cpCluster) kill(node string) {
	cc.dead[node] = true
	for i, ln := range cc.lns {
		if ln.Addr().String() == cc.addrs[node] {
			cc.lns[i].Close()
		}
	}
	cc.execs[node].Close()
}

// deployAttempt places subtask i of the k-th vertex on nodes[(i+k) % n]
// and deploys on those nodes.
func (cc *cpCluster) deployAttempt(jobID string, attempt int, g *jobgraph.JobGraph, nodes []string, r *Restore) {
	cc.t.Helper()
	pl := map[string][]string{}
	used := map[string]bool{}
	for k, v := range g.Topological() {
		for i := 0; i < v.Parallelism; i++ {
			n := nodes[(i+k)%len(nodes)]
			pl[v.ID] = append(pl[v.ID], n)
			used[n] = true
		}
	}
	for n := range used {
		if err := cc.execs[n].Deploy(Deployment{JobID: jobID, Attempt: attempt, Graph: g, Placement: pl, Restore: r}); err != nil {
			cc.t.Fatal(err)
		}
	}
}

func (cc *cpCluster) attemptSubtasks(jobID string, attempt int) []SubtaskStatus {
	var all []SubtaskStatus
	for _, e := range cc.execs {
		for _, s := range e.Subtasks(jobID) {
			if s.Attempt == attempt {
				all = append(all, s)
			}
		}
	}
	return all
}

func (cc *cpCluster) waitAttempt(jobID string, attempt int, want int, timeout time.Duration) []SubtaskStatus {
	cc.t.Helper()
	var subs []SubtaskStatus
	cc.waitFor(fmt.Sprintf("attempt %d of %s to end", attempt, jobID), timeout, func() bool {
		subs = cc.attemptSubtasks(jobID, attempt)
		if len(subs) < want {
			return false
		}
		for _, s := range subs {
			if !terminal(s.State) {
				return false
			}
		}
		return true
	})
	return subs
}

// coordinator is the test's checkpoint coordinator: it triggers
// checkpoints, collects acks and notifies completion.
type coordinator struct {
	cc      *cpCluster
	jobID   string
	mode    string
	mu      sync.Mutex
	attempt int
	g       *jobgraph.JobGraph
	nextID  int64
	acks    map[int64]map[string]CheckpointAck
	failed  map[int64]string
	done    []completed
	stop    chan struct{}
	wg      sync.WaitGroup
}

type completed struct {
	id      int64
	dir     string
	attempt int
	acks    []CheckpointAck
}

func newCoordinator(cc *cpCluster, jobID, mode string) *coordinator {
	co := &coordinator{cc: cc, jobID: jobID, mode: mode, acks: map[int64]map[string]CheckpointAck{}, failed: map[int64]string{}}
	cc.events.onAck(co.onAck)
	return co
}

func (co *coordinator) setAttempt(attempt int, g *jobgraph.JobGraph) {
	co.mu.Lock()
	co.attempt, co.g = attempt, g
	co.mu.Unlock()
}

func (co *coordinator) subtaskCount() int {
	n := 0
	for _, v := range co.g.Vertices {
		n += v.Parallelism
	}
	return n
}

// trigger starts checkpoint cp on every live node (the id is assigned
// here unless set) and returns its id, or 0 if a node refused it.
func (co *coordinator) trigger(cp Checkpoint) int64 {
	co.mu.Lock()
	attempt := co.attempt
	if attempt == 0 {
		co.mu.Unlock()
		return 0
	}
	co.nextID++
	cp.ID = co.nextID
	if cp.Dir == "" {
		cp.Dir = fmt.Sprintf("%s/chk-%d", co.jobID, cp.ID)
	}
	cp.Mode = co.mode
	co.acks[cp.ID] = map[string]CheckpointAck{}
	co.mu.Unlock()
	for _, n := range co.cc.live() {
		if err := co.cc.execs[n].TriggerCheckpoint(co.jobID, attempt, cp); err != nil {
			if !strings.Contains(err.Error(), "not running here") {
				co.mu.Lock()
				co.failed[cp.ID] = err.Error()
				co.mu.Unlock()
				return 0
			}
		}
	}
	return cp.ID
}

func (co *coordinator) onAck(a CheckpointAck) {
	co.mu.Lock()
	defer co.mu.Unlock()
	if a.JobID != co.jobID || a.Attempt != co.attempt {
		return
	}
	m := co.acks[a.CheckpointID]
	if m == nil || co.failed[a.CheckpointID] != "" {
		return
	}
	if a.Declined != "" {
		co.failed[a.CheckpointID] = a.Declined
		return
	}
	m[fmt.Sprintf("%s-%d", a.VertexID, a.Subtask)] = a
	if len(m) != co.subtaskCount() {
		return
	}
	c := completed{id: a.CheckpointID, dir: filepath.Dir(a.StateFile), attempt: a.Attempt}
	for _, x := range m {
		c.acks = append(c.acks, x)
	}
	co.done = append(co.done, c)
	for _, n := range co.cc.live() {
		co.cc.execs[n].CheckpointComplete(co.jobID, a.Attempt, a.CheckpointID)
	}
}

func (co *coordinator) latest() (completed, bool) {
	co.mu.Lock()
	defer co.mu.Unlock()
	if len(co.done) == 0 {
		return completed{}, false
	}
	return co.done[len(co.done)-1], true
}

func (co *coordinator) completedCount() int {
	co.mu.Lock()
	defer co.mu.Unlock()
	return len(co.done)
}

// start triggers a checkpoint every interval until stopTriggers.
func (co *coordinator) start(interval time.Duration) {
	co.stop = make(chan struct{})
	co.wg.Add(1)
	go func() {
		defer co.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-co.stop:
				return
			case <-t.C:
				co.trigger(Checkpoint{})
			}
		}
	}()
}

func (co *coordinator) stopTriggers() {
	if co.stop != nil {
		close(co.stop)
		co.wg.Wait()
		co.stop = nil
	}
}

func (l *eventLog) onAck(f func(CheckpointAck)) {
	l.mu.Lock()
	l.ackHook = f
	l.mu.Unlock()
}

func (l *eventLog) CheckpointAcked(a CheckpointAck) {
	l.mu.Lock()
	f := l.ackHook
	l.acks = append(l.acks, a)
	l.mu.Unlock()
	if f != nil {
		f(a)
	}
}

func eoSpec(n, rate int, p int, mode string) string {
	return fmt.Sprintf(`{"name":"eo","maxParallelism":32,"parallelism":%d,"checkpointing":{"interval":"100ms","mode":%q},"vertices":[
	  {"id":"src","operator":"sequence","params":{"from":1,"to":%d,"ratePerSecond":%d}},
	  {"id":"sum","operator":"sum","inputs":[{"from":"src","ship":"hash","key":"n %% 7"}],"params":{"field":"n"}},
	  {"id":"sums","operator":"file-sink","inputs":[{"from":"sum","ship":"rebalance"}],"params":{"path":"sums"}},
	  {"id":"pass","operator":"file-sink","inputs":[{"from":"src"}],"params":{"path":"pass"}}]}`, p, mode, n, rate)
}

// readAll reads the committed part files of dir on every node.
func (cc *cpCluster) readAll(dir string) []Record {
	var recs []Record
	for _, out := range cc.outs {
		recs = append(recs, readOutput(cc.t, out, dir)...)
	}
	return recs
}

// checkResults verifies the pass-through output holds each n of 1..N
// exactly once (at least once unless exact) and the sums per key n % 7
// are exact: one update per input record, strictly increasing, the last
// equal to the total.
func (cc *cpCluster) checkResults(n int, exact bool) {
	t := cc.t
	t.Helper()
	seen := make([]int, n+1)
	for _, r := range cc.readAll("pass") {
		v := r["n"].(int64)
		if v < 1 || v > int64(n) {
			t.Fatalf("unexpected record %v", r)
		}
		seen[v]++
	}
	var dup, lost int
	for v := 1; v <= n; v++ {
		switch {
		case seen[v] == 0:
			lost++
		case seen[v] > 1:
			dup++
		}
	}
	if lost > 0 || (exact && dup > 0) {
		t.Errorf("pass-through: %d numbers lost, %d duplicated (of %d)", lost, dup, n)
	}
	wantSum, wantCount := map[int64]int64{}, map[int64]int{}
	for v := 1; v <= n; v++ {
		wantSum[int64(v%7)] += int64(v)
		wantCount[int64(v%7)]++
	}
	got := map[int64][]int64{}
	for _, r := range cc.readAll("sums") {
		got[r["key"].(int64)] = append(got[r["key"].(int64)], r["sum"].(int64))
	}
	for k, want := range wantSum {
		sums := got[k]
		sort.Slice(sums, func(a, b int) bool { return sums[a] < sums[b] })
		distinct := 0
		for i := range sums {
			if i == 0 || sums[i] != sums[i-1] {
				distinct++
			}
		}
		if exact {
			if len(sums) != wantCount[k] || distinct != len(sums) || sums[len(sums)-1] != want {
				t.Errorf("key %d: %d updates (%d distinct), last %d; want %d updates, last %d", k, len(sums), distinct, last(sums), wantCount[k], want)
			}
		} else if len(sums) < wantCount[k] || last(sums) < want {
			t.Errorf("key %d: %d updates, last %d; want at least %d updates and %d", k, len(sums), last(sums), wantCount[k], want)
		}
	}
}

func last(s []int64) int64 {
	if len(s) == 0 {
		return -1
	}
	return s[len(s)-1]
}

// runWithFailures runs the exactly-once job, killing one node per entry of
// kills after some checkpoints completed, restoring each time from the
// latest completed checkpoint on the remaining nodes.
func runWithFailures(t *testing.T, mode string, kills []string) {
	const n, rate = 30000, 6000
	cc := newCPCluster(t, 3)
	g := cc.parse(eoSpec(n, rate, 2, mode))
	co := newCoordinator(cc, "eo", mode)
	attempt := 1
	co.setAttempt(attempt, g)
	cc.deployAttempt("eo", attempt, g, cc.live(), nil)
	co.start(100 * time.Millisecond)
	var restoredFrom []completed
	for _, victim := range kills {
		before := co.completedCount()
		cc.waitFor("more completed checkpoints", 20*time.Second, func() bool { return co.completedCount() >= before+4 })
		cc.kill(victim)
		// The cluster layer sees the failure and cancels the attempt.
		co.setAttempt(0, g)
		for _, node := range cc.live() {
			cc.execs[node].Cancel("eo")
		}
		cc.waitAttempt("eo", attempt, 1, 10*time.Second)
		for _, s := range cc.attemptSubtasks("eo", attempt) {
			if s.State == StateFinished && s.VertexID == "src" {
				t.Fatalf("the source finished before the failure: make the job longer")
			}
		}
		latest, ok := co.latest()
		if !ok {
			t.Fatal("no completed checkpoint")
		}
		restoredFrom = append(restoredFrom, latest)
		attempt++
		co.setAttempt(attempt, g)
		cc.deployAttempt("eo", attempt, g, cc.live(), &Restore{CheckpointID: latest.id, Dir: latest.dir, Attempt: latest.attempt})
	}
	subs := cc.waitAttempt("eo", attempt, 8, 60*time.Second)
	co.stopTriggers()
	requireState(t, subs, StateFinished)
	// The job is FINISHED: every node commits the final output of the last
	// attempt; nodes that were down commit the checkpoints completed
	// before they left (what the node layer does from the replicated state).
	for node, out := range cc.outs {
		if err := CommitSinks(g, out, attempt, FinalCheckpointID); err != nil {
			t.Fatal(err)
		}
		if cc.dead[node] {
			for _, r := range restoredFrom {
				if err := CommitSinks(g, out, r.attempt, r.id); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	var ids []int64
	for _, r := range restoredFrom {
		ids = append(ids, r.id)
	}
	t.Logf("%d checkpoints completed; restored from %v", co.completedCount(), ids)
	cc.checkResults(n, mode == jobgraph.ExactlyOnce)
	var ack CheckpointAck
	for _, a := range co.done[len(co.done)-1].acks {
		if a.VertexID == "sum" {
			ack = a
		}
	}
	if ack.StateSize == 0 || ack.StateFile == "" {
		t.Errorf("sum ack %+v has no state", ack)
	}
}

func TestExactlyOnceOneFailure(t *testing.T) {
	runWithFailures(t, jobgraph.ExactlyOnce, []string{"n1"})
}

func TestExactlyOnceTwoFailures(t *testing.T) {
	runWithFailures(t, jobgraph.ExactlyOnce, []string{"n1", "n2"})
}

func TestAtLeastOnceNoLoss(t *testing.T) {
	runWithFailures(t, jobgraph.AtLeastOnce, []string{"n2"})
}

// Checkpoint at p=2, cancel, restore at p=3 and at p=1: key groups and
// source splits move to their new owners.
func TestRescaleRestore(t *testing.T) {
	for _, p := range []int{3, 1} {
		t.Run(fmt.Sprintf("p=%d", p), func(t *testing.T) {
			const n, rate = 20000, 5000
			cc := newCPCluster(t, 3)
			g := cc.parse(eoSpec(n, rate, 2, jobgraph.ExactlyOnce))
			co := newCoordinator(cc, "rs", jobgraph.ExactlyOnce)
			co.setAttempt(1, g)
			cc.deployAttempt("rs", 1, g, cc.live(), nil)
			co.start(100 * time.Millisecond)
			cc.waitFor("3 checkpoints", 20*time.Second, func() bool { return co.completedCount() >= 3 })
			co.stopTriggers()
			co.setAttempt(0, g)
			for _, node := range cc.live() {
				cc.execs[node].Cancel("rs")
			}
			cc.waitAttempt("rs", 1, 8, 10*time.Second)
			latest, _ := co.latest()
			g2 := cc.parse(eoSpec(n, 0, p, jobgraph.ExactlyOnce))
			co.setAttempt(2, g2)
			cc.deployAttempt("rs", 2, g2, cc.live(), &Restore{CheckpointID: latest.id, Dir: latest.dir, Attempt: 1})
			requireState(t, cc.waitAttempt("rs", 2, 4*p, 30*time.Second), StateFinished)
			for _, out := range cc.outs {
				if err := CommitSinks(g2, out, 2, FinalCheckpointID); err != nil {
					t.Fatal(err)
				}
			}
			cc.checkResults(n, true)
		})
	}
}

// Stop-with-savepoint ends the job after the savepoint; a new job restored
// from it at parallelism 3 produces the rest: together, exact results.
func TestStopWithSavepointAndRestore(t *testing.T) {
	for _, drain := range []bool{false, true} {
		t.Run(fmt.Sprintf("drain=%v", drain), func(t *testing.T) { stopWithSavepoint(t, drain) })
	}
}

func stopWithSavepoint(t *testing.T, drain bool) {
	const n, rate = 20000, 4000
	cc := newCPCluster(t, 3)
	g := cc.parse(eoSpec(n, rate, 2, jobgraph.ExactlyOnce))
	co := newCoordinator(cc, "sp", jobgraph.ExactlyOnce)
	co.setAttempt(1, g)
	cc.deployAttempt("sp", 1, g, cc.live(), nil)
	co.start(100 * time.Millisecond)
	cc.waitFor("2 checkpoints", 20*time.Second, func() bool { return co.completedCount() >= 2 })
	co.stopTriggers()
	id := co.trigger(Checkpoint{Savepoint: true, Stop: true, Drain: drain, Dir: "savepoints/sp-1"})
	if id == 0 {
		t.Fatalf("savepoint refused: %v", co.failed)
	}
	subs := cc.waitAttempt("sp", 1, 8, 20*time.Second)
	requireState(t, subs, StateFinished)
	cc.waitFor("savepoint completion", 5*time.Second, func() bool { l, _ := co.latest(); return l.id == id })
	for _, out := range cc.outs { // the job is FINISHED
		if err := CommitSinks(g, out, 1, FinalCheckpointID); err != nil {
			t.Fatal(err)
		}
	}
	stopped := len(cc.readAll("pass"))
	if stopped == 0 || stopped >= n {
		t.Fatalf("%d records before the stop, want some but not all", stopped)
	}
	// A new job from the savepoint, at parallelism 3.
	g2 := cc.parse(eoSpec(n, 0, 3, jobgraph.ExactlyOnce))
	co2 := newCoordinator(cc, "sp2", jobgraph.ExactlyOnce)
	co2.setAttempt(1, g2)
	cc.deployAttempt("sp2", 1, g2, cc.live(), &Restore{CheckpointID: id, Dir: "savepoints/sp-1", Attempt: 1})
	requireState(t, cc.waitAttempt("sp2", 1, 12, 30*time.Second), StateFinished)
	for _, out := range cc.outs {
		if err := CommitSinks(g2, out, 1, FinalCheckpointID); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d of %d numbers before the savepoint", stopped, n)
	cc.checkResults(n, true)
}

// A snapshot holding state of a vertex the new graph lacks is refused
// unless AllowNonRestoredState.
func TestNonRestoredState(t *testing.T) {
	cc := newCPCluster(t, 1)
	g := cc.parse(eoSpec(1000000, 2000, 1, jobgraph.ExactlyOnce))
	co := newCoordinator(cc, "nr", jobgraph.ExactlyOnce)
	co.setAttempt(1, g)
	cc.deployAttempt("nr", 1, g, cc.live(), nil)
	cc.waitFor("running", 5*time.Second, func() bool {
		return len(cc.attemptSubtasks("nr", 1)) == 4 && cc.subtask("nr", "src", 0).State == StateRunning
	})
	id := co.trigger(Checkpoint{})
	cc.waitFor("checkpoint", 10*time.Second, func() bool { return co.completedCount() == 1 })
	cc.execs["n0"].Cancel("nr")
	cc.waitAttempt("nr", 1, 4, 5*time.Second)
	spec := `{"name":"eo","maxParallelism":32,"checkpointing":{"interval":"100ms"},"vertices":[
	  {"id":"src","operator":"sequence","params":{"from":1,"to":10}},
	  {"id":"pass","operator":"file-sink","inputs":[{"from":"src"}],"params":{"path":"pass"}}]}`
	g2 := cc.parse(spec)
	r := &Restore{CheckpointID: id, Dir: fmt.Sprintf("nr/chk-%d", id), Attempt: 1}
	cc.deployAttempt("nr", 2, g2, cc.live(), r)
	subs := cc.waitAttempt("nr", 2, 2, 10*time.Second)
	if !strings.Contains(subs[0].Failure, `vertex "sum"`) {
		t.Errorf("restore without the sum vertex: %+v", subs)
	}
	r.AllowNonRestoredState = true
	cc.deployAttempt("nr", 3, g2, cc.live(), r)
	requireState(t, cc.waitAttempt("nr", 3, 2, 10*time.Second), StateFinished)
}

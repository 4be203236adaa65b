package agent_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/config"
	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

// checkExact verifies the committed output of the exactly-once job: every
// n of the pass-through exactly once, and per key the sums' last update
// equal to the true total with one update per input record.
func checkExact(t *testing.T, c *tc.Cluster, n, keys int64) {
	t.Helper()
	seen := map[int64]int{}
	for _, rec := range readOutputOnce(t, c, "passthrough") {
		seen[int64(rec["n"].(float64))]++
	}
	for i := int64(1); i <= n; i++ {
		if seen[i] != 1 {
			t.Fatalf("n=%d committed %d times (want exactly once); %d distinct of %d", i, seen[i], len(seen), n)
		}
	}
	want := map[int64]float64{}
	for i := int64(1); i <= n; i++ {
		want[i%keys] += float64(i)
	}
	got := map[int64]float64{}
	updates := 0
	for _, rec := range readOutputOnce(t, c, "sums") {
		k := int64(rec["key"].(float64))
		if s := rec["sum"].(float64); s > got[k] {
			got[k] = s
		}
		updates++
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("key %d: sum %v, want %v", k, got[k], w)
		}
	}
	if int64(updates) != n {
		t.Errorf("%d sum updates committed, want exactly one per record (%d)", updates, n)
	}
}

// readOutputOnce reads every distinct output dir once (nodes may share one).
func readOutputOnce(t *testing.T, c *tc.Cluster, dir string) []map[string]any {
	t.Helper()
	return readDir(t, filepath.Join(c.Shared, "output", dir))
}

func exactlyOnceSpec(id string, n, keys int64, rate int) string {
	return fmt.Sprintf(`{"name":"exactly-once","jobId":"%s",
	"checkpointing":{"interval":"150ms","mode":"EXACTLY_ONCE","retained":2},
	"restartStrategy":{"type":"fixed-delay","attempts":20,"delay":"200ms"},
	"vertices":[
		{"id":"src","operator":"sequence","parallelism":2,"params":{"from":1,"to":%d,"ratePerSecond":%d}},
		{"id":"keyed","operator":"map","parallelism":2,"inputs":[{"from":"src","ship":"forward"}],"params":{"expr":"{\"k\": n %% %d, \"n\": n}"}},
		{"id":"sum","operator":"sum","parallelism":3,"inputs":[{"from":"keyed","ship":"hash","key":"k"}],"params":{"field":"n"}},
		{"id":"out","operator":"file-sink","parallelism":2,"inputs":[{"from":"sum","ship":"rebalance"}],"params":{"path":"sums"}},
		{"id":"pass","operator":"file-sink","parallelism":2,"inputs":[{"from":"src","ship":"rebalance"}],"params":{"path":"passthrough"}}]}`, id, n, rate, keys)
}

func TestExactlyOnceThroughNodeAndLeaderLoss(t *testing.T) {
	var c *tc.Cluster
	c = tc.New(t, 3, func(cfg *config.Config) {
		// Every node writes into the compose cluster's shared output volume.
		cfg.OutputDir = filepath.Join(filepath.Dir(cfg.CheckpointDir), "output")
	})
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	const n, keys = 12000, 7
	id := fmt.Sprintf("%032x", 4242)
	submitSpec(t, c, leader, exactlyOnceSpec(id, n, keys, 1500))

	// Kill a follower that runs part of the job once a checkpoint is in,
	// then the leader, restarting each so the cluster keeps its quorum.
	for round, killLeader := range []bool{false, true} {
		tc.WaitFor(t, 20*time.Second, fmt.Sprintf("a completed checkpoint before fault %d", round+1), func() bool {
			l := c.WaitForLeader(10 * time.Second)
			j, _ := l.Node.FSM.Job(id)
			return j != nil && j.State == fsm.JobRunning && len(j.Checkpoints.Retained) > 0 && j.Checkpoints.Retained[len(j.Checkpoints.Retained)-1].Attempt == j.Attempt
		})
		l := c.WaitForLeader(10 * time.Second)
		victim := l.Node.ID()
		if !killLeader {
			j, _ := l.Node.FSM.Job(id)
			for _, node := range fsm.NodesOf(j.Placement) {
				if node != l.Node.ID() {
					victim = node
				}
			}
		}
		t.Logf("fault %d: killing %s (leader: %v)", round+1, victim, killLeader)
		c.Kill(victim)
		c.WaitForLeader(10 * time.Second)
		c.Restart(victim)
	}
	l := c.WaitForLeader(10 * time.Second)
	j := waitJobState(t, l, id, 90*time.Second, fsm.JobFinished, fsm.JobFailed)
	if j.State != fsm.JobFinished {
		t.Fatalf("job %s: %+v", j.State, j.Failures)
	}
	if j.Attempt < 2 || j.Checkpoints.Restored < 1 {
		t.Errorf("attempt %d, restored %d: the faults did not force a restore", j.Attempt, j.Checkpoints.Restored)
	}
	// The committed output appears once the nodes have committed it.
	tc.WaitFor(t, 10*time.Second, "the final output to be committed", func() bool {
		return len(readOutputOnce(t, c, "passthrough")) >= n
	})
	checkExact(t, c, n, keys)

	var stats struct {
		Counts  map[string]int
		Latest  map[string]any
		History []map[string]any
	}
	c.Do(l, "GET", "/v1/jobs/"+id+"/checkpoints", nil).JSON(t, &stats)
	if stats.Counts["completed"] < 2 || stats.Counts["restored"] < 1 || len(stats.History) == 0 || stats.Latest["completed"] == nil {
		t.Errorf("checkpoint statistics: %+v", stats)
	}
}

func TestSavepointStopAndRestoreAtAnotherParallelismIsExact(t *testing.T) {
	c := tc.New(t, 3, func(cfg *config.Config) {
		cfg.OutputDir = filepath.Join(filepath.Dir(cfg.CheckpointDir), "output")
	})
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	const n, keys = 8000, 5
	id := fmt.Sprintf("%032x", 777)
	submitSpec(t, c, leader, exactlyOnceSpec(id, n, keys, 1000))
	waitJobState(t, leader, id, 20*time.Second, fsm.JobRunning)
	time.Sleep(1500 * time.Millisecond)

	// A savepoint by trigger id, idempotent, resolvable on any node.
	trigger := fmt.Sprintf("%032x", 99)
	for i := 0; i < 2; i++ {
		r := c.Do(c.Followers()[0], "POST", "/v1/jobs/"+id+"/savepoints", map[string]any{"triggerId": trigger})
		if r.Code != http.StatusAccepted || !strings.Contains(string(r.Body), trigger) {
			t.Fatalf("savepoint: %d %s", r.Code, r.Body)
		}
	}
	waitTrigger(t, c, id, trigger)

	// Stop with a savepoint: the job finishes.
	var stop struct {
		RequestID string `json:"request-id"`
	}
	r := c.Do(leader, "POST", "/v1/jobs/"+id+"/stop", map[string]any{"drain": false})
	if r.Code != http.StatusAccepted {
		t.Fatalf("stop: %d %s", r.Code, r.Body)
	}
	r.JSON(t, &stop)
	location := waitTrigger(t, c, id, stop.RequestID)
	waitJobState(t, leader, id, 20*time.Second, fsm.JobFinished)

	// Run it again from the savepoint with more sum subtasks.
	spec := strings.Replace(exactlyOnceSpec(fmt.Sprintf("%032x", 778), n, keys, 4000), `"operator":"sum","parallelism":3`, `"operator":"sum","parallelism":4`, 1)
	r = c.Do(leader, "POST", "/v1/jobs?savepointPath="+location, spec)
	if r.Code != http.StatusAccepted {
		t.Fatalf("run from savepoint: %d %s", r.Code, r.Body)
	}
	j := waitJobState(t, leader, fmt.Sprintf("%032x", 778), 60*time.Second, fsm.JobFinished, fsm.JobFailed)
	if j.State != fsm.JobFinished || j.Restore == nil || !j.Restore.Savepoint {
		t.Fatalf("restored job %s restore=%+v failures=%+v", j.State, j.Restore, j.Failures)
	}
	tc.WaitFor(t, 10*time.Second, "the restored job's output to be committed", func() bool {
		return len(readOutputOnce(t, c, "passthrough")) >= n
	})
	checkExact(t, c, n, keys)

	// Bad input.
	for path, want := range map[string]int{
		"/v1/jobs/" + id + "/savepoints/" + fmt.Sprintf("%032x", 12345): 404,
		"/v1/jobs/" + id + "/checkpoints/details/999":                   404,
	} {
		if r := c.Do(leader, "GET", path, nil); r.Code != want {
			t.Errorf("GET %s: %d %s", path, r.Code, r.Body)
		}
	}
	if r := c.Do(leader, "POST", "/v1/jobs/"+id+"/savepoints", map[string]any{"target-directory": "/etc"}); r.Code != http.StatusBadRequest {
		t.Errorf("savepoint outside the roots: %d %s", r.Code, r.Body)
	}
	if r := c.Do(leader, "POST", "/v1/jobs/"+id+"/savepoints", map[string]any{}); r.Code != http.StatusConflict {
		t.Errorf("savepoint of a finished job: %d %s", r.Code, r.Body)
	}
	if r := c.Do(leader, "PUT", "/v1/jobs/"+id+"/vertices/sum/parallelism", map[string]any{"new_scale": 1000}); r.Code != http.StatusBadRequest {
		t.Errorf("rescale above maxParallelism: %d %s", r.Code, r.Body)
	}
}

func waitTrigger(t *testing.T, c *tc.Cluster, jobID, trigger string) string {
	t.Helper()
	var st struct {
		Status    struct{ ID string }
		Operation map[string]any
	}
	tc.WaitFor(t, 30*time.Second, "savepoint "+trigger, func() bool {
		c.Do(c.Running()[0], "GET", "/v1/jobs/"+jobID+"/savepoints/"+trigger, nil).JSON(t, &st)
		return st.Status.ID == "COMPLETED"
	})
	loc, _ := st.Operation["location"].(string)
	if loc == "" {
		t.Fatalf("savepoint %s failed: %v", trigger, st.Operation)
	}
	return loc
}

func TestASavepointTriggeredBeforeTheLeaderDiesStillResolves(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	id := fmt.Sprintf("%032x", 31337)
	submitSpec(t, c, leader, exactlyOnceSpec(id, 1_000_000, 3, 500))
	waitJobState(t, leader, id, 20*time.Second, fsm.JobRunning)
	trigger := fmt.Sprintf("%032x", 4711)
	if r := c.Do(leader, "POST", "/v1/jobs/"+id+"/savepoints", map[string]any{"triggerId": trigger}); r.Code != http.StatusAccepted {
		t.Fatalf("savepoint: %d %s", r.Code, r.Body)
	}
	c.Kill(leader.Node.ID())
	next := c.WaitForLeader(10 * time.Second)
	// The trigger is in the replicated state: the new leader reports it and,
	// if the old one had not finished it, drives it again.
	location := waitTrigger(t, c, id, trigger)
	if !strings.Contains(location, "savepoint-") {
		t.Errorf("location %q", location)
	}
	if r := c.Do(next, "GET", "/v1/jobs/"+id+"/savepoints/"+trigger, nil); r.Code != http.StatusOK || !strings.Contains(string(r.Body), "COMPLETED") {
		t.Errorf("trigger on the new leader: %d %s", r.Code, r.Body)
	}
}

func TestRescalingAVertexRedistributesItsStateExactly(t *testing.T) {
	c := tc.New(t, 3, func(cfg *config.Config) {
		cfg.OutputDir = filepath.Join(filepath.Dir(cfg.CheckpointDir), "output")
	})
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	const n, keys = 9000, 11
	id := fmt.Sprintf("%032x", 5150)
	submitSpec(t, c, leader, exactlyOnceSpec(id, n, keys, 1500))
	waitJobState(t, leader, id, 20*time.Second, fsm.JobRunning)
	time.Sleep(time.Second)
	for path, body := range map[string]any{
		"/v1/jobs/" + id + "/vertices/sum/parallelism":   map[string]any{"new_scale": 5000},
		"/v1/jobs/" + id + "/vertices/keyed/parallelism": map[string]any{"new_scale": 3},
		"/v1/jobs/" + id + "/vertices/nope/parallelism":  map[string]any{"new_scale": 3},
	} {
		if r := c.Do(leader, "PUT", path, body); r.Code != http.StatusBadRequest && r.Code != http.StatusNotFound {
			t.Errorf("PUT %s %v: %d %s", path, body, r.Code, r.Body)
		}
	}
	r := c.Do(c.Followers()[0], "PUT", "/v1/jobs/"+id+"/vertices/sum/parallelism", map[string]any{"new_scale": 5})
	if r.Code != http.StatusAccepted {
		t.Fatalf("rescale: %d %s", r.Code, r.Body)
	}
	tc.WaitFor(t, 30*time.Second, "the job to run with five sum subtasks", func() bool {
		j, _ := leader.Node.FSM.Job(id)
		return j.State == fsm.JobRunning && len(j.Placement["sum"]) == 5
	})
	j := waitJobState(t, leader, id, 60*time.Second, fsm.JobFinished, fsm.JobFailed)
	if j.State != fsm.JobFinished || j.Restarts != 0 {
		t.Fatalf("rescaled job %s (restarts %d): %+v", j.State, j.Restarts, j.Failures)
	}
	tc.WaitFor(t, 10*time.Second, "the output to be committed", func() bool {
		return len(readOutputOnce(t, c, "passthrough")) >= n
	})
	checkExact(t, c, n, keys)
}

package agent_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/agent"
	"github.com/dispatcher-dev/dispatcher/config"
	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

func submitSpec(t *testing.T, c *tc.Cluster, a *agent.Agent, spec string) string {
	t.Helper()
	r := c.Do(a, "POST", "/v1/jobs", spec)
	if r.Code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.Code, r.Body)
	}
	var out struct{ JobID string }
	r.JSON(t, &out)
	return out.JobID
}

func waitJobState(t *testing.T, a *agent.Agent, id string, timeout time.Duration, states ...string) *fsm.Job {
	t.Helper()
	var j *fsm.Job
	tc.WaitFor(t, timeout, "job "+id+" to be "+strings.Join(states, " or "), func() bool {
		j, _ = a.Node.FSM.Job(id)
		if j == nil {
			return false
		}
		for _, s := range states {
			if j.State == s {
				return true
			}
		}
		return false
	})
	return j
}

// readDir reads the committed JSON lines of one sink directory.
func readDir(t *testing.T, dir string) []map[string]any {
	t.Helper()
	var out []map[string]any
	files, _ := filepath.Glob(filepath.Join(dir, "part-*.jsonl"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var rec map[string]any
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out = append(out, rec)
		}
		fh.Close()
	}
	return out
}

// readOutput collects the committed JSON lines every node's file sinks wrote
// under dir.
func readOutput(t *testing.T, c *tc.Cluster, dir string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, a := range c.Running() {
		files, _ := filepath.Glob(filepath.Join(a.Node.Config().OutputDir, dir, "part-*.jsonl"))
		for _, f := range files {
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(fh)
			for sc.Scan() {
				var rec map[string]any
				if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				out = append(out, rec)
			}
			fh.Close()
		}
	}
	return out
}

func TestBoundedKeyedSumAcrossThreeNodesIsExact(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	const n, keys = 30000, 7
	spec := fmt.Sprintf(`{"name":"sums","vertices":[
		{"id":"src","operator":"sequence","parallelism":2,"params":{"from":1,"to":%d}},
		{"id":"keyed","operator":"map","parallelism":2,"inputs":[{"from":"src","ship":"forward"}],"params":{"expr":"{\"k\": n %% %d, \"n\": n}"}},
		{"id":"sum","operator":"sum","parallelism":4,"inputs":[{"from":"keyed","ship":"hash","key":"k"}],"params":{"field":"n"}},
		{"id":"out","operator":"file-sink","parallelism":3,"inputs":[{"from":"sum","ship":"rebalance"}],"params":{"path":"sums"}}]}`, n, keys)
	id := submitSpec(t, c, c.Followers()[0], spec)
	j := waitJobState(t, leader, id, 60*time.Second, fsm.JobFinished, fsm.JobFailed)
	if j.State != fsm.JobFinished {
		t.Fatalf("job ended %s: %+v", j.State, j.Failures)
	}
	if nodes := fsm.NodesOf(j.Placement); len(nodes) != 3 {
		t.Fatalf("placement %v does not span the three nodes", j.Placement)
	}

	want := map[int64]float64{}
	for i := int64(1); i <= n; i++ {
		want[i%keys] += float64(i)
	}
	// Every update is emitted; the last (largest) per key is the total.
	got := map[int64]float64{}
	updates := 0
	for _, rec := range readOutput(t, c, "sums") {
		k := int64(rec["key"].(float64))
		if s := rec["sum"].(float64); s > got[k] {
			got[k] = s
		}
		updates++
	}
	if updates != n {
		t.Errorf("%d updates, want one per record (%d)", updates, n)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("key %d: sum %v, want %v", k, got[k], w)
		}
	}

	// The API shows every vertex finished, with counts measured where the
	// subtasks ran.
	var detail struct {
		State    string
		Vertices []struct {
			ID, Status string
			Metrics    map[string]any // Flink's IOMetricsInfo mixes counts and flags
			Subtasks   []struct {
				Subtask       int
				TaskManagerID string `json:"taskmanager-id"`
				Metrics       struct{ NumRecordsIn, NumBytesIn int64 }
			}
		}
	}
	c.Do(c.Followers()[1], "GET", "/v1/jobs/"+id, nil).JSON(t, &detail)
	if detail.State != fsm.JobFinished {
		t.Errorf("detail state %s", detail.State)
	}
	for _, v := range detail.Vertices {
		if v.Status != "FINISHED" {
			t.Errorf("vertex %s is %s", v.ID, v.Status)
		}
		if v.ID == "sum" && v.Metrics["read-records"] != float64(n) {
			t.Errorf("sum read %v records, want %d", v.Metrics["read-records"], n)
		}
	}
}

func TestSubtasksOnAnotherNodeReceiveOverTheNetwork(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	// One source subtask, three consumers: at least two sit on other nodes.
	spec := `{"name":"fan-out","vertices":[
		{"id":"src","operator":"sequence","parallelism":1,"params":{"from":1,"ratePerSecond":2000}},
		{"id":"cnt","operator":"count","parallelism":3,"inputs":[{"from":"src","ship":"hash","key":"n"}]},
		{"id":"out","operator":"discard","parallelism":3,"inputs":[{"from":"cnt","ship":"forward"}]}]}`
	id := submitSpec(t, c, leader, spec)
	j := waitJobState(t, leader, id, 20*time.Second, fsm.JobRunning)
	srcNode := j.Placement["src"][0]
	remote := 0
	tc.WaitFor(t, 15*time.Second, "records to reach consumers on other nodes", func() bool {
		remote = 0
		for i, node := range j.Placement["cnt"] {
			if node == srcNode {
				continue
			}
			a := c.Node(node)
			for _, st := range a.Exec.Subtasks(id) {
				if st.VertexID == "cnt" && st.Subtask == i && st.Metrics.NumRecordsIn > 0 && st.Metrics.NumBytesIn > 0 {
					remote++
				}
			}
		}
		return remote >= 2
	})
	if r := c.Do(leader, "PATCH", "/v1/jobs/"+id+"?mode=cancel", nil); r.Code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", r.Code, r.Body)
	}
	j = waitJobState(t, leader, id, 10*time.Second, fsm.JobCanceled)
	for k, st := range j.Subtasks {
		if st.State != fsm.TaskCanceled && st.State != fsm.TaskFinished {
			t.Errorf("subtask %s ended %s", k, st.State)
		}
	}
}

func TestAFailingExpressionIsRestartedThenFailsWithItsExceptionsKept(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	spec := `{"name":"bad-expr","restartStrategy":{"type":"fixed-delay","attempts":2,"delay":"100ms"},"vertices":[
		{"id":"src","operator":"sequence","params":{"from":1,"to":100}},
		{"id":"m","operator":"map","inputs":[{"from":"src"}],"params":{"expr":"{\"x\": n > 50 ? int(\"not a number\") : n}"}},
		{"id":"out","operator":"discard","inputs":[{"from":"m"}]}]}`
	id := submitSpec(t, c, leader, spec)
	j := waitJobState(t, leader, id, 30*time.Second, fsm.JobFailed, fsm.JobFinished)
	if j.State != fsm.JobFailed {
		t.Fatalf("job %s, want FAILED", j.State)
	}
	if j.Restarts != 2 || j.Attempt != 3 {
		t.Errorf("restarts %d attempt %d, want 2 restarts and 3 attempts", j.Restarts, j.Attempt)
	}
	if len(j.Failures) < 3 {
		t.Fatalf("failures %+v", j.Failures)
	}
	for _, f := range j.Failures {
		if f.VertexID != "m" || !strings.Contains(f.Message, "not a number") || f.Node == "" {
			t.Errorf("failure %+v", f)
		}
	}
}

func TestLosingANodeReplacesItsSubtasksElsewhere(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	spec := `{"name":"endless","restartStrategy":{"type":"fixed-delay","attempts":10,"delay":"100ms"},"vertices":[
		{"id":"src","operator":"sequence","parallelism":3,"params":{"from":1,"ratePerSecond":500}},
		{"id":"out","operator":"discard","parallelism":3,"inputs":[{"from":"src","ship":"rebalance"}]}]}`
	id := submitSpec(t, c, leader, spec)
	j := waitJobState(t, leader, id, 20*time.Second, fsm.JobRunning)
	var victim string
	for _, n := range fsm.NodesOf(j.Placement) {
		if n != leader.Node.ID() {
			victim = n
			break
		}
	}
	c.Kill(victim)
	tc.WaitFor(t, 30*time.Second, "the job to run again without "+victim, func() bool {
		j, _ = leader.Node.FSM.Job(id)
		if j.State != fsm.JobRunning || j.Attempt < 2 {
			return false
		}
		for _, n := range fsm.NodesOf(j.Placement) {
			if n == victim {
				return false
			}
		}
		return true
	})
	found := false
	for _, f := range j.Failures {
		found = found || strings.Contains(f.Message, victim)
	}
	if !found {
		t.Errorf("no failure names the lost node: %+v", j.Failures)
	}
}

func TestExecRunsAllowedProgramsOnlyWhenTheOperatorEnablesIt(t *testing.T) {
	spec := `{"name":"cat","vertices":[
		{"id":"src","operator":"sequence","params":{"from":1,"to":50}},
		{"id":"cat","operator":"exec","inputs":[{"from":"src"}],"params":{"command":"/bin/cat"}},
		{"id":"out","operator":"file-sink","inputs":[{"from":"cat"}],"params":{"path":"cat"}}]}`
	closed := tc.New(t, 1, nil)
	a := closed.WaitForLeader(10 * time.Second)
	if r := closed.Do(a, "POST", "/v1/jobs", spec); r.Code != http.StatusBadRequest {
		t.Fatalf("exec without --allow-exec: %d %s", r.Code, r.Body)
	}
	open := tc.New(t, 1, func(cfg *config.Config) {
		cfg.AllowExec = true
		cfg.ExecPaths = []string{"/bin", "/usr/bin"}
	})
	b := open.WaitForLeader(10 * time.Second)
	id := submitSpec(t, open, b, spec)
	if j := waitJobState(t, b, id, 30*time.Second, fsm.JobFinished, fsm.JobFailed); j.State != fsm.JobFinished {
		t.Fatalf("exec job %s: %+v", j.State, j.Failures)
	}
	if n := len(readOutput(t, open, "cat")); n != 50 {
		t.Errorf("%d records came back through /bin/cat, want 50", n)
	}
	outside := strings.Replace(spec, "/bin/cat", "/sbin/halt", 1)
	if r := open.Do(b, "POST", "/v1/jobs", outside); r.Code != http.StatusBadRequest {
		t.Errorf("a program outside --exec-path: %d %s", r.Code, r.Body)
	}
}

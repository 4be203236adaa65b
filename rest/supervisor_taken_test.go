package rest_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// serviceGroupTaken is the check the submission path runs for a 409: a job
// that has not ended holds its service group; a failed or cancelled one
// does not; an idempotent resubmission is not a conflict.
func TestSupervisorServiceGroupTaken(t *testing.T) {
	c := tc.New(t, 1, nil)
	a := c.WaitForLeader(10 * time.Second)
	submit := func(spec string) string {
		r := c.Do(a, "POST", "/v1/jobs", spec)
		if r.Code != http.StatusAccepted {
			t.Fatalf("submit: %d %s", r.Code, r.Body)
		}
		var out struct{ JobID string }
		r.JSON(t, &out)
		return out.JobID
	}
	waitState := func(id, state string) {
		tc.WaitFor(t, 20*time.Second, id+" "+state, func() bool { j, _ := a.Node.FSM.Job(id); return j != nil && j.State == state })
	}
	parse := func(spec string) *jobgraph.JobGraph {
		g, err := jobgraph.Parse([]byte(spec), jobgraph.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	const running = `{"name":"web","service":{"group":"prod"},"vertices":[{"id":"s","operator":"sequence","params":{"from":1,"ratePerSecond":10}},{"id":"d","operator":"discard","inputs":[{"from":"s"}]}]}`
	id := submit(running)
	waitState(id, fsm.JobRunning)

	same := parse(`{"name":"other","service":{"name":"web","group":"prod"},"vertices":[{"id":"s","operator":"sequence","params":{"to":1}}]}`)
	if msg, taken := a.API.ServiceGroupTaken(same); !taken || !strings.Contains(msg, "web.prod") || !strings.Contains(msg, id) {
		t.Errorf("same group: %q %v", msg, taken)
	}
	for _, spec := range []string{
		`{"name":"web","vertices":[{"id":"s","operator":"sequence","params":{"to":1}}]}`,                                                  // web.default
		`{"name":"web","service":{"group":"prod","organization":"acme"},"vertices":[{"id":"s","operator":"sequence","params":{"to":1}}]}`, // another org
	} {
		if msg, taken := a.API.ServiceGroupTaken(parse(spec)); taken {
			t.Errorf("%s: taken (%s)", spec, msg)
		}
	}
	again := parse(running)
	again.JobID = id
	if msg, taken := a.API.ServiceGroupTaken(again); taken {
		t.Errorf("resubmitting the same job id is a conflict: %s", msg)
	}
	if r := c.Do(a, "PATCH", "/v1/jobs/"+id+"?mode=cancel", nil); r.Code != http.StatusAccepted {
		t.Fatalf("cancel: %d", r.Code)
	}
	waitState(id, fsm.JobCanceled)
	if msg, taken := a.API.ServiceGroupTaken(same); taken {
		t.Errorf("a cancelled job still holds its group: %s", msg)
	}
}

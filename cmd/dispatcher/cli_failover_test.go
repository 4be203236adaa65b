package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/client"
	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

// cliSlowCheckpointed is a checkpointed job that survives losing a node
// (fixed-delay restarts) and whose barriers queue behind back-pressured
// records in the sleep operator, so a savepoint takes a few seconds.
const cliSlowCheckpointed = `{"name":"cli-savepoint-failover",
	"checkpointing":{"interval":"500ms","mode":"EXACTLY_ONCE"},
	"restartStrategy":{"type":"fixed-delay","attempts":1000,"delay":"100ms"},
	"vertices":[
		{"id":"src","operator":"sequence","parallelism":3,"params":{"from":1,"ratePerSecond":3000}},
		{"id":"slow","operator":"sleep","parallelism":3,"inputs":[{"from":"src","ship":"forward"}],"params":{"perRecord":"1ms"}},
		{"id":"sink","operator":"discard","parallelism":3,"inputs":[{"from":"slow","ship":"forward"}]}]}`

// TestCLISavepointWaitSurvivesTheLeadersDeath runs `jobs savepoint --wait`
// as a real process and kills the Raft leader while the savepoint is in
// progress: the trigger is replicated, the new leader drives it again, and
// the client falls over to the survivors, so the command still prints the
// savepoint's location and exits 0.
func TestCLISavepointWaitSurvivesTheLeadersDeath(t *testing.T) {
	cc := newCLICluster(t)
	id := client.NewID()
	cc.ok("jobs", "submit", writeSpec(t, cliSlowCheckpointed), "--job-id", id)
	cc.waitJob(id, fsm.JobRunning)
	if !cc.routeExists("GET", "/v1/jobs/"+id+"/savepoints/"+client.NewID(), nil) {
		t.Skip("the savepoint routes are not registered yet")
	}
	// A completed checkpoint first, so the restart restores one, and a few
	// seconds of back pressure so the savepoint's barriers wait.
	tc.WaitFor(t, 30*time.Second, "a completed checkpoint", func() bool {
		j, ok := cc.c.WaitForLeader(15 * time.Second).Node.FSM.Job(id)
		return ok && j.Checkpoints.Completed > 0
	})
	time.Sleep(2 * time.Second)

	leader := cc.c.WaitForLeader(15 * time.Second)
	leaderID := leader.Node.ID()
	before, _ := leader.Node.FSM.Job(id)

	args := append([]string{"jobs", "savepoint", id, "--wait"}, cc.addrs...)
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), tokenEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})

	// Kill the leader as soon as it has the trigger in its replicated state
	// (the CLI is then polling it).
	var trigger string
	tc.WaitFor(t, 20*time.Second, "the savepoint trigger on the leader", func() bool {
		for _, tr := range leader.Node.FSM.Triggers() {
			if tr.JobID == id && tr.Status == fsm.TriggerInProgress {
				trigger = tr.ID
				return true
			}
		}
		return false
	})
	tr, _ := leader.Node.FSM.Trigger(trigger)
	t.Logf("killing leader %s with trigger %s %s", leaderID, trigger, tr.Status)
	cc.c.Kill(leaderID)
	next := cc.c.WaitForLeader(15 * time.Second)
	t.Logf("new leader %s", next.Node.ID())

	var err error
	select {
	case err = <-done:
	case <-time.After(150 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("savepoint --wait still waiting 150 s after the leader died; trigger on %s: %+v\nstdout: %s\nstderr: %s",
			next.Node.ID(), triggerState(next.Node.FSM, trigger), stdout.String(), stderr.String())
	}
	if err != nil || stderr.Len() != 0 {
		t.Fatalf("savepoint --wait: %v\nstdout: %s\nstderr: %s\ntrigger on %s: %+v", err, stdout.String(), stderr.String(), next.Node.ID(), triggerState(next.Node.FSM, trigger))
	}
	location := strings.TrimSpace(stdout.String())
	if !strings.Contains(location, "savepoint-") {
		t.Fatalf("savepoint --wait printed %q, want a savepoint location", location)
	}
	if _, err := os.Stat(location); err != nil {
		t.Errorf("the printed location: %v", err)
	}
	// The job survived its leader's (and its subtasks') death.
	j := cc.waitJob(id, fsm.JobRunning)
	t.Logf("savepoint at %s; job attempt %d -> %d, restarts %d", location, before.Attempt, j.Attempt, j.Restarts)
	if tr, ok := next.Node.FSM.Trigger(trigger); !ok || tr.Status != fsm.TriggerCompleted {
		t.Errorf("trigger %s on the new leader: %+v", trigger, tr)
	}
	cc.ok("jobs", "cancel", id)
}

func triggerState(f *fsm.FSM, id string) string {
	tr, ok := f.Trigger(id)
	if !ok {
		return "unknown"
	}
	return fmt.Sprintf("%+v", *tr)
}

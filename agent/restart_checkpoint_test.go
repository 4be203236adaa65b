package agent_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/config"
	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

// TestAFullClusterRestartResumesTheJobFromItsLatestCheckpoint stops every
// node of a three-node cluster while a checkpointed job runs, then starts
// them all again on their data dirs: the job must run again from its
// latest completed checkpoint and still commit every record exactly once.
func TestAFullClusterRestartResumesTheJobFromItsLatestCheckpoint(t *testing.T) {
	c := tc.New(t, 3, func(cfg *config.Config) {
		cfg.OutputDir = filepath.Join(filepath.Dir(cfg.CheckpointDir), "output")
	})
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	const n, keys = 16000, 7
	id := fmt.Sprintf("%032x", 60606)
	// 2 source subtasks at 800 records/s: about 10 s of input.
	submitSpec(t, c, leader, exactlyOnceSpec(id, n, keys, 800))

	var before *fsm.Job
	tc.WaitFor(t, 30*time.Second, "a completed checkpoint of the running attempt", func() bool {
		l := c.WaitForLeader(10 * time.Second)
		j, _ := l.Node.FSM.Job(id)
		if j == nil || j.State != fsm.JobRunning || len(j.Checkpoints.Retained) == 0 {
			return false
		}
		before = j
		return j.Checkpoints.Retained[len(j.Checkpoints.Retained)-1].Attempt == j.Attempt && j.Checkpoints.Completed >= 2
	})
	lastBefore := before.Checkpoints.Retained[len(before.Checkpoints.Retained)-1]
	t.Logf("before the restart: attempt %d, %d checkpoints completed, latest %d (%s)", before.Attempt, before.Checkpoints.Completed, lastBefore.ID, lastBefore.Dir)

	// Stop every node, as a power cut would, then bring them all back.
	var ids []string
	for _, a := range c.Running() {
		ids = append(ids, a.Node.ID())
	}
	var lastKilled *fsm.Job
	for i, nid := range ids {
		if i == len(ids)-1 {
			lastKilled, _ = c.Node(nid).Node.FSM.Job(id)
		}
		c.Kill(nid)
	}
	latest := lastKilled.Checkpoints.Retained[len(lastKilled.Checkpoints.Retained)-1]
	t.Logf("at the last kill: job %s attempt %d, latest checkpoint %d", lastKilled.State, lastKilled.Attempt, latest.ID)
	if lastKilled.State == fsm.JobFinished {
		t.Fatalf("the job finished before the cluster stopped: make it slower")
	}
	for _, nid := range ids {
		c.Restart(nid)
	}
	leader = c.WaitForLeader(20 * time.Second)
	t.Logf("new leader %s", leader.Node.ID())

	var after *fsm.Job
	tc.WaitFor(t, 60*time.Second, "the job to run again in a new attempt", func() bool {
		l := c.WaitForLeader(10 * time.Second)
		j, _ := l.Node.FSM.Job(id)
		after = j
		return j != nil && j.State == fsm.JobRunning && j.Attempt > lastKilled.Attempt
	})
	t.Logf("after the restart: attempt %d, restore %+v, restarts %d", after.Attempt, after.Restore, after.Restarts)
	if after.Restore == nil || after.Restore.Savepoint || after.Restore.CheckpointID < latest.ID {
		t.Errorf("restored from %+v, want the latest checkpoint %d (%s) or a newer one", after.Restore, latest.ID, latest.Dir)
	}

	j := waitJobState(t, leader, id, 90*time.Second, fsm.JobFinished, fsm.JobFailed)
	if j.State != fsm.JobFinished {
		t.Fatalf("job %s: %+v", j.State, j.Failures)
	}
	if j.Checkpoints.Restored < 1 {
		t.Errorf("restored count %d", j.Checkpoints.Restored)
	}
	tc.WaitFor(t, 15*time.Second, "the final output to be committed", func() bool {
		return len(readOutputOnce(t, c, "passthrough")) >= n
	})
	checkExact(t, c, n, keys)
}

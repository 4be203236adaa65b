package fsm

import "fmt"

// The job lifecycle. Nodes report what their subtasks do; the leader's
// scheduler decides placements, restarts and failures; these functions
// only record both, deterministically, on every replica.

func (f *FSM) applyJobSchedule(index uint64, c *JobSchedule) Result {
	j, ok := f.st.Jobs[c.JobID]
	if !ok {
		return Result{Err: &NotFound{Msg: fmt.Sprintf("Job %s not found", c.JobID)}}
	}
	if j.State != JobCreated && j.State != JobRestarting {
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s is %s, not schedulable", c.JobID, j.State)}}
	}
	if c.Attempt != j.Attempt+1 {
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s: attempt %d is stale (current %d)", c.JobID, c.Attempt, j.Attempt)}}
	}
	j.Attempt = c.Attempt
	j.Placement = c.Placement
	j.Restore = c.Restore
	if c.Restore != nil {
		j.Checkpoints.Restored++
		j.Restore.RestoredAt = c.At
	}
	j.Subtasks = map[string]*Subtask{}
	j.Reason = ""
	j.RestartAt = 0
	for v, nodes := range c.Placement {
		for i, n := range nodes {
			j.Subtasks[SubtaskKey(v, i)] = &Subtask{
				VertexID: v, Index: i, Attempt: c.Attempt, Node: n, State: TaskScheduled,
				Timestamps: map[string]int64{TaskCreated: c.At, TaskScheduled: c.At},
			}
		}
	}
	j.setState(JobRunning, c.At, index)
	return Result{Value: j.clone()}
}

func (f *FSM) applySubtaskEvents(index uint64, c *SubtaskEvents) Result {
	touched := map[string]*Job{}
	for _, ev := range c.Events {
		j, ok := f.st.Jobs[ev.JobID]
		if !ok || ev.Attempt != j.Attempt || TerminalJobState(j.State) {
			continue // a report about an attempt that is gone
		}
		st, ok := j.Subtasks[SubtaskKey(ev.VertexID, ev.Subtask)]
		if !ok || st.Node != c.Node || TerminalTaskState(st.State) {
			continue
		}
		st.State = ev.State
		st.Timestamps[ev.State] = ev.At
		j.ModifyIndex = index
		touched[j.ID] = j
		if ev.State == TaskFailed {
			st.Failure = ev.Failure
			j.addFailure(Failure{Timestamp: ev.At, VertexID: ev.VertexID, Subtask: ev.Subtask, Node: c.Node, Attempt: ev.Attempt, Message: ev.Failure})
			if j.State == JobRunning {
				j.setState(JobFailing, ev.At, index)
			}
		}
	}
	for _, j := range touched {
		j.settle(index)
	}
	return Result{}
}

func (j *Job) addFailure(fl Failure) {
	j.Failures = append(j.Failures, fl)
	if len(j.Failures) > MaxFailures {
		j.Failures = j.Failures[len(j.Failures)-MaxFailures:]
	}
}

// settle moves a job on once all its subtasks have ended.
func (j *Job) settle(index uint64) {
	last := int64(0)
	for _, st := range j.Subtasks {
		if !TerminalTaskState(st.State) {
			return
		}
		if t := st.Timestamps[st.State]; t > last {
			last = t
		}
	}
	switch j.State {
	case JobRunning:
		allFinished := true
		for _, st := range j.Subtasks {
			allFinished = allFinished && st.State == TaskFinished
		}
		if allFinished {
			j.setState(JobFinished, last, index)
		}
	case JobCancelling:
		j.setState(JobCanceled, last, index)
	}
}

func (f *FSM) applyJobTransition(index uint64, c *JobTransition) Result {
	j, ok := f.st.Jobs[c.JobID]
	if !ok {
		return Result{Err: &NotFound{Msg: fmt.Sprintf("Job %s not found", c.JobID)}}
	}
	if c.Attempt != j.Attempt || TerminalJobState(j.State) {
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s: decision about attempt %d is stale (now attempt %d, %s)", c.JobID, c.Attempt, j.Attempt, j.State)}}
	}
	if j.State == JobCancelling && c.State != JobCanceled {
		// A cancel the client was told about wins over any later failure
		// or restart decision (the compose suite saw a lost node's FAILING
		// overwrite an acknowledged cancel, and the job run again).
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s is being cancelled; %s is refused", c.JobID, c.State)}}
	}
	if c.Failure != nil {
		j.addFailure(*c.Failure)
	}
	j.Reason = c.Reason
	switch c.State {
	case JobCreated:
		// Still waiting for slots: only the reason changes.
		j.ModifyIndex = index
	case JobFailing, JobFailed, JobCanceled:
		j.setState(c.State, c.At, index)
	case JobRestarting:
		j.Restarts++
		j.RestartAt = c.RestartAt
		j.setState(JobRestarting, c.At, index)
	default:
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s: %s is not a scheduler decision", c.JobID, c.State)}}
	}
	return Result{Value: j.clone()}
}

func (f *FSM) applyJobRescale(index uint64, c *JobRescale) Result {
	j, ok := f.st.Jobs[c.JobID]
	if !ok {
		return Result{Err: &NotFound{Msg: fmt.Sprintf("Job %s not found", c.JobID)}}
	}
	if c.Attempt != j.Attempt || j.State != JobRunning {
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s: rescale of attempt %d is stale (now attempt %d, %s)", c.JobID, c.Attempt, j.Attempt, j.State)}}
	}
	j.Spec = c.Spec
	// A rescale is a planned restart, not a failure: it does not count
	// against the restart strategy.
	j.RestartAt = c.At
	j.setState(JobRestarting, c.At, index)
	return Result{Value: j.clone()}
}

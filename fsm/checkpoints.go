package fsm

import (
	"fmt"
	"sort"
)

// maxCheckpointHistory bounds the recent checkpoints kept per job.
const maxCheckpointHistory = 10

// triggerRetention is how long finished async operations stay queryable
// (Flink's rest.async.store-duration is 5 minutes; we keep them an hour).
const triggerRetention int64 = 60 * 60 * 1000

func (f *FSM) checkpointJob(jobID string, attempt int) (*Job, error) {
	j, ok := f.st.Jobs[jobID]
	if !ok {
		return nil, &NotFound{Msg: fmt.Sprintf("Job %s not found", jobID)}
	}
	if attempt != j.Attempt {
		return nil, &Conflict{Msg: fmt.Sprintf("Job %s: checkpoint of attempt %d is stale (now attempt %d)", jobID, attempt, j.Attempt)}
	}
	return j, nil
}

func (j *Job) historyPut(cp Checkpoint) {
	h := j.Checkpoints.History
	for i := range h {
		if h[i].ID == cp.ID {
			h[i] = cp
			return
		}
	}
	h = append(h, cp)
	if len(h) > maxCheckpointHistory {
		h = h[len(h)-maxCheckpointHistory:]
	}
	j.Checkpoints.History = h
}

func (f *FSM) applyCheckpointStarted(index uint64, c *CheckpointStarted) Result {
	j, err := f.checkpointJob(c.JobID, c.Attempt)
	if err != nil {
		return Result{Err: err}
	}
	if j.State != JobRunning {
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s is %s; checkpoints need a RUNNING job", c.JobID, j.State)}}
	}
	if c.ID <= j.Checkpoints.LastID {
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s: checkpoint id %d was already used", c.JobID, c.ID)}}
	}
	j.Checkpoints.LastID = c.ID
	j.Checkpoints.InProgress++
	j.historyPut(Checkpoint{ID: c.ID, Attempt: c.Attempt, Status: TriggerInProgress, Savepoint: c.Savepoint, TriggeredAt: c.At})
	if t, ok := f.st.Triggers[c.TriggerID]; ok && c.TriggerID != "" {
		t.CheckpointID = c.ID
	}
	j.ModifyIndex = index
	return Result{}
}

func (f *FSM) applyCheckpointCompleted(index uint64, c *CheckpointCompleted) Result {
	cp := c.Checkpoint
	j, err := f.checkpointJob(c.JobID, cp.Attempt)
	if err != nil {
		return Result{Err: err}
	}
	switch j.State {
	case JobRunning, JobFailing, JobFinished, JobCancelling:
	default:
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s is %s; checkpoint %d cannot complete", c.JobID, j.State, cp.ID)}}
	}
	cp.Status = TriggerCompleted
	st := &j.Checkpoints
	if st.InProgress > 0 {
		st.InProgress--
	}
	st.Completed++
	if cp.ID > st.LastID {
		st.LastID = cp.ID
	}
	j.historyPut(cp)
	if cp.Savepoint {
		saved := cp
		st.LatestSavepoint = &saved
	} else {
		st.Retained = append(st.Retained, cp)
		sort.Slice(st.Retained, func(a, b int) bool { return st.Retained[a].ID < st.Retained[b].ID })
	}
	if len(c.Prune) > 0 {
		drop := map[int64]bool{}
		for _, id := range c.Prune {
			drop[id] = true
		}
		kept := st.Retained[:0]
		for _, r := range st.Retained {
			if !drop[r.ID] {
				kept = append(kept, r)
			}
		}
		st.Retained = kept
	}
	j.ModifyIndex = index
	return Result{}
}

func (f *FSM) applyCheckpointFailed(index uint64, c *CheckpointFailed) Result {
	j, ok := f.st.Jobs[c.JobID]
	if !ok {
		return Result{Err: &NotFound{Msg: fmt.Sprintf("Job %s not found", c.JobID)}}
	}
	st := &j.Checkpoints
	if st.InProgress > 0 {
		st.InProgress--
	}
	st.Failed++
	failed := Checkpoint{ID: c.ID, Attempt: c.Attempt, Status: TriggerFailed, Savepoint: c.Savepoint, TriggeredAt: c.At, CompletedAt: c.At, Failure: c.Reason}
	for _, h := range st.History {
		if h.ID == c.ID {
			failed.TriggeredAt = h.TriggeredAt
		}
	}
	j.historyPut(failed)
	st.LatestFailed = &failed
	if c.ID > st.LastID {
		st.LastID = c.ID
	}
	j.ModifyIndex = index
	return Result{}
}

func (f *FSM) applyTriggerCreated(c *TriggerCreated) Result {
	t := c.Trigger
	if old, ok := f.st.Triggers[t.ID]; ok {
		if old.JobID != t.JobID || old.Kind != t.Kind {
			return Result{Err: &Conflict{Msg: fmt.Sprintf("Trigger id %s is already used by another operation", t.ID)}}
		}
		return Result{Value: old.clone()}
	}
	if t.Kind == "dispose" {
		// A savepoint disposal belongs to no job.
		t.Status = TriggerInProgress
		f.st.Triggers[t.ID] = &t
		return Result{Value: t.clone()}
	}
	j, ok := f.st.Jobs[t.JobID]
	if !ok {
		return Result{Err: &NotFound{Msg: fmt.Sprintf("Job %s not found", t.JobID)}}
	}
	if j.State != JobRunning {
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s is %s; a %s needs a RUNNING job", t.JobID, j.State, t.Kind)}}
	}
	for id, old := range f.st.Triggers {
		if old.Status != TriggerInProgress && t.CreatedAt-old.DoneAt > triggerRetention {
			delete(f.st.Triggers, id)
		}
	}
	t.Status = TriggerInProgress
	f.st.Triggers[t.ID] = &t
	return Result{Value: t.clone()}
}

func (f *FSM) applyTriggerDone(c *TriggerDone) Result {
	t, ok := f.st.Triggers[c.TriggerID]
	if !ok {
		return Result{Err: &NotFound{Msg: fmt.Sprintf("Trigger %s not found", c.TriggerID)}}
	}
	if t.Status != TriggerInProgress {
		return Result{Value: t.clone()}
	}
	t.Status, t.Location, t.FailureCause, t.DoneAt = c.Status, c.Location, c.FailureCause, c.At
	return Result{Value: t.clone()}
}

func (t *Trigger) clone() *Trigger {
	c := *t
	if t.Rescale != nil {
		c.Rescale = make(map[string]int, len(t.Rescale))
		for k, v := range t.Rescale {
			c.Rescale[k] = v
		}
	}
	return &c
}

// Trigger returns one async operation.
func (f *FSM) Trigger(id string) (*Trigger, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t, ok := f.st.Triggers[id]
	if !ok {
		return nil, false
	}
	return t.clone(), true
}

// Triggers returns the async operations still in progress, oldest first.
func (f *FSM) Triggers() []*Trigger {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*Trigger
	for _, t := range f.st.Triggers {
		out = append(out, t.clone())
	}
	sort.Slice(out, func(a, b int) bool { return out[a].CreatedAt < out[b].CreatedAt })
	return out
}

// LatestRestorable is the newest completed checkpoint or savepoint a job
// can restart from.
func (j *Job) LatestRestorable() *Checkpoint {
	var best *Checkpoint
	if n := len(j.Checkpoints.Retained); n > 0 {
		c := j.Checkpoints.Retained[n-1]
		best = &c
	}
	if sp := j.Checkpoints.LatestSavepoint; sp != nil && (best == nil || sp.ID > best.ID) {
		c := *sp
		best = &c
	}
	return best
}

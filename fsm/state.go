package fsm

import (
	"encoding/json"
	"sort"
)

// Job states, Flink's names.
const (
	JobInitializing = "INITIALIZING"
	JobCreated      = "CREATED"
	JobRunning      = "RUNNING"
	JobFailing      = "FAILING"
	JobFailed       = "FAILED"
	JobCancelling   = "CANCELLING"
	JobCanceled     = "CANCELED"
	JobFinished     = "FINISHED"
	JobRestarting   = "RESTARTING"
	JobSuspended    = "SUSPENDED"
)

// JobStates lists every job state, in Flink's order (for timestamps maps).
var JobStates = []string{JobInitializing, JobCreated, JobRunning, JobFailing, JobFailed, JobCancelling, JobCanceled, JobFinished, JobRestarting, JobSuspended}

// TerminalJobState tells whether a job can never run again.
func TerminalJobState(s string) bool {
	return s == JobFailed || s == JobCanceled || s == JobFinished
}

// Job is the replicated record of one job.
type Job struct {
	ID         string           `json:"id"`
	Name       string           `json:"name"`
	Spec       json.RawMessage  `json:"spec"`
	State      string           `json:"state"`
	Timestamps map[string]int64 `json:"timestamps"`
	StartTime  int64            `json:"start_time"`
	EndTime    int64            `json:"end_time"`
	// ModifyIndex is the Raft index of the last change, for watchers.
	ModifyIndex uint64 `json:"modify_index"`
}

// clone returns a copy a reader may keep; Spec bytes are never mutated in
// place, so sharing them is safe.
func (j *Job) clone() *Job {
	c := *j
	c.Timestamps = make(map[string]int64, len(j.Timestamps))
	for k, v := range j.Timestamps {
		c.Timestamps[k] = v
	}
	return &c
}

func (j *Job) setState(state string, at int64, index uint64) {
	j.State = state
	j.Timestamps[state] = at
	if TerminalJobState(state) {
		j.EndTime = at
	}
	j.ModifyIndex = index
}

// state is everything the FSM replicates. It is serialised whole for
// snapshots, so every field must be exported to JSON.
type state struct {
	Jobs map[string]*Job `json:"jobs"`
}

func newState() *state {
	return &state{Jobs: map[string]*Job{}}
}

func (s *state) sortedJobs() []*Job {
	out := make([]*Job, 0, len(s.Jobs))
	for _, j := range s.Jobs {
		out = append(out, j.clone())
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].StartTime != out[b].StartTime {
			return out[a].StartTime > out[b].StartTime
		}
		return out[a].ID < out[b].ID
	})
	return out
}

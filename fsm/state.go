package fsm

import (
	"encoding/json"
	"sort"
	"strconv"
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

	// Attempt counts deployments: 1 for the first, +1 per restart.
	Attempt int `json:"attempt"`
	// Placement maps each vertex to the node of each of its subtasks, for
	// the current attempt.
	Placement map[string][]string `json:"placement,omitempty"`
	// Subtasks of the current attempt, keyed by SubtaskKey.
	Subtasks map[string]*Subtask `json:"subtasks,omitempty"`
	// Failures is the exception history, oldest first, bounded.
	Failures []Failure `json:"failures,omitempty"`
	// Restarts counts restarts since submission.
	Restarts int `json:"restarts"`
	// RestartAt is when a RESTARTING job may be deployed again (unix ms).
	RestartAt int64 `json:"restart_at,omitempty"`
	// Reason says why a CREATED job waits, or why a job failed.
	Reason string `json:"reason,omitempty"`
}

// Subtask is the replicated view of one subtask of the current attempt.
type Subtask struct {
	VertexID   string           `json:"vertex_id"`
	Index      int              `json:"index"`
	Attempt    int              `json:"attempt"`
	Node       string           `json:"node"`
	State      string           `json:"state"`
	Timestamps map[string]int64 `json:"timestamps"`
	Failure    string           `json:"failure,omitempty"`
}

// Failure is one entry of a job's exception history.
type Failure struct {
	Timestamp int64  `json:"timestamp"`
	VertexID  string `json:"vertex_id,omitempty"`
	Subtask   int    `json:"subtask"`
	Node      string `json:"node,omitempty"`
	Attempt   int    `json:"attempt"`
	Message   string `json:"message"`
}

// MaxFailures bounds the exception history kept per job.
const MaxFailures = 100

// SubtaskKey names a subtask in Job.Subtasks.
func SubtaskKey(vertexID string, index int) string {
	return vertexID + "#" + strconv.Itoa(index)
}

// Subtask execution states, Flink's names.
const (
	TaskCreated      = "CREATED"
	TaskScheduled    = "SCHEDULED"
	TaskDeploying    = "DEPLOYING"
	TaskInitializing = "INITIALIZING"
	TaskRunning      = "RUNNING"
	TaskFinished     = "FINISHED"
	TaskCanceling    = "CANCELING"
	TaskCanceled     = "CANCELED"
	TaskFailed       = "FAILED"
)

// TerminalTaskState tells whether a subtask is done for good.
func TerminalTaskState(s string) bool {
	return s == TaskFinished || s == TaskCanceled || s == TaskFailed
}

// NodesOf returns the distinct nodes of a placement.
func NodesOf(placement map[string][]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, nodes := range placement {
		for _, n := range nodes {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// clone returns a copy a reader may keep; Spec bytes are never mutated in
// place, so sharing them is safe.
func (j *Job) clone() *Job {
	c := *j
	c.Timestamps = copyTimes(j.Timestamps)
	if j.Placement != nil {
		c.Placement = make(map[string][]string, len(j.Placement))
		for v, nodes := range j.Placement {
			c.Placement[v] = append([]string(nil), nodes...)
		}
	}
	if j.Subtasks != nil {
		c.Subtasks = make(map[string]*Subtask, len(j.Subtasks))
		for k, st := range j.Subtasks {
			cs := *st
			cs.Timestamps = copyTimes(st.Timestamps)
			c.Subtasks[k] = &cs
		}
	}
	c.Failures = append([]Failure(nil), j.Failures...)
	return &c
}

func copyTimes(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
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
	Jobs    map[string]*Job    `json:"jobs"`
	Bundles map[string]*Bundle `json:"bundles"`
}

func newState() *state {
	return &state{Jobs: map[string]*Job{}, Bundles: map[string]*Bundle{}}
}

// Bundle is an uploaded job bundle (Flink's jar).
type Bundle struct {
	ID       string        `json:"id"`
	Name     string        `json:"name"`
	SHA256   string        `json:"sha256"`
	Size     int64         `json:"size"`
	Uploaded int64         `json:"uploaded"`
	Entries  []BundleEntry `json:"entries"`
	// Holders are the nodes that stored the bytes before the bundle was
	// acknowledged.
	Holders []string `json:"holders"`
}

// BundleEntry is one job spec inside a bundle.
type BundleEntry struct {
	Name        string `json:"name"`
	Description string `json:"description"`
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

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

	// Restore is what the current attempt was started from.
	Restore *RestoreRef `json:"restore,omitempty"`
	// InitialRestore is the savepoint a new job was submitted to start from.
	InitialRestore *RestoreRef `json:"initial_restore,omitempty"`
	// Checkpoints is the job's checkpoint bookkeeping.
	Checkpoints CheckpointStats `json:"checkpoints"`
}

// RestoreRef names a completed checkpoint or savepoint to start from.
type RestoreRef struct {
	CheckpointID int64 `json:"checkpoint_id"`
	// Dir is relative to the checkpoint storage root for checkpoints, or
	// an absolute savepoint directory.
	Dir                   string `json:"dir"`
	Attempt               int    `json:"attempt"`
	Savepoint             bool   `json:"savepoint"`
	AllowNonRestoredState bool   `json:"allow_non_restored_state,omitempty"`
	RestoredAt            int64  `json:"restored_at,omitempty"`
}

// CheckpointStats counts and keeps recent checkpoints, in Flink's terms.
type CheckpointStats struct {
	// LastID is the highest id ever reserved for this job.
	LastID     int64 `json:"last_id"`
	InProgress int   `json:"in_progress"`
	Completed  int   `json:"completed"`
	Failed     int   `json:"failed"`
	Restored   int   `json:"restored"`
	// History holds the most recent checkpoints, newest last.
	History []Checkpoint `json:"history,omitempty"`
	// Retained are the completed checkpoints still in storage, newest last.
	Retained []Checkpoint `json:"retained,omitempty"`
	// LatestSavepoint is the newest completed savepoint.
	LatestSavepoint *Checkpoint `json:"latest_savepoint,omitempty"`
	// LatestFailed is the newest failed checkpoint.
	LatestFailed *Checkpoint `json:"latest_failed,omitempty"`
}

// Checkpoint is one checkpoint or savepoint.
type Checkpoint struct {
	ID          int64  `json:"id"`
	Attempt     int    `json:"attempt"`
	Status      string `json:"status"` // IN_PROGRESS, COMPLETED, FAILED
	Savepoint   bool   `json:"savepoint"`
	TriggeredAt int64  `json:"triggered_at"`
	CompletedAt int64  `json:"completed_at,omitempty"`
	// Dir holds the subtask snapshots: relative to the checkpoint root, or
	// absolute for a savepoint.
	Dir          string `json:"dir,omitempty"`
	StateSize    int64  `json:"state_size"`
	Acknowledged int    `json:"acknowledged"`
	Total        int    `json:"total"`
	Failure      string `json:"failure,omitempty"`
	// Subtasks are per-subtask statistics keyed by SubtaskKey.
	Subtasks map[string]SubtaskCheckpoint `json:"subtasks,omitempty"`
}

// SubtaskCheckpoint is one subtask's part of a checkpoint.
type SubtaskCheckpoint struct {
	AckAt       int64  `json:"ack_at"`
	StateFile   string `json:"state_file"`
	StateSize   int64  `json:"state_size"`
	AlignmentMs int64  `json:"alignment_ms"`
	SyncMs      int64  `json:"sync_ms"`
	AsyncMs     int64  `json:"async_ms"`
}

// Trigger is an asynchronous operation (savepoint, stop, checkpoint,
// rescale) addressed by its trigger id.
type Trigger struct {
	ID    string `json:"id"`
	JobID string `json:"job_id"`
	// Kind is savepoint, stop, checkpoint or rescale.
	Kind       string `json:"kind"`
	TargetDir  string `json:"target_dir,omitempty"`
	CancelJob  bool   `json:"cancel_job,omitempty"`
	Drain      bool   `json:"drain,omitempty"`
	FormatType string `json:"format_type,omitempty"`
	// Rescale carries the new parallelism per vertex.
	Rescale      map[string]int `json:"rescale,omitempty"`
	Status       string         `json:"status"` // IN_PROGRESS, COMPLETED, FAILED
	Location     string         `json:"location,omitempty"`
	FailureCause string         `json:"failure_cause,omitempty"`
	CreatedAt    int64          `json:"created_at"`
	DoneAt       int64          `json:"done_at,omitempty"`
	// CheckpointID is the checkpoint taken for it, once started.
	CheckpointID int64 `json:"checkpoint_id,omitempty"`
}

// Trigger statuses, Flink's QueueStatus plus the outcome.
const (
	TriggerInProgress = "IN_PROGRESS"
	TriggerCompleted  = "COMPLETED"
	TriggerFailed     = "FAILED"
)

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
	c.Checkpoints.History = append([]Checkpoint(nil), j.Checkpoints.History...)
	c.Checkpoints.Retained = append([]Checkpoint(nil), j.Checkpoints.Retained...)
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
	Jobs     map[string]*Job     `json:"jobs"`
	Bundles  map[string]*Bundle  `json:"bundles"`
	Triggers map[string]*Trigger `json:"triggers"`
}

func newState() *state {
	return &state{Jobs: map[string]*Job{}, Bundles: map[string]*Bundle{}, Triggers: map[string]*Trigger{}}
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

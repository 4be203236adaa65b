package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Savepoints, stop-with-savepoint, checkpoints and rescaling, in Flink's
// shapes (flink.md b8, b9, b11; seed 002 for the vertex parallelism).

// Savepoint formats.
const (
	FormatCanonical = "CANONICAL"
	FormatNative    = "NATIVE"
)

// Statuses of an asynchronous operation (Flink's QueueStatus).
const (
	StatusInProgress = "IN_PROGRESS"
	StatusCompleted  = "COMPLETED"
)

// SavepointRequest is Flink's SavepointTriggerRequestBody. A TriggerID
// makes the call idempotent, so it is retried on connection errors and
// 503.
type SavepointRequest struct {
	TargetDirectory string `json:"target-directory,omitempty"`
	CancelJob       bool   `json:"cancel-job"`
	FormatType      string `json:"formatType,omitempty"`
	TriggerID       string `json:"triggerId,omitempty"`
}

// StopRequest is Flink's StopWithSavepointRequestBody (camelCase names).
// Drain emits MAX_WATERMARK before the savepoint. A TriggerID makes the
// call idempotent.
type StopRequest struct {
	TargetDirectory string `json:"targetDirectory,omitempty"`
	Drain           bool   `json:"drain"`
	FormatType      string `json:"formatType,omitempty"`
	TriggerID       string `json:"triggerId,omitempty"`
}

// TriggerResponse is Flink's {"request-id": ...}.
type TriggerResponse struct {
	RequestID string `json:"request-id"`
	Meta      `json:"-"`
}

// FailureCause is Flink's SerializedThrowable.
type FailureCause struct {
	Class               string `json:"class"`
	StackTrace          string `json:"stack-trace"`
	SerializedThrowable string `json:"serialized-throwable,omitempty"`
}

// Message is the cause's first line (the exception and its message).
func (f *FailureCause) Message() string {
	if f == nil {
		return ""
	}
	msg, _, _ := strings.Cut(strings.TrimSpace(f.StackTrace), "\n")
	if msg == "" {
		msg = f.Class
	}
	return msg
}

// SavepointInfo is the result of a finished savepoint or stop.
type SavepointInfo struct {
	Location     string        `json:"location,omitempty"`
	FailureCause *FailureCause `json:"failure-cause,omitempty"`
}

// QueueStatus is an asynchronous operation's status.
type QueueStatus struct {
	ID string `json:"id"` // IN_PROGRESS, COMPLETED
}

// SavepointStatus is GET /jobs/:jobid/savepoints/:triggerid: the status of
// a savepoint and of a stop-with-savepoint.
type SavepointStatus struct {
	Status    QueueStatus    `json:"status"`
	Operation *SavepointInfo `json:"operation"`
	Meta      `json:"-"`
}

// Done tells whether the operation has finished, successfully or not.
func (s *SavepointStatus) Done() bool { return s.Status.ID == StatusCompleted }

// Err is the failure of a finished operation (Flink reports a failure as
// COMPLETED with a failure-cause), or nil.
func (s *SavepointStatus) Err() error {
	if s.Done() && s.Operation != nil && s.Operation.FailureCause != nil {
		return &OperationError{Cause: s.Operation.FailureCause}
	}
	return nil
}

// OperationError is an asynchronous operation that completed with a
// failure cause.
type OperationError struct {
	Cause *FailureCause
}

func (e *OperationError) Error() string { return "operation failed: " + e.Cause.Message() }

// TriggerSavepoint is Flink's POST /jobs/:jobid/savepoints.
func (c *Client) TriggerSavepoint(ctx context.Context, jobID string, req SavepointRequest) (*TriggerResponse, error) {
	var out TriggerResponse
	return &out, c.write(ctx, http.MethodPost, "/jobs/"+pathEscape(jobID)+"/savepoints", nil, req, req.TriggerID != "", &out)
}

// SavepointStatus is Flink's GET /jobs/:jobid/savepoints/:triggerid (for
// savepoints and stops alike); 404 *APIError for an unknown trigger.
func (c *Client) SavepointStatus(ctx context.Context, jobID, triggerID string) (*SavepointStatus, error) {
	var out SavepointStatus
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/savepoints/"+pathEscape(triggerID), nil, &out)
}

// StopJob is Flink's POST /jobs/:jobid/stop: stop with a savepoint; the
// job ends FINISHED. Poll the trigger with SavepointStatus or
// WaitForSavepoint.
func (c *Client) StopJob(ctx context.Context, jobID string, req StopRequest) (*TriggerResponse, error) {
	var out TriggerResponse
	return &out, c.write(ctx, http.MethodPost, "/jobs/"+pathEscape(jobID)+"/stop", nil, req, req.TriggerID != "", &out)
}

// SavepointDisposal is Flink's POST /savepoint-disposal.
func (c *Client) DisposeSavepoint(ctx context.Context, path string) (*TriggerResponse, error) {
	var out TriggerResponse
	return &out, c.write(ctx, http.MethodPost, "/savepoint-disposal", nil, map[string]string{"savepoint-path": path}, false, &out)
}

// DisposalStatus is Flink's GET /savepoint-disposal/:triggerid.
func (c *Client) DisposalStatus(ctx context.Context, triggerID string) (*SavepointStatus, error) {
	var out SavepointStatus
	return &out, c.get(ctx, "/savepoint-disposal/"+pathEscape(triggerID), nil, &out)
}

// RescaleRequest is the body of a vertex rescale: seed 002's new_scale,
// and a trigger id (rescales are asynchronous operations here, like
// savepoints) that makes the call idempotent.
type RescaleRequest struct {
	NewScale  int    `json:"new_scale"`
	TriggerID string `json:"triggerId,omitempty"`
}

// Rescale sets one vertex's parallelism (seed 002's PUT
// /jobs/:jobid/vertices/:vertexid/parallelism). Setting an absolute
// parallelism is idempotent, so the call is retried like a read. The
// answer's RequestID is empty when the server answers without one.
func (c *Client) Rescale(ctx context.Context, jobID, vertexID string, req RescaleRequest) (*TriggerResponse, error) {
	var out TriggerResponse
	return &out, c.write(ctx, http.MethodPut, "/jobs/"+pathEscape(jobID)+"/vertices/"+pathEscape(vertexID)+"/parallelism", nil, req, true, &out)
}

// ParallelismBounds is a vertex's resource requirement.
type ParallelismBounds struct {
	LowerBound int `json:"lowerBound"`
	UpperBound int `json:"upperBound"`
}

// ResourceRequirement is one vertex's entry of Flink's
// resource-requirements.
type ResourceRequirement struct {
	Parallelism ParallelismBounds `json:"parallelism"`
}

// ResourceRequirements is Flink's GET /jobs/:jobid/resource-requirements,
// keyed by vertex id.
func (c *Client) ResourceRequirements(ctx context.Context, jobID string) (map[string]ResourceRequirement, error) {
	var out map[string]ResourceRequirement
	return out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/resource-requirements", nil, &out)
}

// SetResourceRequirements is Flink's PUT
// /jobs/:jobid/resource-requirements (FLIP-291 declarative rescaling).
func (c *Client) SetResourceRequirements(ctx context.Context, jobID string, req map[string]ResourceRequirement) error {
	return c.write(ctx, http.MethodPut, "/jobs/"+pathEscape(jobID)+"/resource-requirements", nil, req, false, nil)
}

// CheckpointRequest is Flink's CheckpointTriggerRequestBody.
type CheckpointRequest struct {
	CheckpointType string `json:"checkpointType,omitempty"` // CONFIGURED, FULL, INCREMENTAL
	TriggerID      string `json:"triggerId,omitempty"`
}

// CheckpointStatus is GET /jobs/:jobid/checkpoints/:triggerid.
type CheckpointStatus struct {
	Status    QueueStatus `json:"status"`
	Operation *struct {
		CheckpointID int64         `json:"checkpointId"`
		FailureCause *FailureCause `json:"failureCause,omitempty"`
	} `json:"operation"`
	Meta `json:"-"`
}

// CheckpointStat is one checkpoint of Flink's checkpoint statistics.
type CheckpointStat struct {
	ClassName               string `json:"className"` // completed, failed, in_progress
	ID                      int64  `json:"id"`
	Status                  string `json:"status"`
	IsSavepoint             bool   `json:"is_savepoint"`
	SavepointFormat         string `json:"savepointFormat,omitempty"`
	CheckpointType          string `json:"checkpoint_type"`
	TriggerTimestamp        int64  `json:"trigger_timestamp"`
	LatestAckTimestamp      int64  `json:"latest_ack_timestamp"`
	CheckpointedSize        int64  `json:"checkpointed_size"`
	StateSize               int64  `json:"state_size"`
	EndToEndDuration        int64  `json:"end_to_end_duration"`
	NumSubtasks             int    `json:"num_subtasks"`
	NumAcknowledgedSubtasks int    `json:"num_acknowledged_subtasks"`
	ExternalPath            string `json:"external_path,omitempty"`
	Discarded               bool   `json:"discarded,omitempty"`
	FailureTimestamp        int64  `json:"failure_timestamp,omitempty"`
	FailureMessage          string `json:"failure_message,omitempty"`
}

// CheckpointStats is Flink's CheckpointingStatistics (GET
// /jobs/:jobid/checkpoints).
type CheckpointStats struct {
	Counts struct {
		Restored   int `json:"restored"`
		Total      int `json:"total"`
		InProgress int `json:"in_progress"`
		Completed  int `json:"completed"`
		Failed     int `json:"failed"`
	} `json:"counts"`
	Summary json.RawMessage `json:"summary,omitempty"`
	Latest  struct {
		Completed *CheckpointStat `json:"completed"`
		Savepoint *CheckpointStat `json:"savepoint"`
		Failed    *CheckpointStat `json:"failed"`
		Restored  *struct {
			ID               int64  `json:"id"`
			RestoreTimestamp int64  `json:"restore_timestamp"`
			IsSavepoint      bool   `json:"is_savepoint"`
			ExternalPath     string `json:"external_path"`
		} `json:"restored"`
	} `json:"latest"`
	History []CheckpointStat `json:"history"`
	Meta    `json:"-"`
}

// CheckpointConfig is Flink's CheckpointConfigInfo (GET
// /jobs/:jobid/checkpoints/config).
type CheckpointConfig struct {
	Mode            string `json:"mode"`
	Interval        int64  `json:"interval"`
	Timeout         int64  `json:"timeout"`
	MinPause        int64  `json:"min_pause"`
	MaxConcurrent   int    `json:"max_concurrent"`
	Externalization struct {
		Enabled              bool `json:"enabled"`
		DeleteOnCancellation bool `json:"delete_on_cancellation"`
	} `json:"externalization"`
	StateBackend               string `json:"state_backend"`
	CheckpointStorage          string `json:"checkpoint_storage"`
	UnalignedCheckpoints       bool   `json:"unaligned_checkpoints"`
	TolerableFailedCheckpoints int    `json:"tolerable_failed_checkpoints"`
	Meta                       `json:"-"`
}

// Checkpoints is Flink's GET /jobs/:jobid/checkpoints.
func (c *Client) Checkpoints(ctx context.Context, jobID string) (*CheckpointStats, error) {
	var out CheckpointStats
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/checkpoints", nil, &out)
}

// CheckpointConfig is Flink's GET /jobs/:jobid/checkpoints/config.
func (c *Client) CheckpointConfig(ctx context.Context, jobID string) (*CheckpointConfig, error) {
	var out CheckpointConfig
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/checkpoints/config", nil, &out)
}

// CheckpointDetails is Flink's GET
// /jobs/:jobid/checkpoints/details/:checkpointid (the per-vertex map is in
// Raw).
func (c *Client) CheckpointDetails(ctx context.Context, jobID string, checkpointID int64) (*CheckpointStatDetails, error) {
	var out CheckpointStatDetails
	return &out, c.get(ctx, fmt.Sprintf("/jobs/%s/checkpoints/details/%d", pathEscape(jobID), checkpointID), nil, &out)
}

// CheckpointStatDetails is one checkpoint with its per-vertex statistics.
type CheckpointStatDetails struct {
	CheckpointStat
	Tasks map[string]json.RawMessage `json:"tasks"`
	Meta  `json:"-"`
}

// TriggerCheckpoint is Flink's POST /jobs/:jobid/checkpoints; a TriggerID
// makes it idempotent.
func (c *Client) TriggerCheckpoint(ctx context.Context, jobID string, req CheckpointRequest) (*TriggerResponse, error) {
	var out TriggerResponse
	return &out, c.write(ctx, http.MethodPost, "/jobs/"+pathEscape(jobID)+"/checkpoints", nil, req, req.TriggerID != "", &out)
}

// CheckpointStatus is Flink's GET /jobs/:jobid/checkpoints/:triggerid.
func (c *Client) CheckpointStatus(ctx context.Context, jobID, triggerID string) (*CheckpointStatus, error) {
	var out CheckpointStatus
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/checkpoints/"+pathEscape(triggerID), nil, &out)
}

// BackPressure is Flink's JobVertexBackPressureInfo (GET
// /jobs/:jobid/vertices/:vertexid/backpressure). Status "deprecated" means
// no measurement yet; Sampling that a newer sample is being taken.
type BackPressure struct {
	Status            string                `json:"status"` // ok, deprecated
	BackpressureLevel string                `json:"backpressureLevel,omitempty"`
	EndTimestamp      int64                 `json:"end-timestamp,omitempty"`
	Subtasks          []SubtaskBackPressure `json:"subtasks,omitempty"`
	Measure           string                `json:"measure,omitempty"` // sample, time
	NumSamples        int                   `json:"num-samples,omitempty"`
	Sampling          bool                  `json:"sampling,omitempty"`
	Meta              `json:"-"`
}

// SubtaskBackPressure is one subtask's back pressure.
type SubtaskBackPressure struct {
	Subtask           int     `json:"subtask"`
	BackpressureLevel string  `json:"backpressureLevel"` // ok, low, high
	Ratio             float64 `json:"ratio"`
	IdleRatio         float64 `json:"idleRatio"`
	BusyRatio         float64 `json:"busyRatio"`
}

// MeasureByTime asks for Flink 1.13+'s time-based back-pressure ratio
// instead of sampling (?measure=time).
func MeasureByTime() ReadOption { return func(q url.Values) { q.Set("measure", "time") } }

// BackPressure is one vertex's back pressure.
func (c *Client) BackPressure(ctx context.Context, jobID, vertexID string, opts ...ReadOption) (*BackPressure, error) {
	var out BackPressure
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/vertices/"+pathEscape(vertexID)+"/backpressure", readQuery(opts), &out)
}

// JobBackPressure is this dispatcher's GET /jobs/:jobid/backpressure: the
// likely bottleneck of the job, with the evidence per vertex.
type JobBackPressure struct {
	JobID      string `json:"jid"`
	Name       string `json:"name"`
	State      string `json:"state"`
	Timestamp  int64  `json:"timestamp"`
	Sampling   bool   `json:"sampling"`
	Rule       string `json:"rule"`
	Bottleneck *struct {
		ID   string `json:"id"`
		Name string `json:"name"`
		Why  string `json:"why"`
	} `json:"bottleneck"`
	Reason   string `json:"reason,omitempty"`
	Vertices []struct {
		ID           string  `json:"id"`
		Name         string  `json:"name"`
		Level        string  `json:"backpressureLevel"`
		BusyRatio    float64 `json:"busyRatio"`
		IdleRatio    float64 `json:"idleRatio"`
		InPoolUsage  float64 `json:"inPoolUsage"`
		OutPoolUsage float64 `json:"outPoolUsage"`
	} `json:"vertices"`
	Meta `json:"-"`
}

// JobBackPressure names the job's likely bottleneck.
func (c *Client) JobBackPressure(ctx context.Context, jobID string) (*JobBackPressure, error) {
	var out JobBackPressure
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/backpressure", nil, &out)
}

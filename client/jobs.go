package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
)

// Job states (Flink's JobStatus).
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
	JobReconciling  = "RECONCILING"
)

// TerminalStates are the globally terminal job states.
var TerminalStates = []string{JobFinished, JobFailed, JobCanceled}

// IsTerminal tells whether a job in this state will never change again.
func IsTerminal(state string) bool {
	return state == JobFinished || state == JobFailed || state == JobCanceled
}

var idPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// NewID returns a random id in Flink's format (32 lowercase hex
// characters), for a job id or a trigger id chosen by the caller.
func NewID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// ValidID tells whether s is in Flink's id format.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// ReadOption changes how a read is served.
type ReadOption func(url.Values)

// Consistent makes a read linearizable: the leader answers after
// confirming its leadership with a quorum (?consistent=true).
func Consistent() ReadOption { return func(q url.Values) { q.Set("consistent", "true") } }

func readQuery(opts []ReadOption) url.Values {
	if len(opts) == 0 {
		return nil
	}
	q := url.Values{}
	for _, o := range opts {
		o(q)
	}
	return q
}

// JobSummary is one entry of GET /jobs: Flink's {id, status} with seed
// 002's name, inRunningMode and vertices.
type JobSummary struct {
	ID            string          `json:"id"`
	Status        string          `json:"status"`
	Name          string          `json:"name"`
	InRunningMode bool            `json:"inRunningMode"`
	Vertices      []VertexSummary `json:"vertices"`
}

// VertexSummary is a vertex of a JobSummary.
type VertexSummary struct {
	ID                 string `json:"id"`
	Name               string `json:"name"`
	Parallelism        int    `json:"parallelism"`
	CurrentParallelism int    `json:"currentParallelism"`
	MaxParallelism     int    `json:"maxParallelism"`
	Status             string `json:"status"`
}

// JobList is GET /jobs.
type JobList struct {
	Jobs []JobSummary `json:"jobs"`
	Meta `json:"-"`
}

// SubmitResult is the answer of POST /v1/jobs.
type SubmitResult struct {
	JobID string `json:"jobid"`
	Meta  `json:"-"`
}

// IOMetrics are Flink's IOMetricsInfo of a vertex.
type IOMetrics struct {
	ReadBytes                    int64   `json:"read-bytes"`
	ReadBytesComplete            bool    `json:"read-bytes-complete"`
	WriteBytes                   int64   `json:"write-bytes"`
	WriteBytesComplete           bool    `json:"write-bytes-complete"`
	ReadRecords                  int64   `json:"read-records"`
	ReadRecordsComplete          bool    `json:"read-records-complete"`
	WriteRecords                 int64   `json:"write-records"`
	WriteRecordsComplete         bool    `json:"write-records-complete"`
	AccumulatedBackpressuredTime int64   `json:"accumulated-backpressured-time"`
	AccumulatedIdleTime          int64   `json:"accumulated-idle-time"`
	AccumulatedBusyTime          float64 `json:"accumulated-busy-time"`
}

// SubtaskInfo is one subtask of a vertex (Flink's SubtaskExecutionAttempt
// details). Metrics keeps whatever the server measured.
type SubtaskInfo struct {
	Subtask        int              `json:"subtask"`
	Status         string           `json:"status"`
	Attempt        int              `json:"attempt"`
	Endpoint       string           `json:"endpoint,omitempty"`
	TaskManagerID  string           `json:"taskmanager-id,omitempty"`
	StartTime      int64            `json:"start-time,omitempty"`
	EndTime        int64            `json:"end-time,omitempty"`
	Duration       int64            `json:"duration,omitempty"`
	Metrics        map[string]any   `json:"metrics,omitempty"`
	StatusDuration map[string]int64 `json:"status-duration,omitempty"`
}

// JobVertex is a vertex of GET /jobs/:jobid.
type JobVertex struct {
	ID             string         `json:"id"`
	Name           string         `json:"name"`
	Parallelism    int            `json:"parallelism"`
	MaxParallelism int            `json:"maxParallelism"`
	Status         string         `json:"status"`
	StartTime      int64          `json:"start-time"`
	EndTime        int64          `json:"end-time"`
	Duration       int64          `json:"duration"`
	Tasks          map[string]int `json:"tasks,omitempty"`
	Metrics        IOMetrics      `json:"metrics"`
	Subtasks       []SubtaskInfo  `json:"subtasks,omitempty"`
}

// JobFailure is one entry of the job's failure history as GET
// /jobs/:jobid reports it.
type JobFailure struct {
	Timestamp int64  `json:"timestamp"`
	VertexID  string `json:"vertex_id,omitempty"`
	Subtask   int    `json:"subtask"`
	Node      string `json:"node,omitempty"`
	Attempt   int    `json:"attempt"`
	Message   string `json:"message"`
}

// JobDetails is Flink's JobDetailsInfo (GET /jobs/:jobid) with this
// dispatcher's attempt, restarts, reason and failures.
type JobDetails struct {
	JID            string           `json:"jid"`
	Name           string           `json:"name"`
	IsStoppable    bool             `json:"isStoppable"`
	State          string           `json:"state"`
	JobType        string           `json:"job-type,omitempty"`
	StartTime      int64            `json:"start-time"`
	EndTime        int64            `json:"end-time"`
	Duration       int64            `json:"duration"`
	MaxParallelism int              `json:"maxParallelism"`
	Now            int64            `json:"now"`
	Timestamps     map[string]int64 `json:"timestamps"`
	Vertices       []JobVertex      `json:"vertices"`
	StatusCounts   map[string]int   `json:"status-counts,omitempty"`
	Plan           json.RawMessage  `json:"plan,omitempty"`
	Attempt        int              `json:"attempt"`
	Restarts       int              `json:"restarts"`
	Reason         string           `json:"reason,omitempty"`
	Failures       []JobFailure     `json:"failures,omitempty"`
	Meta           `json:"-"`
}

// JobOverview is one entry of Flink's GET /jobs/overview.
type JobOverview struct {
	JID              string         `json:"jid"`
	Name             string         `json:"name"`
	State            string         `json:"state"`
	JobType          string         `json:"jobType,omitempty"`
	StartTime        int64          `json:"start-time"`
	EndTime          int64          `json:"end-time"`
	Duration         int64          `json:"duration"`
	LastModification int64          `json:"last-modification"`
	Tasks            map[string]int `json:"tasks"`
}

// JobsOverview is Flink's MultipleJobsDetails (GET /jobs/overview).
type JobsOverview struct {
	Jobs []JobOverview `json:"jobs"`
	Meta `json:"-"`
}

// JobStatus is Flink's GET /jobs/:jobid/status.
type JobStatus struct {
	Status string `json:"status"`
	Meta   `json:"-"`
}

// VertexDetails is Flink's JobVertexDetailsInfo (GET
// /jobs/:jobid/vertices/:vertexid).
type VertexDetails struct {
	ID             string          `json:"id"`
	Name           string          `json:"name"`
	Parallelism    int             `json:"parallelism"`
	MaxParallelism int             `json:"maxParallelism"`
	Now            int64           `json:"now"`
	Subtasks       []SubtaskInfo   `json:"subtasks"`
	Aggregated     json.RawMessage `json:"aggregated,omitempty"`
	Meta           `json:"-"`
}

// ExceptionInfo is one exception of Flink's exception history.
type ExceptionInfo struct {
	ExceptionName string            `json:"exceptionName"`
	Stacktrace    string            `json:"stacktrace"`
	Timestamp     int64             `json:"timestamp"`
	TaskName      string            `json:"taskName,omitempty"`
	Endpoint      string            `json:"endpoint,omitempty"`
	TaskManagerID string            `json:"taskManagerId,omitempty"`
	FailureLabels map[string]string `json:"failureLabels,omitempty"`
}

// RootExceptionInfo is an entry of the history with the exceptions that
// happened at the same time.
type RootExceptionInfo struct {
	ExceptionInfo
	ConcurrentExceptions []ExceptionInfo `json:"concurrentExceptions,omitempty"`
}

// JobExceptions is Flink's JobExceptionsInfoWithHistory (GET
// /jobs/:jobid/exceptions).
type JobExceptions struct {
	ExceptionHistory struct {
		Entries   []RootExceptionInfo `json:"entries"`
		Truncated bool                `json:"truncated"`
	} `json:"exceptionHistory"`
	Meta `json:"-"`
}

// ListJobs is GET /jobs.
func (c *Client) ListJobs(ctx context.Context, opts ...ReadOption) (*JobList, error) {
	var out JobList
	return &out, c.get(ctx, "/jobs", readQuery(opts), &out)
}

// JobsOverview is Flink's GET /jobs/overview.
func (c *Client) JobsOverview(ctx context.Context) (*JobsOverview, error) {
	var out JobsOverview
	return &out, c.get(ctx, "/jobs/overview", nil, &out)
}

// Job is GET /jobs/:jobid; a 404 *APIError for an unknown job.
func (c *Client) Job(ctx context.Context, jobID string, opts ...ReadOption) (*JobDetails, error) {
	var out JobDetails
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID), readQuery(opts), &out)
}

// JobStatus is Flink's GET /jobs/:jobid/status.
func (c *Client) JobStatus(ctx context.Context, jobID string, opts ...ReadOption) (*JobStatus, error) {
	var out JobStatus
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/status", readQuery(opts), &out)
}

// Vertex is Flink's GET /jobs/:jobid/vertices/:vertexid.
func (c *Client) Vertex(ctx context.Context, jobID, vertexID string) (*VertexDetails, error) {
	var out VertexDetails
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/vertices/"+pathEscape(vertexID), nil, &out)
}

// JobExceptions is Flink's GET /jobs/:jobid/exceptions; maxExceptions <= 0
// leaves the server's default.
func (c *Client) JobExceptions(ctx context.Context, jobID string, maxExceptions int) (*JobExceptions, error) {
	var q url.Values
	if maxExceptions > 0 {
		q = url.Values{"maxExceptions": {strconv.Itoa(maxExceptions)}}
	}
	var out JobExceptions
	return &out, c.get(ctx, "/jobs/"+pathEscape(jobID)+"/exceptions", q, &out)
}

// SubmitJob submits a job spec (docs/jobspec.md) with POST /v1/jobs. A
// spec that carries a jobId is idempotent on the server, so the call is
// retried on connection errors and 503; without one it is sent once (use
// WithJobID to choose the id).
func (c *Client) SubmitJob(ctx context.Context, spec []byte) (*SubmitResult, error) {
	var probe struct {
		JobID string `json:"jobId"`
	}
	idempotent := json.Unmarshal(spec, &probe) == nil && probe.JobID != ""
	var out SubmitResult
	err := c.call(ctx, &request{method: http.MethodPost, path: "/jobs", body: spec, idempotent: idempotent}, &out)
	return &out, err
}

// WithJobID returns spec with its jobId set to id (other fields kept).
func WithJobID(spec []byte, id string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(spec, &m); err != nil {
		return nil, fmt.Errorf("job spec: %v", err)
	}
	if m == nil {
		return nil, fmt.Errorf("job spec: not a JSON object")
	}
	b, _ := json.Marshal(id)
	m["jobId"] = b
	return json.Marshal(m)
}

// SpecJobID returns the jobId a spec carries, or "".
func SpecJobID(spec []byte) string {
	var probe struct {
		JobID string `json:"jobId"`
	}
	if json.Unmarshal(spec, &probe) != nil {
		return ""
	}
	return probe.JobID
}

// CancelJob is Flink's PATCH /jobs/:jobid?mode=cancel: 409 *APIError when
// the job is already terminal, 404 when unknown.
func (c *Client) CancelJob(ctx context.Context, jobID string) error {
	return c.write(ctx, http.MethodPatch, "/jobs/"+pathEscape(jobID), url.Values{"mode": {"cancel"}}, nil, false, nil)
}

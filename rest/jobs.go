package rest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

func (s *Server) jobRoutes() []route {
	return []route{
		{method: "POST", path: "/jobs", write: true, handler: s.postJob},
		{method: "GET", path: "/jobs", handler: s.getJobs},
		{method: "GET", path: "/jobs/:jobid", handler: s.getJob},
		{method: "PATCH", path: "/jobs/:jobid", write: true, handler: s.patchJob},
	}
}

// Flink's ids are 32 lowercase hex characters.
var jobIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func newJobID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// jobIDParam validates the :jobid path parameter; Flink answers 400 for a
// malformed id.
func jobIDParam(c *gin.Context) (string, bool) {
	id := c.Param("jobid")
	if !jobIDPattern.MatchString(id) {
		fail(c, http.StatusBadRequest, "Bad request: job id "+quoteShort(id)+" is not 32 lowercase hex characters.")
		return "", false
	}
	return id, true
}

func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func (s *Server) parseOptions() jobgraph.Options {
	cfg := s.node.Config()
	return jobgraph.Options{InputDir: cfg.InputDir, OutputDir: cfg.OutputDir, AllowExec: cfg.AllowExec, ExecPaths: cfg.ExecPaths}
}

// readBody reads a JSON body under the size cap, answering the error itself.
func readBody(c *gin.Context) ([]byte, bool) {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		if isBodyTooLarge(err) {
			fail(c, http.StatusRequestEntityTooLarge, "Request body is larger than the limit.")
		} else {
			fail(c, http.StatusBadRequest, "Cannot read the request body: "+err.Error())
		}
		return nil, false
	}
	return body, true
}

func (s *Server) postJob(c *gin.Context) {
	body, ok := readBody(c)
	if !ok {
		return
	}
	graph, err := jobgraph.Parse(body, s.parseOptions())
	if err != nil {
		var ve *jobgraph.ValidationError
		if errors.As(err, &ve) {
			fail(c, http.StatusBadRequest, ve.Problems...)
			return
		}
		fail(c, http.StatusBadRequest, err.Error())
		return
	}
	var restore *fsm.RestoreRef
	if sp := c.Query("savepointPath"); sp != "" {
		if restore, ok = s.resolveSavepoint(c, sp, c.Query("allowNonRestoredState") == "true"); !ok {
			return
		}
	}
	id, err := s.submitGraph(c.Request.Context(), graph, restore)
	if err != nil {
		failApply(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"jobid": id})
}

// submitGraph stores a validated job through Raft and returns its id; the
// spec's jobId, when set, makes the submission idempotent. Every way of
// starting a job (the job route, a jar run) ends here.
func (s *Server) submitGraph(ctx context.Context, graph *jobgraph.JobGraph, restore *fsm.RestoreRef) (string, error) {
	if graph.JobID == "" {
		graph.JobID = newJobID()
	}
	if msg, taken := s.serviceGroupTaken(graph); taken {
		return "", &fsm.Conflict{Msg: msg}
	}
	spec, err := json.Marshal(graph)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = s.apply(ctx, &fsm.JobSubmit{JobID: graph.JobID, Name: graph.Name, Spec: spec, At: time.Now().UnixMilli(), Restore: restore})
	return graph.JobID, err
}

// jobSummary is an entry of GET /jobs: Flink's {id, status} plus seed 002's
// name, inRunningMode and vertices.
type jobSummary struct {
	ID            string          `json:"id"`
	Status        string          `json:"status"`
	Name          string          `json:"name"`
	InRunningMode bool            `json:"inRunningMode"`
	Vertices      []vertexSummary `json:"vertices"`
}

type vertexSummary struct {
	ID                 string `json:"id"`
	Name               string `json:"name"`
	Parallelism        int    `json:"parallelism"`
	CurrentParallelism int    `json:"currentParallelism"`
	MaxParallelism     int    `json:"maxParallelism"`
	Status             string `json:"status"`
}

func summarize(j *fsm.Job) jobSummary {
	out := jobSummary{ID: j.ID, Status: j.State, Name: j.Name, InRunningMode: j.State == fsm.JobRunning, Vertices: []vertexSummary{}}
	g, _ := graphOf(j)
	for _, v := range g.Vertices {
		out.Vertices = append(out.Vertices, vertexSummary{
			ID: v.ID, Name: v.Name, Parallelism: v.Parallelism, CurrentParallelism: v.Parallelism,
			MaxParallelism: g.MaxParallelism, Status: vertexState(j, v.ID, v.Parallelism),
		})
	}
	return out
}

// vertexState aggregates its subtasks' states the way Flink's
// ExecutionJobVertex does: failures and activity win over completion.
func vertexState(j *fsm.Job, vertexID string, parallelism int) string {
	states := make([]string, parallelism)
	for i := range states {
		states[i] = replicatedState(j, vertexID, i)
	}
	return aggregateState(states)
}

func (s *Server) getJobs(c *gin.Context) {
	jobs := s.node.FSM.Jobs()
	out := make([]jobSummary, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, summarize(j))
	}
	c.JSON(http.StatusOK, gin.H{"jobs": out})
}

// patchJob is Flink's PATCH /jobs/:jobid?mode=cancel.
func (s *Server) patchJob(c *gin.Context) {
	id, ok := jobIDParam(c)
	if !ok {
		return
	}
	switch mode := c.DefaultQuery("mode", "cancel"); mode {
	case "cancel":
	case "stop":
		c.Redirect(http.StatusPermanentRedirect, "/v1/jobs/"+id+"/stop")
		return
	default:
		fail(c, http.StatusBadRequest, "Bad request: mode must be cancel or stop, not "+quoteShort(mode)+".")
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 10*time.Second)
	defer cancel()
	err := s.apply(ctx, &fsm.JobCancel{JobID: id, At: time.Now().UnixMilli()})
	if err != nil {
		failApply(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{})
}

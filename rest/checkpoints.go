package rest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
	"github.com/dispatcher-dev/dispatcher/runtime"
)

// Coordinator is the leader's checkpoint coordinator as the API sees it.
type Coordinator interface {
	Ack(ctx context.Context, acks []runtime.CheckpointAck)
}

// Checkpointer is the local executor's checkpoint entry point.
type Checkpointer interface {
	TriggerCheckpoint(jobID string, attempt int, cp runtime.Checkpoint) error
}

func (s *Server) checkpointRoutes() []route {
	return []route{
		{method: "GET", path: "/jobs/:jobid/checkpoints", handler: s.getCheckpoints},
		{method: "GET", path: "/jobs/:jobid/checkpoints/config", handler: s.getCheckpointConfig},
		{method: "GET", path: "/jobs/:jobid/checkpoints/details/:checkpointid", handler: s.getCheckpointDetail},
		{method: "GET", path: "/jobs/:jobid/checkpoints/details/:checkpointid/subtasks/:vertexid", handler: s.getCheckpointSubtasks},
		{method: "POST", path: "/jobs/:jobid/checkpoints", write: true, handler: s.postTrigger("checkpoint")},
		{method: "GET", path: "/jobs/:jobid/checkpoints/:triggerid", handler: s.getCheckpointTrigger},
		{method: "POST", path: "/jobs/:jobid/savepoints", write: true, handler: s.postTrigger("savepoint")},
		{method: "GET", path: "/jobs/:jobid/savepoints/:triggerid", handler: s.getSavepointTrigger},
		{method: "POST", path: "/jobs/:jobid/stop", write: true, handler: s.postTrigger("stop")},
		{method: "POST", path: "/jobs/:jobid/cancel", write: true, handler: s.postSeedCancel},
		{method: "PUT", path: "/jobs/:jobid/vertices/:vertexid/parallelism", write: true, handler: s.putVertexParallelism},
		{method: "PUT", path: "/jobs/:jobid/resource-requirements", write: true, handler: s.putResourceRequirements},
		{method: "GET", path: "/jobs/:jobid/resource-requirements", handler: s.getResourceRequirements},
		{method: "PATCH", path: "/jobs/:jobid/rescaling", write: true, handler: s.patchRescaling},
		{method: "GET", path: "/jobs/:jobid/rescaling/:triggerid", handler: s.getSavepointTrigger},
		{method: "POST", path: "/savepoint-disposal", write: true, handler: s.postSavepointDisposal},
		{method: "GET", path: "/savepoint-disposal/:triggerid", handler: s.getDisposal},
		// Seed 000's legacy cancel-with-savepoint: a GET with a side effect,
		// as Flink's legacy API had it; it is a write, so it runs on the leader.
		{method: "GET", path: "/jobs/:jobid/cancel-with-savepoint", write: true, handler: s.legacyCancelWithSavepoint},
		{method: "GET", path: "/jobs/:jobid/cancel-with-savepoint/target-directory/*targetDirectory", write: true, handler: s.legacyCancelWithSavepoint},
		{method: "GET", path: "/jobs/:jobid/cancel-with-savepoint/in-progress/:triggerid", handler: s.legacyCancelProgress},
		{method: "POST", path: "/internal/jobs/:jobid/checkpoint-trigger", handler: s.postLocalCheckpointTrigger},
		{method: "POST", path: "/internal/checkpoint-acks", write: true, handler: s.postCheckpointAcks},
	}
}

// triggerBody merges Flink's savepoint body, its stop body and seed 002's.
type triggerBody struct {
	TargetDirectory  string `json:"target-directory"`
	TargetDirectory2 string `json:"targetDirectory"`
	CancelJob        bool   `json:"cancel-job"`
	Drain            bool   `json:"drain"`
	FormatType       string `json:"formatType"`
	TriggerID        string `json:"triggerId"`
	DisposeSavepoint *bool  `json:"dispose_savepoint"`
	NewScale         *int   `json:"new_scale"`
}

func newTriggerID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) readTrigger(c *gin.Context) (*triggerBody, bool) {
	var b triggerBody
	body, ok := readBody(c)
	if !ok {
		return nil, false
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &b); err != nil {
			fail(c, http.StatusBadRequest, "Bad request: the body is not valid JSON: "+err.Error())
			return nil, false
		}
	}
	if b.TargetDirectory == "" {
		b.TargetDirectory = b.TargetDirectory2
	}
	if b.TriggerID != "" && !jobIDPattern.MatchString(b.TriggerID) {
		fail(c, http.StatusBadRequest, "Bad request: triggerId "+quoteShort(b.TriggerID)+" is not 32 lowercase hex characters.")
		return nil, false
	}
	if b.FormatType != "" && b.FormatType != "CANONICAL" && b.FormatType != "NATIVE" {
		fail(c, http.StatusBadRequest, "Bad request: formatType must be CANONICAL or NATIVE.")
		return nil, false
	}
	return &b, true
}

// savepointTarget resolves a target directory: the default savepoint root
// when empty, else it must lie under a configured root (400 otherwise).
func (s *Server) savepointTarget(c *gin.Context, dir string) (string, bool) {
	if dir == "" {
		return s.node.Config().SavepointDir, true
	}
	if s.storage == nil {
		fail(c, http.StatusBadRequest, "Bad request: this node has no savepoint storage.")
		return "", false
	}
	if name, ok := s.storage.Locate(dir); !ok || !strings.HasPrefix(name, "savepoints") {
		fail(c, http.StatusBadRequest, "Bad request: target directory "+quoteShort(dir)+" is not under a configured savepoint root ("+strings.Join(s.savepointRoots(), ", ")+").")
		return "", false
	}
	return dir, true
}

func (s *Server) savepointRoots() []string {
	cfg := s.node.Config()
	return append([]string{cfg.SavepointDir}, cfg.SavepointAllow...)
}

// createTrigger records an async operation and answers Flink's 202.
func (s *Server) createTrigger(c *gin.Context, t fsm.Trigger) {
	if t.ID == "" {
		t.ID = newTriggerID()
	}
	t.CreatedAt = time.Now().UnixMilli()
	err := s.apply(c.Request.Context(), &fsm.TriggerCreated{Trigger: t})
	if err != nil {
		failApply(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"request-id": t.ID})
}

func (s *Server) postTrigger(kind string) gin.HandlerFunc {
	return func(c *gin.Context) {
		id, ok := jobIDParam(c)
		if !ok {
			return
		}
		b, ok := s.readTrigger(c)
		if !ok {
			return
		}
		if _, found := s.node.FSM.Job(id); !found {
			fail(c, http.StatusNotFound, "Job "+id+" not found")
			return
		}
		t := fsm.Trigger{ID: b.TriggerID, JobID: id, Kind: kind, Drain: b.Drain, CancelJob: b.CancelJob, FormatType: b.FormatType}
		if kind != "checkpoint" {
			dir, ok := s.savepointTarget(c, b.TargetDirectory)
			if !ok {
				return
			}
			t.TargetDir = dir
		}
		s.createTrigger(c, t)
	}
}

// postSeedCancel is seed 002's POST /jobs/:jobid/cancel: a plain cancel, or
// a savepoint then cancel when a target directory is given.
func (s *Server) postSeedCancel(c *gin.Context) {
	id, ok := jobIDParam(c)
	if !ok {
		return
	}
	b, ok := s.readTrigger(c)
	if !ok {
		return
	}
	if b.TargetDirectory == "" {
		err := s.apply(c.Request.Context(), &fsm.JobCancel{JobID: id, At: time.Now().UnixMilli()})
		if err != nil {
			failApply(c, err)
			return
		}
		c.JSON(http.StatusAccepted, gin.H{})
		return
	}
	dir, ok := s.savepointTarget(c, b.TargetDirectory)
	if !ok {
		return
	}
	s.createTrigger(c, fsm.Trigger{ID: b.TriggerID, JobID: id, Kind: "savepoint", TargetDir: dir, CancelJob: true})
}

// putVertexParallelism is seed 002's rescale: a checkpoint, then the job
// restarts from it with the vertex at the new parallelism.
func (s *Server) putVertexParallelism(c *gin.Context) {
	id, ok := jobIDParam(c)
	if !ok {
		return
	}
	b, ok := s.readTrigger(c)
	if !ok {
		return
	}
	if b.NewScale == nil {
		fail(c, http.StatusBadRequest, `Bad request: the body must carry {"new_scale": N}.`)
		return
	}
	tid, ok := s.rescaleTo(c, id, map[string]int{c.Param("vertexid"): *b.NewScale}, b.TriggerID)
	if !ok {
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"request-id": tid})
}

func (s *Server) trigger(c *gin.Context) (*fsm.Trigger, bool) {
	id, ok := jobIDParam(c)
	if !ok {
		return nil, false
	}
	tid := c.Param("triggerid")
	t, found := s.node.FSM.Trigger(tid)
	if !found || t.JobID != id {
		fail(c, http.StatusNotFound, "There is no savepoint operation with triggerId="+quoteShort(tid)+" for job "+id+".")
		return nil, false
	}
	return t, true
}

// getSavepointTrigger answers Flink's AsynchronousOperationResult: a
// failure is COMPLETED with operation.failure-cause.
func (s *Server) getSavepointTrigger(c *gin.Context) {
	t, ok := s.trigger(c)
	if !ok {
		return
	}
	asyncResult(c, t, gin.H{"location": t.Location}, "failure-cause")
}

// asyncResult writes Flink's AsynchronousOperationResult for a trigger:
// IN_PROGRESS with no operation, or COMPLETED with the operation's result
// or, on failure, its cause under failureKey (Flink's convention).
func asyncResult(c *gin.Context, t *fsm.Trigger, done gin.H, failureKey string) {
	switch t.Status {
	case fsm.TriggerInProgress:
		c.JSON(http.StatusOK, gin.H{"status": gin.H{"id": "IN_PROGRESS"}, "operation": nil})
	case fsm.TriggerCompleted:
		c.JSON(http.StatusOK, gin.H{"status": gin.H{"id": "COMPLETED"}, "operation": done})
	default:
		c.JSON(http.StatusOK, gin.H{"status": gin.H{"id": "COMPLETED"}, "operation": gin.H{failureKey: failureCause(t.FailureCause)}})
	}
}

func failureCause(msg string) gin.H {
	return gin.H{"class": "org.apache.flink.util.FlinkException", "stack-trace": msg, "serialized-throwable": ""}
}

func (s *Server) getCheckpointTrigger(c *gin.Context) {
	t, ok := s.trigger(c)
	if !ok {
		return
	}
	asyncResult(c, t, gin.H{"checkpointId": t.CheckpointID}, "failureCause")
}

func (s *Server) jobForCheckpoints(c *gin.Context) (*fsm.Job, *jobgraph.JobGraph, bool) {
	id, ok := jobIDParam(c)
	if !ok {
		return nil, nil, false
	}
	j, found := s.node.FSM.Job(id)
	if !found {
		fail(c, http.StatusNotFound, "Job "+id+" not found")
		return nil, nil, false
	}
	var g jobgraph.JobGraph
	json.Unmarshal(j.Spec, &g)
	return j, &g, true
}

// stats is Flink's MinMaxAvgStatistics with percentiles.
func stats(values []int64) gin.H {
	if len(values) == 0 {
		return gin.H{"min": 0, "max": 0, "avg": 0, "p50": 0, "p90": 0, "p95": 0, "p99": 0, "p999": 0}
	}
	sorted := append([]int64(nil), values...)
	sort.Slice(sorted, func(a, b int) bool { return sorted[a] < sorted[b] })
	var sum int64
	for _, v := range sorted {
		sum += v
	}
	p := func(q float64) float64 { return float64(sorted[int(q*float64(len(sorted)-1))]) }
	return gin.H{"min": sorted[0], "max": sorted[len(sorted)-1], "avg": sum / int64(len(sorted)),
		"p50": p(.5), "p90": p(.9), "p95": p(.95), "p99": p(.99), "p999": p(.999)}
}

func (s *Server) checkpointEntry(cp fsm.Checkpoint, g *jobgraph.JobGraph) gin.H {
	class := map[string]string{fsm.TriggerCompleted: "completed", fsm.TriggerFailed: "failed", fsm.TriggerInProgress: "in_progress"}[cp.Status]
	ctype := "CHECKPOINT"
	if cp.Savepoint {
		ctype = "SAVEPOINT"
	}
	end := cp.CompletedAt
	latestAck := cp.TriggeredAt
	for _, st := range cp.Subtasks {
		if st.AckAt > latestAck {
			latestAck = st.AckAt
		}
	}
	duration := int64(0)
	if end > 0 {
		duration = end - cp.TriggeredAt
	}
	tasks := gin.H{}
	for _, v := range g.Vertices {
		acked, size := 0, int64(0)
		last := int64(0)
		for i := 0; i < v.Parallelism; i++ {
			if st, ok := cp.Subtasks[fsm.SubtaskKey(v.ID, i)]; ok {
				acked++
				size += st.StateSize
				if st.AckAt > last {
					last = st.AckAt
				}
			}
		}
		tasks[v.ID] = gin.H{"id": v.ID, "status": cp.Status, "latest_ack_timestamp": last, "checkpointed_size": size, "state_size": size,
			"end_to_end_duration": max(0, last-cp.TriggeredAt), "alignment_buffered": 0, "processed_data": 0, "persisted_data": 0,
			"num_subtasks": v.Parallelism, "num_acknowledged_subtasks": acked}
	}
	e := gin.H{"className": class, "id": cp.ID, "status": cp.Status, "is_savepoint": cp.Savepoint, "savepointFormat": nil,
		"trigger_timestamp": cp.TriggeredAt, "latest_ack_timestamp": latestAck, "checkpointed_size": cp.StateSize, "state_size": cp.StateSize,
		"end_to_end_duration": duration, "alignment_buffered": 0, "processed_data": 0, "persisted_data": 0,
		"num_subtasks": cp.Total, "num_acknowledged_subtasks": cp.Acknowledged, "checkpoint_type": ctype, "tasks": tasks, "attempt": cp.Attempt}
	if cp.Savepoint {
		e["savepointFormat"] = "CANONICAL"
	}
	switch cp.Status {
	case fsm.TriggerCompleted:
		e["external_path"] = s.storagePath(cp.Dir)
		e["discarded"] = false
	case fsm.TriggerFailed:
		e["failure_timestamp"] = cp.CompletedAt
		e["failure_message"] = cp.Failure
	}
	return e
}

func (s *Server) storagePath(dir string) string {
	if s.storage == nil {
		return dir
	}
	return s.storage.Path(dir)
}

func (s *Server) getCheckpoints(c *gin.Context) {
	j, g, ok := s.jobForCheckpoints(c)
	if !ok {
		return
	}
	st := j.Checkpoints
	var sizes, durations []int64
	history := []gin.H{}
	for i := len(st.History) - 1; i >= 0; i-- {
		cp := st.History[i]
		history = append(history, s.checkpointEntry(cp, g))
		if cp.Status == fsm.TriggerCompleted {
			sizes = append(sizes, cp.StateSize)
			durations = append(durations, cp.CompletedAt-cp.TriggeredAt)
		}
	}
	latest := gin.H{"completed": nil, "savepoint": nil, "failed": nil, "restored": nil}
	if n := len(st.Retained); n > 0 {
		latest["completed"] = s.checkpointEntry(st.Retained[n-1], g)
	}
	if st.LatestSavepoint != nil {
		latest["savepoint"] = s.checkpointEntry(*st.LatestSavepoint, g)
	}
	if st.LatestFailed != nil {
		latest["failed"] = s.checkpointEntry(*st.LatestFailed, g)
	}
	if r := j.Restore; r != nil {
		latest["restored"] = gin.H{"id": r.CheckpointID, "restore_timestamp": r.RestoredAt, "is_savepoint": r.Savepoint, "external_path": s.storagePath(r.Dir)}
	}
	zero := stats(nil)
	c.JSON(http.StatusOK, gin.H{
		"counts": gin.H{"restored": st.Restored, "total": st.Completed + st.Failed + st.InProgress, "in_progress": st.InProgress, "completed": st.Completed, "failed": st.Failed},
		"summary": gin.H{"checkpointed_size": stats(sizes), "state_size": stats(sizes), "end_to_end_duration": stats(durations),
			"alignment_buffered": zero, "processed_data": zero, "persisted_data": zero},
		"latest":  latest,
		"history": history,
	})
}

func (s *Server) getCheckpointConfig(c *gin.Context) {
	_, g, ok := s.jobForCheckpoints(c)
	if !ok {
		return
	}
	cp := g.Checkpointing
	if cp == nil {
		fail(c, http.StatusNotFound, "Checkpointing is not enabled for this job ("+g.JobID+").")
		return
	}
	mode := cp.Mode
	if mode == "" {
		mode = jobgraph.ExactlyOnce
	}
	retained := cp.Retained
	if retained == 0 {
		retained = 1
	}
	c.JSON(http.StatusOK, gin.H{
		"mode": strings.ToLower(mode), "interval": cp.Interval.D().Milliseconds(), "timeout": cp.Timeout.D().Milliseconds(),
		"min_pause": cp.MinPause.D().Milliseconds(), "max_concurrent": 1,
		"externalization": gin.H{"enabled": true, "delete_on_cancellation": false},
		"state_backend":   "dispatcher-keyed-state", "checkpoint_storage": "FileSystemCheckpointStorage",
		"unaligned_checkpoints": false, "tolerable_failed_checkpoints": 0, "aligned_checkpoint_timeout": 0,
		"checkpoints_after_tasks_finish": false, "state_changelog_enabled": false, "retained": retained,
	})
}

func (s *Server) checkpointByID(c *gin.Context, j *fsm.Job) (*fsm.Checkpoint, bool) {
	raw := c.Param("checkpointid")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id < 1 {
		fail(c, http.StatusBadRequest, "Bad request: checkpoint id "+quoteShort(raw)+" is not a positive number.")
		return nil, false
	}
	for i := len(j.Checkpoints.History) - 1; i >= 0; i-- {
		if j.Checkpoints.History[i].ID == id {
			cp := j.Checkpoints.History[i]
			return &cp, true
		}
	}
	fail(c, http.StatusNotFound, fmt.Sprintf("Could not find checkpointing statistics for checkpoint %d.", id))
	return nil, false
}

func (s *Server) getCheckpointDetail(c *gin.Context) {
	j, g, ok := s.jobForCheckpoints(c)
	if !ok {
		return
	}
	cp, ok := s.checkpointByID(c, j)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, s.checkpointEntry(*cp, g))
}

func (s *Server) getCheckpointSubtasks(c *gin.Context) {
	j, g, ok := s.jobForCheckpoints(c)
	if !ok {
		return
	}
	cp, ok := s.checkpointByID(c, j)
	if !ok {
		return
	}
	vid := c.Param("vertexid")
	var v *jobgraph.Vertex
	for _, cand := range g.Vertices {
		if cand.ID == vid {
			v = cand
		}
	}
	if v == nil {
		fail(c, http.StatusNotFound, "Vertex "+quoteShort(vid)+" not found in job "+j.ID)
		return
	}
	subtasks := []gin.H{}
	acked := 0
	for i := 0; i < v.Parallelism; i++ {
		st, ok := cp.Subtasks[fsm.SubtaskKey(vid, i)]
		if !ok {
			subtasks = append(subtasks, gin.H{"index": i, "status": "pending_or_failed"})
			continue
		}
		acked++
		subtasks = append(subtasks, gin.H{"index": i, "status": "completed", "ack_timestamp": st.AckAt,
			"end_to_end_duration": st.AckAt - cp.TriggeredAt, "state_size": st.StateSize, "checkpointed_size": st.StateSize,
			"checkpoint":  gin.H{"sync": st.SyncMs, "async": st.AsyncMs},
			"alignment":   gin.H{"buffered": 0, "processed": 0, "persisted": 0, "duration": st.AlignmentMs},
			"start_delay": 0, "unaligned_checkpoint": false, "aborted": false})
	}
	c.JSON(http.StatusOK, gin.H{"id": vid, "status": cp.Status, "num_subtasks": v.Parallelism, "num_acknowledged_subtasks": acked, "subtasks": subtasks})
}

type triggerRequest struct {
	Attempt    int                `json:"attempt"`
	Checkpoint runtime.Checkpoint `json:"checkpoint"`
}

// postLocalCheckpointTrigger runs on the node that hosts source subtasks.
func (s *Server) postLocalCheckpointTrigger(c *gin.Context) {
	id, ok := jobIDParam(c)
	if !ok {
		return
	}
	var req triggerRequest
	if err := json.NewDecoder(c.Request.Body).Decode(&req); err != nil {
		fail(c, http.StatusBadRequest, "Bad request: "+err.Error())
		return
	}
	cp, ok := s.runtime.(Checkpointer)
	if !ok {
		fail(c, http.StatusServiceUnavailable, "This node runs no tasks.")
		return
	}
	if err := cp.TriggerCheckpoint(id, req.Attempt, req.Checkpoint); err != nil {
		fail(c, http.StatusConflict, err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (s *Server) postCheckpointAcks(c *gin.Context) {
	var acks []runtime.CheckpointAck
	if err := json.NewDecoder(c.Request.Body).Decode(&acks); err != nil {
		fail(c, http.StatusBadRequest, "Bad request: "+err.Error())
		return
	}
	if s.coordinator != nil {
		s.coordinator.Ack(c.Request.Context(), acks)
	}
	c.JSON(http.StatusOK, gin.H{"received": len(acks)})
}

// TriggerOn asks a node to start a checkpoint at its sources (the
// coordinator's side of postLocalCheckpointTrigger).
func (s *Server) TriggerOn(ctx context.Context, nodeID, jobID string, attempt int, cp runtime.Checkpoint) error {
	if nodeID == s.node.ID() {
		if t, ok := s.runtime.(Checkpointer); ok {
			return t.TriggerCheckpoint(jobID, attempt, cp)
		}
	}
	addr := ""
	for _, m := range s.node.Members() {
		if m.ID == nodeID {
			addr = m.HTTPAddress
		}
	}
	if addr == "" {
		return fmt.Errorf("no address for node %s", nodeID)
	}
	body, _ := json.Marshal(triggerRequest{Attempt: attempt, Checkpoint: cp})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/internal/jobs/"+jobID+"/checkpoint-trigger", strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	s.peerAuth(req)
	resp, err := s.peerClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		return fmt.Errorf("node %s: %s %v", nodeID, resp.Status, eb.Errors)
	}
	return nil
}

// resolveSavepoint turns a savepoint path a client gives into what a new
// job restores from. The path must lie under a savepoint root and name a
// savepoint (or retained checkpoint) this cluster completed.
func (s *Server) resolveSavepoint(c *gin.Context, path string, allowNonRestored bool) (*fsm.RestoreRef, bool) {
	if s.storage == nil {
		fail(c, http.StatusBadRequest, "Bad request: this node has no savepoint storage.")
		return nil, false
	}
	name, ok := s.storage.Locate(path)
	if !ok {
		fail(c, http.StatusBadRequest, "Bad request: savepointPath "+quoteShort(path)+" is not under a configured savepoint or checkpoint root.")
		return nil, false
	}
	for _, j := range s.node.FSM.Jobs() {
		cands := append([]fsm.Checkpoint(nil), j.Checkpoints.History...)
		cands = append(cands, j.Checkpoints.Retained...)
		if sp := j.Checkpoints.LatestSavepoint; sp != nil {
			cands = append(cands, *sp)
		}
		for _, cp := range cands {
			if cp.Dir == name && cp.Status == fsm.TriggerCompleted {
				return &fsm.RestoreRef{CheckpointID: cp.ID, Dir: cp.Dir, Attempt: cp.Attempt, Savepoint: cp.Savepoint, AllowNonRestoredState: allowNonRestored}, true
			}
		}
	}
	fail(c, http.StatusBadRequest, "Bad request: "+quoteShort(path)+" is not a completed savepoint or checkpoint of this cluster.")
	return nil, false
}

// rescaleTo validates new parallelism per vertex and records a rescale
// trigger. Edges that need equal parallelism (forward) must keep it.
func (s *Server) rescaleTo(c *gin.Context, jobID string, want map[string]int, triggerID string) (string, bool) {
	j, found := s.node.FSM.Job(jobID)
	if !found {
		fail(c, http.StatusNotFound, "Job "+jobID+" not found")
		return "", false
	}
	var g jobgraph.JobGraph
	if err := json.Unmarshal(j.Spec, &g); err != nil {
		fail(c, http.StatusInternalServerError, "Cannot read the stored spec: "+err.Error())
		return "", false
	}
	par := map[string]int{}
	for _, v := range g.Vertices {
		par[v.ID] = v.Parallelism
	}
	for vid, n := range want {
		if _, ok := par[vid]; !ok {
			fail(c, http.StatusNotFound, "Vertex "+quoteShort(vid)+" not found in job "+jobID)
			return "", false
		}
		if n < 1 || n > g.MaxParallelism {
			fail(c, http.StatusBadRequest, fmt.Sprintf("Bad request: parallelism %d of vertex %s must be between 1 and the job's maxParallelism %d.", n, vid, g.MaxParallelism))
			return "", false
		}
		par[vid] = n
	}
	for _, v := range g.Vertices {
		for _, in := range v.Inputs {
			if (in.Ship == jobgraph.ShipForward || in.Ship == "") && par[in.From] != par[v.ID] {
				fail(c, http.StatusBadRequest, fmt.Sprintf("Bad request: %s has a forward input from %s, which needs equal parallelism (%d vs %d).", v.ID, in.From, par[v.ID], par[in.From]))
				return "", false
			}
		}
	}
	if triggerID == "" {
		triggerID = newTriggerID()
	}
	t := fsm.Trigger{ID: triggerID, JobID: jobID, Kind: "rescale", TargetDir: s.node.Config().SavepointDir, Rescale: want, CreatedAt: time.Now().UnixMilli()}
	err := s.apply(c.Request.Context(), &fsm.TriggerCreated{Trigger: t})
	if err != nil {
		failApply(c, err)
		return "", false
	}
	return triggerID, true
}

// putResourceRequirements is Flink's adaptive-scheduler route; here the
// upper bound becomes the vertex's parallelism, through a rescale.
func (s *Server) putResourceRequirements(c *gin.Context) {
	id, ok := jobIDParam(c)
	if !ok {
		return
	}
	var body map[string]struct {
		Parallelism struct {
			LowerBound int `json:"lowerBound"`
			UpperBound int `json:"upperBound"`
		} `json:"parallelism"`
	}
	if err := json.NewDecoder(c.Request.Body).Decode(&body); err != nil || len(body) == 0 {
		fail(c, http.StatusBadRequest, `Bad request: expected {"<vertexId>": {"parallelism": {"lowerBound": L, "upperBound": U}}}.`)
		return
	}
	want := map[string]int{}
	for vid, r := range body {
		if r.Parallelism.LowerBound > r.Parallelism.UpperBound {
			fail(c, http.StatusBadRequest, "Bad request: lowerBound exceeds upperBound for vertex "+vid+".")
			return
		}
		want[vid] = r.Parallelism.UpperBound
	}
	if _, ok := s.rescaleTo(c, id, want, ""); !ok {
		return
	}
	c.Status(http.StatusOK)
}

func (s *Server) getResourceRequirements(c *gin.Context) {
	_, g, ok := s.jobForCheckpoints(c)
	if !ok {
		return
	}
	out := gin.H{}
	for _, v := range g.Vertices {
		out[v.ID] = gin.H{"parallelism": gin.H{"lowerBound": 1, "upperBound": v.Parallelism}}
	}
	c.JSON(http.StatusOK, out)
}

// patchRescaling sets every vertex to ?parallelism=N (Flink's job-level
// rescaling, which Flink itself disabled; it works here).
func (s *Server) patchRescaling(c *gin.Context) {
	id, ok := jobIDParam(c)
	if !ok {
		return
	}
	n, err := strconv.Atoi(c.Query("parallelism"))
	if err != nil {
		fail(c, http.StatusBadRequest, "Bad request: query parameter parallelism must be a number.")
		return
	}
	_, g, ok := s.jobForCheckpoints(c)
	if !ok {
		return
	}
	want := map[string]int{}
	for _, v := range g.Vertices {
		want[v.ID] = n
	}
	tid, ok := s.rescaleTo(c, id, want, c.Query("triggerId"))
	if !ok {
		return
	}
	c.JSON(http.StatusOK, gin.H{"request-id": tid})
}

func (s *Server) postSavepointDisposal(c *gin.Context) {
	var body struct {
		Path      string `json:"savepoint-path"`
		TriggerID string `json:"triggerId"`
	}
	if err := json.NewDecoder(c.Request.Body).Decode(&body); err != nil || body.Path == "" {
		fail(c, http.StatusBadRequest, `Bad request: expected {"savepoint-path": "..."}.`)
		return
	}
	if body.TriggerID != "" && !jobIDPattern.MatchString(body.TriggerID) {
		fail(c, http.StatusBadRequest, "Bad request: triggerId must be 32 lowercase hex characters.")
		return
	}
	name, ok := "", s.storage != nil
	if ok {
		name, ok = s.storage.Locate(body.Path)
	}
	if !ok || !strings.HasPrefix(name, "savepoints") || !strings.Contains(name, "/") {
		fail(c, http.StatusBadRequest, "Bad request: "+quoteShort(body.Path)+" is not a savepoint under a configured savepoint root.")
		return
	}
	t := fsm.Trigger{ID: body.TriggerID, Kind: "dispose", TargetDir: body.Path, CreatedAt: time.Now().UnixMilli()}
	if t.ID == "" {
		t.ID = newTriggerID()
	}
	err := s.apply(c.Request.Context(), &fsm.TriggerCreated{Trigger: t})
	if err != nil {
		failApply(c, err)
		return
	}
	done := fsm.TriggerDone{TriggerID: t.ID, Status: fsm.TriggerCompleted, At: time.Now().UnixMilli()}
	if err := s.storage.DeleteDir(c.Request.Context(), name); err != nil {
		done.Status, done.FailureCause = fsm.TriggerFailed, err.Error()
	}
	if res, err := s.node.Apply(c.Request.Context(), &done); err != nil || res.Err != nil {
		failApply(c, errors.Join(err, res.Err))
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"request-id": t.ID})
}

func (s *Server) getDisposal(c *gin.Context) {
	tid := c.Param("triggerid")
	t, found := s.node.FSM.Trigger(tid)
	if !found || t.Kind != "dispose" {
		fail(c, http.StatusNotFound, "There is no savepoint disposal with triggerId="+quoteShort(tid)+".")
		return
	}
	asyncResult(c, t, gin.H{}, "failure-cause")
}

func (s *Server) legacyCancelWithSavepoint(c *gin.Context) {
	id, ok := jobIDParam(c)
	if !ok {
		return
	}
	if _, found := s.node.FSM.Job(id); !found {
		fail(c, http.StatusNotFound, "Job "+id+" not found")
		return
	}
	dir := c.Param("targetDirectory")
	if dir != "" && !strings.HasPrefix(dir, "/") {
		dir = "/" + dir
	}
	target, ok := s.savepointTarget(c, strings.TrimSuffix(dir, "/"))
	if !ok {
		return
	}
	t := fsm.Trigger{ID: newTriggerID(), JobID: id, Kind: "savepoint", TargetDir: target, CancelJob: true, CreatedAt: time.Now().UnixMilli()}
	err := s.apply(c.Request.Context(), &fsm.TriggerCreated{Trigger: t})
	if err != nil {
		failApply(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"status": "accepted", "request-id": t.ID, "location": "/jobs/" + id + "/cancel-with-savepoint/in-progress/" + t.ID})
}

func (s *Server) legacyCancelProgress(c *gin.Context) {
	t, ok := s.trigger(c)
	if !ok {
		return
	}
	switch t.Status {
	case fsm.TriggerInProgress:
		c.JSON(http.StatusOK, gin.H{"status": "in-progress", "request-id": t.ID})
	case fsm.TriggerCompleted:
		c.JSON(http.StatusOK, gin.H{"status": "success", "request-id": t.ID, "savepoint-path": t.Location})
	default:
		c.JSON(http.StatusOK, gin.H{"status": "failed", "request-id": t.ID, "cause": t.FailureCause})
	}
}

package rest

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
	"github.com/dispatcher-dev/dispatcher/runtime"
)

// flinkRoutes are Flink's monitoring routes beyond the job list (issue 4):
// job details, vertices, subtasks, metrics, task managers. Every one is a
// read answered from this node's replicated state plus live subtask metrics
// fetched from the nodes that run the subtasks, so leader and followers give
// the same answers.
func (s *Server) flinkRoutes() []route {
	const v = "/jobs/:jobid/vertices/:vertexid"
	return []route{
		// Cluster.
		{method: "GET", path: "/jobmanager/config", handler: s.getJobManagerConfig},
		{method: "GET", path: "/jobmanager/metrics", handler: s.getJobManagerMetrics},
		{method: "GET", path: "/taskmanagers", handler: s.getTaskManagers},
		{method: "GET", path: "/taskmanagers/metrics", handler: s.getTaskManagersMetrics},
		{method: "GET", path: "/taskmanagers/:tmid", handler: s.getTaskManager},
		{method: "GET", path: "/taskmanagers/:tmid/metrics", handler: s.getTaskManagerMetrics},
		{method: "GET", path: "/internal/node-info", handler: s.getLocalNodeInfo},

		// Jobs (GET /jobs and GET /jobs/:jobid are in jobs.go).
		{method: "GET", path: "/jobs/overview", handler: s.getJobsOverview},
		{method: "GET", path: "/jobs/metrics", handler: s.getJobsMetrics},
		{method: "GET", path: "/jobs/:jobid/status", handler: s.getJobStatus},
		{method: "GET", path: "/jobs/:jobid/config", handler: s.getJobConfig},
		{method: "GET", path: "/jobs/:jobid/plan", handler: s.getJobPlan},
		{method: "GET", path: "/jobs/:jobid/exceptions", handler: s.getJobExceptions},
		{method: "GET", path: "/jobs/:jobid/accumulators", handler: s.getJobAccumulators},
		{method: "GET", path: "/jobs/:jobid/metrics", handler: s.getJobMetrics},
		{method: "GET", path: "/jobs/:jobid/execution-result", handler: s.getJobExecutionResult},

		// Vertices and subtasks.
		{method: "GET", path: "/jobs/:jobid/vertices", handler: s.getJob},
		{method: "GET", path: v, handler: s.getVertex},
		{method: "GET", path: v + "/subtasktimes", handler: s.getVertexSubtaskTimes},
		{method: "GET", path: v + "/taskmanagers", handler: s.getVertexTaskManagers},
		{method: "GET", path: v + "/accumulators", handler: s.getVertexAccumulators},
		{method: "GET", path: v + "/metrics", handler: s.getVertexMetrics},
		{method: "GET", path: v + "/watermarks", handler: s.getVertexWatermarks},
		{method: "GET", path: v + "/subtasks/accumulators", handler: s.getSubtasksAccumulators},
		{method: "GET", path: v + "/subtasks/metrics", handler: s.getSubtasksMetrics},
		{method: "GET", path: v + "/subtasks/:subtaskindex", handler: s.getSubtask},
		{method: "GET", path: v + "/subtasks/:subtaskindex/metrics", handler: s.getSubtaskMetrics},
		{method: "GET", path: v + "/subtasks/:subtaskindex/attempts/:attempt", handler: s.getSubtaskAttempt},
		{method: "GET", path: v + "/subtasks/:subtaskindex/attempts/:attempt/accumulators", handler: s.getSubtaskAttemptAccumulators},
	}
}

// jobView is one job as the Flink routes see it: the replicated record, its
// stored spec, and (fetched on first use) the live status of its subtasks.
type jobView struct {
	s     *Server
	ctx   context.Context
	job   *fsm.Job
	graph *jobgraph.JobGraph
	// order is the vertices in topological order (sources first).
	order []*jobgraph.Vertex
	now   int64

	live  map[string]runtime.SubtaskStatus
	addrs map[string]string
}

// loadJob answers 400 for a malformed job id and 404 for an unknown one.
func (s *Server) loadJob(c *gin.Context) (*jobView, bool) {
	id, ok := jobIDParam(c)
	if !ok {
		return nil, false
	}
	j, found := s.node.FSM.Job(id)
	if !found {
		fail(c, http.StatusNotFound, "Job "+id+" not found")
		return nil, false
	}
	g, order := graphOf(j)
	return &jobView{s: s, ctx: c.Request.Context(), job: j, graph: g, order: order, now: time.Now().UnixMilli()}, true
}

// metrics returns the live status of the current attempt's subtasks, by
// fsm.SubtaskKey; a subtask whose node did not answer is missing.
func (v *jobView) metrics() map[string]runtime.SubtaskStatus {
	if v.live == nil {
		v.live = v.s.subtasks.get(v.ctx, v.job)
	}
	return v.live
}

// endpoint is where a node serves its API (Flink's task manager endpoint);
// the node id when the node is gone from the membership.
func (v *jobView) endpoint(node string) string {
	if node == "" {
		return unassigned
	}
	if v.addrs == nil {
		v.addrs = map[string]string{}
		for _, m := range v.s.node.Members() {
			if m.HTTPAddress != "" {
				v.addrs[m.ID] = m.HTTPAddress
			}
		}
	}
	if a, ok := v.addrs[node]; ok {
		return a
	}
	return node
}

// unassigned is Flink's endpoint of a subtask not deployed yet.
const unassigned = "(unassigned)"

// vertexParam resolves :vertexid: 404 when the job has no such vertex.
func (v *jobView) vertexParam(c *gin.Context) (*jobgraph.Vertex, bool) {
	id := c.Param("vertexid")
	if vx := v.vertex(id); vx != nil {
		return vx, true
	}
	fail(c, http.StatusNotFound, "JobVertex "+quoteShort(id)+" not found in job "+v.job.ID+".")
	return nil, false
}

// vertex returns the job's vertex with this id, or nil.
func (v *jobView) vertex(id string) *jobgraph.Vertex {
	for _, vx := range v.order {
		if vx.ID == id {
			return vx
		}
	}
	return nil
}

// intParam parses a non-negative integer path parameter; Flink answers 400
// for one it cannot parse.
func intParam(c *gin.Context, name string) (int, bool) {
	raw := c.Param(name)
	n, err := strconv.Atoi(raw)
	if err != nil || n < 0 {
		fail(c, http.StatusBadRequest, "Bad request, could not parse parameters: "+name+" must be a non-negative integer, not "+quoteShort(raw)+".")
		return 0, false
	}
	return n, true
}

// subtaskParam resolves :subtaskindex of vertex vx.
func (v *jobView) subtaskParam(c *gin.Context, vx *jobgraph.Vertex) (subtaskView, bool) {
	i, ok := intParam(c, "subtaskindex")
	if !ok {
		return subtaskView{}, false
	}
	if i >= vx.Parallelism {
		fail(c, http.StatusNotFound, "Invalid subtask index "+strconv.Itoa(i)+" for vertex "+quoteShort(vx.ID)+" (parallelism "+strconv.Itoa(vx.Parallelism)+").")
		return subtaskView{}, false
	}
	return v.subtask(vx, i), true
}

// attemptParam checks :attempt against the subtask's current attempt, the
// only one this cluster keeps.
func attemptParam(c *gin.Context, sv subtaskView) bool {
	n, ok := intParam(c, "attempt")
	if !ok {
		return false
	}
	if n != sv.attempt() {
		fail(c, http.StatusNotFound, "Attempt "+strconv.Itoa(n)+" of subtask "+strconv.Itoa(sv.index)+" not found: only the current attempt ("+strconv.Itoa(sv.attempt())+") is kept.")
		return false
	}
	return true
}

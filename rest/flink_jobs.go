package rest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// Flink's job-level routes.

// jobDetailsInfo is Flink's JobDetailsInfo (GET /jobs/:jobid), followed by
// fields of ours the spec's open schema allows.
type jobDetailsInfo struct {
	JID              string           `json:"jid"`
	Name             string           `json:"name"`
	IsStoppable      bool             `json:"isStoppable"`
	State            string           `json:"state"`
	JobType          string           `json:"job-type"`
	SchedulerType    string           `json:"schedulerType"`
	StartTime        int64            `json:"start-time"`
	EndTime          int64            `json:"end-time"`
	Duration         int64            `json:"duration"`
	MaxParallelism   int              `json:"maxParallelism"`
	Now              int64            `json:"now"`
	Timestamps       map[string]int64 `json:"timestamps"`
	Vertices         []jobVertexInfo  `json:"vertices"`
	StatusCounts     map[string]int   `json:"status-counts"`
	Plan             flinkPlan        `json:"plan"`
	PendingOperators int              `json:"pending-operators"`

	// Attempt counts deployments (1 = first); Restarts counts restarts;
	// Reason says why a job waits or failed; Failures is the raw exception
	// history, oldest first.
	Attempt  int           `json:"attempt"`
	Restarts int           `json:"restarts"`
	Reason   string        `json:"reason"`
	Failures []fsm.Failure `json:"failures"`
}

// jobVertexInfo is Flink's JobDetailsVertexInfo.
type jobVertexInfo struct {
	ID             string         `json:"id"`
	Name           string         `json:"name"`
	MaxParallelism int            `json:"maxParallelism"`
	Parallelism    int            `json:"parallelism"`
	Status         string         `json:"status"`
	StartTime      int64          `json:"start-time"`
	EndTime        int64          `json:"end-time"`
	Duration       int64          `json:"duration"`
	Tasks          map[string]int `json:"tasks"`
	Metrics        ioMetrics      `json:"metrics"`
}

// getJob is GET /jobs/:jobid and, as in Flink's legacy API, GET
// /jobs/:jobid/vertices.
func (s *Server) getJob(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, v.details())
}

func (v *jobView) details() jobDetailsInfo {
	j := v.job
	out := jobDetailsInfo{
		JID: j.ID, Name: j.Name, State: j.State, JobType: "STREAMING", SchedulerType: "Default",
		StartTime: j.StartTime, EndTime: j.EndTime, Duration: jobDuration(j, v.now), MaxParallelism: v.graph.MaxParallelism,
		Now: v.now, Timestamps: jobTimestamps(j), Vertices: []jobVertexInfo{}, Plan: v.plan(),
		Attempt: j.Attempt, Restarts: j.Restarts, Reason: j.Reason, Failures: j.Failures,
	}
	if out.Failures == nil {
		out.Failures = []fsm.Failure{}
	}
	var vertexStates []string
	for _, vx := range v.order {
		subs := v.subtasks(vx)
		states := statesOf(subs)
		start, end, dur := subtaskSpan(subs, v.now)
		info := jobVertexInfo{
			ID: vx.ID, Name: vx.Name, MaxParallelism: v.graph.MaxParallelism, Parallelism: vx.Parallelism,
			Status: aggregateState(states), StartTime: start, EndTime: end, Duration: dur,
			Tasks: stateCounts(states), Metrics: sumIOMetrics(subs),
		}
		vertexStates = append(vertexStates, info.Status)
		out.Vertices = append(out.Vertices, info)
	}
	// Flink counts vertices, not subtasks, by state here.
	out.StatusCounts = stateCounts(vertexStates)
	return out
}

// jobDuration is Flink's: up to the end, or up to now while running.
func jobDuration(j *fsm.Job, now int64) int64 {
	if j.EndTime > 0 {
		return j.EndTime - j.StartTime
	}
	return now - j.StartTime
}

// jobTimestamps has every JobStatus, 0 for those never reached.
func jobTimestamps(j *fsm.Job) map[string]int64 {
	out := make(map[string]int64, len(jobStatuses))
	for _, s := range jobStatuses {
		out[s] = j.Timestamps[s]
	}
	return out
}

// jobDetails is Flink's JobDetails, an entry of GET /jobs/overview.
type jobDetails struct {
	JID              string         `json:"jid"`
	Name             string         `json:"name"`
	State            string         `json:"state"`
	JobType          string         `json:"jobType"`
	SchedulerType    string         `json:"schedulerType"`
	StartTime        int64          `json:"start-time"`
	EndTime          int64          `json:"end-time"`
	Duration         int64          `json:"duration"`
	LastModification int64          `json:"last-modification"`
	PendingOperators int            `json:"pending-operators"`
	Tasks            map[string]int `json:"tasks"`
}

func (s *Server) getJobsOverview(c *gin.Context) {
	now := time.Now().UnixMilli()
	out := []jobDetails{}
	for _, j := range s.node.FSM.Jobs() {
		_, order := graphOf(j)
		var states []string
		for _, vx := range order {
			for i := 0; i < vx.Parallelism; i++ {
				states = append(states, replicatedState(j, vx.ID, i))
			}
		}
		tasks := map[string]int{"total": len(states)}
		for st, n := range stateCounts(states) {
			tasks[strings.ToLower(st)] = n
		}
		// Flink 1.x's "pending": not running yet.
		tasks["pending"] = tasks["created"] + tasks["scheduled"] + tasks["deploying"] + tasks["initializing"]
		out = append(out, jobDetails{
			JID: j.ID, Name: j.Name, State: j.State, JobType: "STREAMING", SchedulerType: "Default",
			StartTime: j.StartTime, EndTime: j.EndTime, Duration: jobDuration(j, now),
			LastModification: lastModification(j), Tasks: tasks,
		})
	}
	c.JSON(http.StatusOK, gin.H{"jobs": out})
}

// lastModification is the time of the job's latest recorded transition.
func lastModification(j *fsm.Job) int64 {
	last := j.StartTime
	for _, t := range j.Timestamps {
		last = max(last, t)
	}
	for _, st := range j.Subtasks {
		for _, t := range st.Timestamps {
			last = max(last, t)
		}
	}
	return last
}

func (s *Server) getJobStatus(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": v.job.State})
}

// flinkPlan is Flink's Plan: one node per vertex, with its inputs.
type flinkPlan struct {
	JID   string          `json:"jid"`
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Nodes []flinkPlanNode `json:"nodes"`
}

type flinkPlanNode struct {
	ID                  string           `json:"id"`
	Parallelism         int              `json:"parallelism"`
	Operator            string           `json:"operator"`
	OperatorStrategy    string           `json:"operator_strategy"`
	Description         string           `json:"description"`
	Inputs              []flinkPlanInput `json:"inputs,omitempty"`
	OptimizerProperties map[string]any   `json:"optimizer_properties"`
}

type flinkPlanInput struct {
	Num          int    `json:"num"`
	ID           string `json:"id"`
	ShipStrategy string `json:"ship_strategy"`
	Exchange     string `json:"exchange"`
	// Key is the hash key of a HASH input (ours).
	Key string `json:"key,omitempty"`
}

func (v *jobView) plan() flinkPlan { return planFor(v.job.ID, v.job.Name, v.order) }

// planFor draws vertices in topological order as Flink's plan; a running
// job and a bundle's plan (GET /jars/:jarid/plan) use the same drawing.
func planFor(jid, name string, order []*jobgraph.Vertex) flinkPlan {
	out := flinkPlan{JID: jid, Name: name, Type: "STREAMING", Nodes: []flinkPlanNode{}}
	parallelism := map[string]int{}
	for _, vx := range order {
		parallelism[vx.ID] = vx.Parallelism
	}
	for _, vx := range order {
		n := flinkPlanNode{ID: vx.ID, Parallelism: vx.Parallelism, Operator: vx.Operator, OperatorStrategy: "",
			Description: vx.Name, OptimizerProperties: map[string]any{}}
		for i, in := range vx.Inputs {
			ship := in.Ship
			if ship == "" {
				// Parse's default, for specs stored before it was filled in.
				ship = jobgraph.ShipRebalance
				if parallelism[in.From] == vx.Parallelism {
					ship = jobgraph.ShipForward
				}
			}
			n.Inputs = append(n.Inputs, flinkPlanInput{Num: i, ID: in.From, ShipStrategy: strings.ToUpper(string(ship)),
				Exchange: "pipelined_bounded", Key: in.Key})
		}
		out.Nodes = append(out.Nodes, n)
	}
	return out
}

func (s *Server) getJobPlan(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, gin.H{"plan": v.plan()})
}

// getJobConfig is Flink's job config: {jid, name, execution-config}, the
// execution config drawn from the stored spec, which follows as "spec".
func (s *Server) getJobConfig(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	g := v.graph
	user := map[string]string{}
	for k, p := range g.Params {
		if str, isStr := p.(string); isStr {
			user[k] = str
		} else {
			b, _ := json.Marshal(p)
			user[k] = string(b)
		}
	}
	parallelism := g.Parallelism
	if parallelism == 0 {
		parallelism = -1
	}
	c.JSON(http.StatusOK, gin.H{
		"jid":  v.job.ID,
		"name": v.job.Name,
		"execution-config": gin.H{
			"execution-mode":    "PIPELINED",
			"restart-strategy":  restartDescription(g.RestartStrategy),
			"job-parallelism":   parallelism,
			"object-reuse-mode": false,
			"user-config":       user,
		},
		"spec": json.RawMessage(v.job.Spec),
	})
}

// restartDescription words a restart strategy the way Flink describes its
// own in the job config.
func restartDescription(r *jobgraph.RestartStrategy) string {
	if r == nil {
		return "Restart deactivated."
	}
	switch r.Type {
	case jobgraph.RestartFixedDelay:
		return fmt.Sprintf("Restart with fixed delay (%s). #%d restart attempts.", r.Delay.D(), r.Attempts)
	case jobgraph.RestartExponentialDelay:
		return fmt.Sprintf("Restart with exponential delay: starting at %s, increasing by %g, with maximum %s. Delay resets after %s with jitter %g.",
			r.InitialBackoff.D(), r.BackoffMultiplier, r.MaxBackoff.D(), r.ResetBackoffThreshold.D(), r.JitterFactor)
	default:
		return "Restart deactivated."
	}
}

// exceptionInfo is Flink's ExceptionInfo; rootExceptionInfo adds the
// failures that happened alongside (Flink's concurrentExceptions).
type exceptionInfo struct {
	ExceptionName string            `json:"exceptionName"`
	Stacktrace    string            `json:"stacktrace"`
	Timestamp     int64             `json:"timestamp"`
	TaskName      string            `json:"taskName,omitempty"`
	Endpoint      string            `json:"endpoint,omitempty"`
	TaskManagerID string            `json:"taskManagerId,omitempty"`
	FailureLabels map[string]string `json:"failureLabels"`
}

type rootExceptionInfo struct {
	exceptionInfo
	ConcurrentExceptions []exceptionInfo `json:"concurrentExceptions"`
}

// legacyException is an entry of the deprecated all-exceptions list.
type legacyException struct {
	Exception     string `json:"exception"`
	Task          string `json:"task"`
	Location      string `json:"location"`
	Timestamp     int64  `json:"timestamp"`
	TaskManagerID string `json:"taskManagerId"`
}

type jobExceptions struct {
	RootException    *string           `json:"root-exception,omitempty"`
	Timestamp        *int64            `json:"timestamp,omitempty"`
	AllExceptions    []legacyException `json:"all-exceptions"`
	Truncated        bool              `json:"truncated"`
	ExceptionHistory exceptionHistory  `json:"exceptionHistory"`
}

type exceptionHistory struct {
	Entries   []rootExceptionInfo `json:"entries"`
	Truncated bool                `json:"truncated"`
}

// defaultMaxExceptions is Flink's default number of exceptions reported.
const defaultMaxExceptions = 20

// getJobExceptions is Flink's exception history: one entry per failed
// attempt, newest first, whose root is the attempt's first failure and
// whose concurrentExceptions are the attempt's later ones; plus the
// deprecated root-exception, timestamp, all-exceptions (the failures of the
// latest failed attempt) and truncated. Failures carry no labels, so a
// failureLabelFilter leaves no entry.
func (s *Server) getJobExceptions(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	limit := defaultMaxExceptions
	if raw, set := c.GetQuery("maxExceptions"); set && raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			fail(c, http.StatusBadRequest, "Bad request, could not parse parameters: maxExceptions must be a non-negative integer, not "+quoteShort(raw)+".")
			return
		}
		limit = n
	}
	filter := c.QueryArray("failureLabelFilter")
	for _, f := range filter {
		for _, kv := range splitQueryList(f) {
			if k, _, found := strings.Cut(kv, ":"); !found || k == "" {
				fail(c, http.StatusBadRequest, "Bad request, could not parse parameters: failureLabelFilter "+quoteShort(kv)+" is not key:value.")
				return
			}
		}
	}
	labelled := len(splitQueryList(strings.Join(filter, ","))) > 0
	groups := v.failureGroups()
	out := jobExceptions{AllExceptions: []legacyException{}, ExceptionHistory: exceptionHistory{Entries: []rootExceptionInfo{}}}
	if len(groups) > 0 {
		for i := len(groups) - 1; i >= 0 && !labelled; i-- {
			g := groups[i]
			root := rootExceptionInfo{exceptionInfo: v.exception(g[0]), ConcurrentExceptions: []exceptionInfo{}}
			for _, f := range g[1:] {
				root.ConcurrentExceptions = append(root.ConcurrentExceptions, v.exception(f))
			}
			out.ExceptionHistory.Entries = append(out.ExceptionHistory.Entries, root)
		}
		latest := groups[len(groups)-1]
		rootMsg, ts := latest[0].Message, latest[0].Timestamp
		if v.job.State == fsm.JobFailed && v.job.Reason != "" {
			rootMsg = v.job.Reason
		}
		out.RootException, out.Timestamp = &rootMsg, &ts
		for _, f := range latest {
			e := v.exception(f)
			out.AllExceptions = append(out.AllExceptions, legacyException{Exception: f.Message, Task: e.TaskName,
				Location: e.Endpoint, Timestamp: f.Timestamp, TaskManagerID: f.Node})
		}
	}
	if len(out.ExceptionHistory.Entries) > limit {
		out.ExceptionHistory.Entries = out.ExceptionHistory.Entries[:limit]
		out.ExceptionHistory.Truncated = true
	}
	if len(out.AllExceptions) > limit {
		out.AllExceptions = out.AllExceptions[:limit]
		out.Truncated = true
	}
	c.JSON(http.StatusOK, out)
}

// failureGroups splits the exception history by attempt, oldest first,
// each group in time order (nodes report in batches, so the history is in
// order of arrival).
func (v *jobView) failureGroups() [][]fsm.Failure {
	var groups [][]fsm.Failure
	for i, f := range v.job.Failures {
		if i == 0 || f.Attempt != v.job.Failures[i-1].Attempt {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], f)
	}
	for _, g := range groups {
		sort.SliceStable(g, func(a, b int) bool { return g[a].Timestamp < g[b].Timestamp })
	}
	return groups
}

// exception draws a failure as Flink's ExceptionInfo: the name is the
// message's first line (Go errors have no class), the stack trace the whole
// message; a failure of no particular subtask (a lost node) has no task.
func (v *jobView) exception(f fsm.Failure) exceptionInfo {
	name := f.Message
	if i := strings.IndexByte(name, '\n'); i >= 0 {
		name = name[:i]
	}
	if len(name) > 200 {
		name = name[:200] + "..."
	}
	e := exceptionInfo{ExceptionName: name, Stacktrace: f.Message, Timestamp: f.Timestamp, FailureLabels: map[string]string{}}
	if f.VertexID != "" && f.Subtask >= 0 {
		vname, p := f.VertexID, 0
		if vx := v.vertex(f.VertexID); vx != nil {
			vname, p = vx.Name, vx.Parallelism
		}
		e.TaskName = fmt.Sprintf("%s (%d/%d)#%d", vname, f.Subtask+1, p, max(0, f.Attempt-1))
	}
	if f.Node != "" {
		e.Endpoint, e.TaskManagerID = v.endpoint(f.Node), f.Node
	}
	return e
}

// getJobAccumulators is Flink's JobAccumulatorsInfo: the subtasks' counters
// summed per name. Values cannot be Java-serialized, so
// serialized-user-task-accumulators is always empty.
func (s *Server) getJobAccumulators(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	var all []subtaskView
	for _, vx := range v.order {
		all = append(all, v.subtasks(vx)...)
	}
	c.JSON(http.StatusOK, gin.H{
		"job-accumulators":                  []any{},
		"user-task-accumulators":            accumulatorsOf(all),
		"serialized-user-task-accumulators": gin.H{},
	})
}

// jobMetricValues are Flink's job metrics, from the replicated record.
func jobMetricValues(j *fsm.Job, now int64) []metricValue {
	ts := j.Timestamps
	uptime, downtime, restarting := int64(0), int64(0), int64(0)
	switch {
	case fsm.TerminalJobState(j.State):
		uptime, downtime = -1, -1 // Flink's NO_LONGER_RUNNING
	case j.State == fsm.JobRunning:
		uptime = now - ts[fsm.JobRunning]
	case j.State == fsm.JobFailing || j.State == fsm.JobRestarting:
		since := ts[j.State]
		if f := ts[fsm.JobFailing]; f > 0 && f <= since && f >= ts[fsm.JobRunning] {
			since = f
		}
		downtime = now - since
	}
	if r := ts[fsm.JobRestarting]; r > 0 {
		if j.State == fsm.JobRestarting {
			restarting = now - r
		} else if run := ts[fsm.JobRunning]; run > r {
			restarting = run - r
		}
	}
	return []metricValue{
		{"numRestarts", strconv.Itoa(j.Restarts)},
		{"fullRestarts", strconv.Itoa(j.Restarts)},
		{"uptime", metricInt(uptime)},
		{"downtime", metricInt(downtime)},
		{"restartingTime", metricInt(restarting)},
	}
}

func (s *Server) getJobMetrics(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	answerMetrics(c, jobMetricValues(v.job, v.now))
}

// getJobsMetrics aggregates job metrics over ?jobs= (all jobs when absent;
// unknown ids are skipped, malformed ones are 400).
func (s *Server) getJobsMetrics(c *gin.Context) {
	var want map[string]bool
	if ids := splitQueryList(strings.Join(c.QueryArray("jobs"), ",")); len(ids) > 0 {
		want = map[string]bool{}
		for _, id := range ids {
			if !jobIDPattern.MatchString(id) {
				fail(c, http.StatusBadRequest, "Bad request, could not parse parameters: job id "+quoteShort(id)+" is not 32 lowercase hex characters.")
				return
			}
			want[id] = true
		}
	}
	now := time.Now().UnixMilli()
	var entities [][]metricValue
	jobs := s.node.FSM.Jobs()
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].ID < jobs[b].ID })
	for _, j := range jobs {
		if want == nil || want[j.ID] {
			entities = append(entities, jobMetricValues(j, now))
		}
	}
	answerAggregated(c, entities)
}

// getJobExecutionResult is Flink's JobExecutionResultResponseBody, in the
// names Flink's JobResultSerializer writes: IN_PROGRESS until the job is
// terminal, then COMPLETED with the result. Accumulator values would need
// Java serialization, so accumulator-results is empty; failure-cause has
// class and stack-trace but no serialized-throwable.
func (s *Server) getJobExecutionResult(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	j := v.job
	if !fsm.TerminalJobState(j.State) {
		c.JSON(http.StatusOK, gin.H{"status": gin.H{"id": "IN_PROGRESS"}})
		return
	}
	status := map[string]string{fsm.JobFinished: "SUCCEEDED", fsm.JobFailed: "FAILED", fsm.JobCanceled: "CANCELED"}[j.State]
	result := gin.H{
		"id": j.ID, "name": j.Name, "application-status": status, "accumulator-results": gin.H{},
		"net-runtime": max(0, j.EndTime-j.StartTime), "start-time": j.StartTime, "end-time": j.EndTime,
	}
	if j.State == fsm.JobFailed {
		trace := j.Reason
		if n := len(j.Failures); n > 0 && !strings.Contains(trace, j.Failures[n-1].Message) {
			trace = strings.TrimSpace(trace + "\n" + j.Failures[n-1].Message)
		}
		result["failure-cause"] = gin.H{"class": "dispatcher.JobExecutionException", "stack-trace": trace}
	}
	c.JSON(http.StatusOK, gin.H{"status": gin.H{"id": "COMPLETED"}, "job-execution-result": result})
}

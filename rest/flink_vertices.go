package rest

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"net/http"
	"sort"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/fsm"
)

// Flink's vertex and subtask routes. A vertex id is the spec's vertex id
// (Flink uses 32-hex JobVertexIDs); only the current attempt of each
// subtask is kept, so older attempts are 404.

// subtaskAttemptDetails is Flink's SubtaskExecutionAttemptDetailsInfo.
type subtaskAttemptDetails struct {
	Subtask        int              `json:"subtask"`
	Status         string           `json:"status"`
	Attempt        int              `json:"attempt"`
	Endpoint       string           `json:"endpoint"`
	StartTime      int64            `json:"start-time"`
	EndTime        int64            `json:"end-time"`
	Duration       int64            `json:"duration"`
	Metrics        ioMetrics        `json:"metrics"`
	TaskManagerID  string           `json:"taskmanager-id"`
	StatusDuration map[string]int64 `json:"status-duration"`
}

func (v *jobView) attemptDetails(sv subtaskView) subtaskAttemptDetails {
	tm := sv.node()
	if tm == "" {
		tm = unassigned
	}
	return subtaskAttemptDetails{
		Subtask: sv.index, Status: sv.state(), Attempt: sv.attempt(), Endpoint: v.endpoint(sv.node()),
		StartTime: sv.startTime(), EndTime: sv.endTime(), Duration: sv.duration(), Metrics: sv.ioMetrics(),
		TaskManagerID: tm, StatusDuration: sv.statusDuration(),
	}
}

func (s *Server) getVertex(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	subs := v.subtasks(vx)
	details := make([]subtaskAttemptDetails, len(subs))
	for i, sv := range subs {
		details[i] = v.attemptDetails(sv)
	}
	c.JSON(http.StatusOK, gin.H{
		"id": vx.ID, "name": vx.Name, "parallelism": vx.Parallelism, "maxParallelism": v.graph.MaxParallelism,
		"now": v.now, "subtasks": details, "aggregated": aggregateSubtasks(subs),
	})
}

// getSubtask is the current attempt of one subtask.
func (s *Server) getSubtask(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	sv, ok := v.subtaskParam(c, vx)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, v.attemptDetails(sv))
}

func (s *Server) getSubtaskAttempt(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	sv, ok := v.subtaskParam(c, vx)
	if !ok || !attemptParam(c, sv) {
		return
	}
	c.JSON(http.StatusOK, v.attemptDetails(sv))
}

// getVertexSubtaskTimes is Flink's SubtasksTimesInfo: per subtask the time
// it entered each state (0 for states it never entered).
func (s *Server) getVertexSubtaskTimes(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	subs := []gin.H{}
	for _, sv := range v.subtasks(vx) {
		ts := make(map[string]int64, len(executionStates))
		for _, st := range executionStates {
			ts[st] = sv.timestamp(st)
		}
		subs = append(subs, gin.H{"subtask": sv.index, "endpoint": v.endpoint(sv.node()), "duration": sv.duration(), "timestamps": ts})
	}
	c.JSON(http.StatusOK, gin.H{"id": vx.ID, "name": vx.Name, "now": v.now, "subtasks": subs})
}

// getVertexTaskManagers is Flink's JobVertexTaskManagersInfo: the vertex's
// subtasks grouped by the node they run on.
func (s *Server) getVertexTaskManagers(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	byNode := map[string][]subtaskView{}
	for _, sv := range v.subtasks(vx) {
		byNode[sv.node()] = append(byNode[sv.node()], sv)
	}
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	tms := []gin.H{}
	for _, n := range nodes {
		subs := byNode[n]
		states := statesOf(subs)
		start, end, dur := subtaskSpan(subs, v.now)
		id := n
		if id == "" {
			id = unassigned
		}
		tms = append(tms, gin.H{
			"endpoint": v.endpoint(n), "status": aggregateState(states), "start-time": start, "end-time": end,
			"duration": dur, "metrics": sumIOMetrics(subs), "status-counts": stateCounts(states),
			"taskmanager-id": id, "aggregated": aggregateSubtasks(subs),
		})
	}
	c.JSON(http.StatusOK, gin.H{"id": vx.ID, "name": vx.Name, "now": v.now, "taskmanagers": tms})
}

func (s *Server) getVertexAccumulators(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": vx.ID, "user-accumulators": accumulatorsOf(v.subtasks(vx))})
}

func (s *Server) getSubtasksAccumulators(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	subs := []gin.H{}
	for _, sv := range v.subtasks(vx) {
		subs = append(subs, gin.H{"subtask": sv.index, "attempt": sv.attempt(), "endpoint": v.endpoint(sv.node()),
			"user-accumulators": accumulatorsOf([]subtaskView{sv})})
	}
	c.JSON(http.StatusOK, gin.H{"id": vx.ID, "parallelism": vx.Parallelism, "subtasks": subs})
}

// getSubtaskAttemptAccumulators is Flink's
// SubtaskExecutionAttemptAccumulatorsInfo; id stands for Flink's execution
// attempt id, derived from job, vertex, subtask and attempt.
func (s *Server) getSubtaskAttemptAccumulators(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	sv, ok := v.subtaskParam(c, vx)
	if !ok || !attemptParam(c, sv) {
		return
	}
	sum := sha256.Sum256([]byte(v.job.ID + "/" + fsm.SubtaskKey(vx.ID, sv.index) + "/" + strconv.Itoa(sv.attempt())))
	c.JSON(http.StatusOK, gin.H{"subtask": sv.index, "attempt": sv.attempt(), "id": hex.EncodeToString(sum[:16]),
		"user-accumulators": accumulatorsOf([]subtaskView{sv})})
}

// getVertexMetrics lists the metrics of every measured subtask, named
// "<subtask>.<metric>" as Flink names task metrics at vertex level.
func (s *Server) getVertexMetrics(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	var all []metricValue
	for _, sv := range v.subtasks(vx) {
		live := sv.live()
		if live == nil {
			continue
		}
		prefix := strconv.Itoa(sv.index) + "."
		for _, m := range subtaskMetricValues(live.Metrics) {
			all = append(all, metricValue{prefix + m.ID, m.Value})
		}
	}
	answerMetrics(c, all)
}

// getSubtasksMetrics aggregates the subtasks' metrics over ?subtasks=
// ranges (all subtasks when absent).
func (s *Server) getSubtasksMetrics(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	selected, ok := rangesParam(c, "subtasks")
	if !ok {
		return
	}
	var entities [][]metricValue
	for _, sv := range v.subtasks(vx) {
		if live := sv.live(); live != nil && (selected == nil || selected(sv.index)) {
			entities = append(entities, subtaskMetricValues(live.Metrics))
		}
	}
	answerAggregated(c, entities)
}

func (s *Server) getSubtaskMetrics(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	sv, ok := v.subtaskParam(c, vx)
	if !ok {
		return
	}
	var all []metricValue
	if live := sv.live(); live != nil {
		all = subtaskMetricValues(live.Metrics)
	}
	answerMetrics(c, all)
}

// getVertexWatermarks answers Flink's watermark metrics, always with their
// values (Flink's handler takes no ?get=). Jobs here run on processing time
// only, so every subtask's currentInputWatermark is Long.MIN_VALUE, which
// Flink's web UI shows as "No Watermark".
func (s *Server) getVertexWatermarks(c *gin.Context) {
	v, ok := s.loadJob(c)
	if !ok {
		return
	}
	vx, ok := v.vertexParam(c)
	if !ok {
		return
	}
	all := make([]metricValue, vx.Parallelism)
	for i := range all {
		all[i] = metricValue{strconv.Itoa(i) + ".currentInputWatermark", metricInt(math.MinInt64)}
	}
	c.JSON(http.StatusOK, all)
}

package rest

import (
	"bytes"
	"encoding/json"
	"sort"
	"sync"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
	"github.com/dispatcher-dev/dispatcher/runtime"
)

// Shared pieces of the Flink shapes: the stored spec as a graph, subtask
// views, state counts, IOMetricsInfo and summary statistics.

// jobStatuses are Flink's JobStatus values, for timestamps maps.
var jobStatuses = []string{
	fsm.JobInitializing, fsm.JobCreated, fsm.JobRunning, fsm.JobFailing, fsm.JobFailed, fsm.JobCancelling,
	fsm.JobCanceled, fsm.JobFinished, fsm.JobRestarting, fsm.JobSuspended, "RECONCILING",
}

// executionStates are Flink's ExecutionState values, for status counts.
var executionStates = []string{
	fsm.TaskCreated, fsm.TaskScheduled, fsm.TaskDeploying, fsm.TaskRunning, fsm.TaskFinished,
	fsm.TaskCanceling, fsm.TaskCanceled, fsm.TaskFailed, "RECONCILING", fsm.TaskInitializing,
}

// durationStates are the states whose time Flink's status-duration reports.
var durationStates = []string{fsm.TaskCreated, fsm.TaskScheduled, fsm.TaskDeploying, fsm.TaskInitializing, fsm.TaskRunning}

// graphCache keeps decoded specs: a job's spec never changes, and the web
// UI polls several routes per job every few seconds.
var graphCache = struct {
	sync.Mutex
	m map[string]cachedGraph
}{m: map[string]cachedGraph{}}

type cachedGraph struct {
	spec  []byte
	graph *jobgraph.JobGraph
	order []*jobgraph.Vertex
}

// graphOf decodes a job's stored spec. Stored specs were parsed at
// submission, so every default (names, parallelism, ship strategies) is
// already filled in; decoding cannot fail short of a corrupt log, in which
// case the job shows no vertices.
func graphOf(j *fsm.Job) (*jobgraph.JobGraph, []*jobgraph.Vertex) {
	graphCache.Lock()
	e, ok := graphCache.m[j.ID]
	graphCache.Unlock()
	if ok && bytes.Equal(e.spec, j.Spec) {
		return e.graph, e.order
	}
	g := &jobgraph.JobGraph{}
	if err := json.Unmarshal(j.Spec, g); err != nil {
		g = &jobgraph.JobGraph{}
	}
	if g.Name == "" {
		g.Name = j.Name
	}
	vertices := g.Vertices[:0:0]
	for _, v := range g.Vertices {
		if v != nil {
			vertices = append(vertices, v)
		}
	}
	g.Vertices = vertices
	order := topological(g.Vertices)
	graphCache.Lock()
	if len(graphCache.m) >= 1024 {
		clear(graphCache.m)
	}
	graphCache.m[j.ID] = cachedGraph{spec: j.Spec, graph: g, order: order}
	graphCache.Unlock()
	return g, order
}

// topological orders vertices sources first, keeping spec order among
// vertices that are ready together (Kahn). Vertices on a cycle, which a
// parsed spec never has, come last in spec order.
func topological(vs []*jobgraph.Vertex) []*jobgraph.Vertex {
	known := map[string]bool{}
	for _, v := range vs {
		known[v.ID] = true
	}
	done := map[string]bool{}
	out := make([]*jobgraph.Vertex, 0, len(vs))
	for len(out) < len(vs) {
		progress := false
		for _, v := range vs {
			if done[v.ID] {
				continue
			}
			ready := true
			for _, in := range v.Inputs {
				if known[in.From] && !done[in.From] {
					ready = false
					break
				}
			}
			if ready {
				done[v.ID] = true
				out = append(out, v)
				progress = true
			}
		}
		if !progress {
			for _, v := range vs {
				if !done[v.ID] {
					done[v.ID] = true
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// replicatedState is a subtask's state from the replicated record alone.
func replicatedState(j *fsm.Job, vertexID string, i int) string {
	return subtaskView{st: j.Subtasks[fsm.SubtaskKey(vertexID, i)], job: j}.state()
}

// subtaskView is one subtask of the current attempt: its replicated record
// (nil before the job was first scheduled) and its live status (nil when
// its node did not answer or no longer keeps it).
type subtaskView struct {
	vertex *jobgraph.Vertex
	index  int
	st     *fsm.Subtask
	job    *fsm.Job
	now    int64
	// view fetches live status on first use; nil for state-only views.
	view *jobView
}

func (v *jobView) subtask(vx *jobgraph.Vertex, i int) subtaskView {
	return subtaskView{vertex: vx, index: i, st: v.job.Subtasks[fsm.SubtaskKey(vx.ID, i)], job: v.job, now: v.now, view: v}
}

// live is the subtask's live status, nil when its node did not answer or
// no longer keeps it.
func (sv subtaskView) live() *runtime.SubtaskStatus {
	if sv.view == nil {
		return nil
	}
	if l, ok := sv.view.metrics()[fsm.SubtaskKey(sv.vertex.ID, sv.index)]; ok {
		return &l
	}
	return nil
}

// subtasks returns every subtask of a vertex, by index.
func (v *jobView) subtasks(vx *jobgraph.Vertex) []subtaskView {
	out := make([]subtaskView, vx.Parallelism)
	for i := range out {
		out[i] = v.subtask(vx, i)
	}
	return out
}

func (sv subtaskView) state() string {
	if sv.stranded() {
		return fsm.TaskCanceled
	}
	if sv.st == nil {
		return fsm.TaskCreated
	}
	return sv.st.State
}

// stranded tells whether the subtask had not ended when its job reached a
// terminal state. Its node cancels it, but reports about a terminal job
// are no longer recorded, so it shows as Flink shows it: CANCELED when the
// job ended.
func (sv subtaskView) stranded() bool {
	return sv.st != nil && fsm.TerminalJobState(sv.job.State) && !fsm.TerminalTaskState(sv.st.State)
}

// attempt is Flink's 0-based attempt number: the job's deployments count
// from 1, so deployment n runs attempt n-1 of every subtask.
func (sv subtaskView) attempt() int {
	if sv.st != nil {
		return max(0, sv.st.Attempt-1)
	}
	return max(0, sv.job.Attempt-1)
}

func (sv subtaskView) node() string {
	if sv.st == nil {
		return ""
	}
	return sv.st.Node
}

func (sv subtaskView) timestamp(state string) int64 {
	if sv.st == nil {
		return 0
	}
	if state == fsm.TaskCanceled && sv.stranded() {
		return sv.job.EndTime
	}
	return sv.st.Timestamps[state]
}

// startTime is when the subtask was deployed (Flink: the DEPLOYING
// timestamp), -1 before.
func (sv subtaskView) startTime() int64 {
	for _, s := range []string{fsm.TaskDeploying, fsm.TaskInitializing, fsm.TaskRunning} {
		if t := sv.timestamp(s); t > 0 {
			return t
		}
	}
	if t := sv.endTime(); t > 0 {
		return t
	}
	return -1
}

// endTime is when the subtask reached a terminal state, -1 before.
func (sv subtaskView) endTime() int64 {
	if s := sv.state(); fsm.TerminalTaskState(s) {
		if t := sv.timestamp(s); t > 0 {
			return t
		}
	}
	return -1
}

func (sv subtaskView) duration() int64 {
	return spanDuration(sv.startTime(), sv.endTime(), sv.now)
}

// spanDuration is Flink's duration of a start/end pair: -1 before the start,
// up to now while not ended.
func spanDuration(start, end, now int64) int64 {
	switch {
	case start <= 0:
		return -1
	case end > 0:
		return end - start
	default:
		return now - start
	}
}

// statusDuration is Flink's status-duration: how long the subtask spent in
// each state up to RUNNING (0 for a state it never entered).
func (sv subtaskView) statusDuration() map[string]int64 {
	out := make(map[string]int64, len(durationStates))
	allStates := append(append([]string(nil), durationStates...), fsm.TaskFinished, fsm.TaskCanceling, fsm.TaskCanceled, fsm.TaskFailed)
	for i, s := range durationStates {
		t := sv.timestamp(s)
		if t <= 0 {
			out[s] = 0
			continue
		}
		next := int64(0)
		for _, later := range allStates[i+1:] {
			if lt := sv.timestamp(later); lt > 0 && (next == 0 || lt < next) {
				next = lt
			}
		}
		switch {
		case next > 0:
			out[s] = max(0, next-t)
		case sv.state() == s:
			out[s] = max(0, sv.now-t)
		default:
			out[s] = 0
		}
	}
	return out
}

// ioMetrics is Flink's IOMetricsInfo. The accumulated-* times are 0: the
// runtime measures busy, idle and back-pressured time only as per-second
// rates (see the metric routes).
type ioMetrics struct {
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

// ioMetrics of one subtask. Its counts are complete when they were measured,
// or when it was never deployed (nothing to count yet).
func (sv subtaskView) ioMetrics() ioMetrics {
	live := sv.live()
	if live == nil {
		s := sv.state()
		complete := s == fsm.TaskCreated || s == fsm.TaskScheduled
		return ioMetrics{ReadBytesComplete: complete, WriteBytesComplete: complete, ReadRecordsComplete: complete, WriteRecordsComplete: complete}
	}
	m := live.Metrics
	return ioMetrics{
		ReadBytes: m.NumBytesIn, ReadBytesComplete: true, WriteBytes: m.NumBytesOut, WriteBytesComplete: true,
		ReadRecords: m.NumRecordsIn, ReadRecordsComplete: true, WriteRecords: m.NumRecordsOut, WriteRecordsComplete: true,
	}
}

// sumIOMetrics adds up subtasks' counts; a sum is complete when all its
// parts are. Accumulated times take the maximum, as Flink does.
func sumIOMetrics(subs []subtaskView) ioMetrics {
	out := ioMetrics{ReadBytesComplete: true, WriteBytesComplete: true, ReadRecordsComplete: true, WriteRecordsComplete: true}
	for _, sv := range subs {
		m := sv.ioMetrics()
		out.ReadBytes += m.ReadBytes
		out.WriteBytes += m.WriteBytes
		out.ReadRecords += m.ReadRecords
		out.WriteRecords += m.WriteRecords
		out.ReadBytesComplete = out.ReadBytesComplete && m.ReadBytesComplete
		out.WriteBytesComplete = out.WriteBytesComplete && m.WriteBytesComplete
		out.ReadRecordsComplete = out.ReadRecordsComplete && m.ReadRecordsComplete
		out.WriteRecordsComplete = out.WriteRecordsComplete && m.WriteRecordsComplete
		out.AccumulatedBackpressuredTime = max(out.AccumulatedBackpressuredTime, m.AccumulatedBackpressuredTime)
		out.AccumulatedIdleTime = max(out.AccumulatedIdleTime, m.AccumulatedIdleTime)
		out.AccumulatedBusyTime = max(out.AccumulatedBusyTime, m.AccumulatedBusyTime)
	}
	return out
}

// stateCounts counts states under every ExecutionState name.
func stateCounts(states []string) map[string]int {
	out := make(map[string]int, len(executionStates))
	for _, s := range executionStates {
		out[s] = 0
	}
	for _, s := range states {
		out[s]++
	}
	return out
}

// aggregateState is the state of a group of subtasks the way Flink's
// ExecutionJobVertex aggregates it: failures and activity win over
// completion.
func aggregateState(states []string) string {
	counts := map[string]int{}
	for _, s := range states {
		counts[s]++
	}
	for _, s := range []string{fsm.TaskFailed, fsm.TaskCanceling, fsm.TaskRunning, fsm.TaskInitializing, fsm.TaskDeploying, fsm.TaskScheduled} {
		if counts[s] > 0 {
			return s
		}
	}
	switch {
	case counts[fsm.TaskCanceled] > 0:
		return fsm.TaskCanceled
	case len(states) > 0 && counts[fsm.TaskFinished] == len(states):
		return fsm.TaskFinished
	default:
		return fsm.TaskCreated
	}
}

// subtaskSpan is the time a group of subtasks covers: from the first start to the
// last end, open (-1) while one has not ended.
func subtaskSpan(subs []subtaskView, now int64) (start, end, duration int64) {
	start, end = -1, -1
	allEnded := len(subs) > 0
	for _, sv := range subs {
		if t := sv.startTime(); t > 0 && (start < 0 || t < start) {
			start = t
		}
		if t := sv.endTime(); t > 0 {
			end = max(end, t)
		} else {
			allEnded = false
		}
	}
	if !allEnded {
		end = -1
	}
	return start, end, spanDuration(start, end, now)
}

func statesOf(subs []subtaskView) []string {
	out := make([]string, len(subs))
	for i, sv := range subs {
		out[i] = sv.state()
	}
	return out
}

// aggregatedDetails is Flink's AggregatedTaskDetailsInfo: summary
// statistics of the subtasks' metrics and state durations.
type aggregatedDetails struct {
	Metrics        map[string]map[string]int64 `json:"metrics"`
	StatusDuration map[string]map[string]int64 `json:"status-duration"`
}

func aggregateSubtasks(subs []subtaskView) aggregatedDetails {
	metrics := map[string][]int64{}
	durations := map[string][]int64{}
	for _, sv := range subs {
		m := sv.ioMetrics()
		metrics["read-bytes"] = append(metrics["read-bytes"], m.ReadBytes)
		metrics["write-bytes"] = append(metrics["write-bytes"], m.WriteBytes)
		metrics["read-records"] = append(metrics["read-records"], m.ReadRecords)
		metrics["write-records"] = append(metrics["write-records"], m.WriteRecords)
		metrics["accumulated-backpressured-time"] = append(metrics["accumulated-backpressured-time"], m.AccumulatedBackpressuredTime)
		metrics["accumulated-idle-time"] = append(metrics["accumulated-idle-time"], m.AccumulatedIdleTime)
		metrics["accumulated-busy-time"] = append(metrics["accumulated-busy-time"], int64(m.AccumulatedBusyTime))
		for s, d := range sv.statusDuration() {
			durations[s] = append(durations[s], d)
		}
	}
	out := aggregatedDetails{Metrics: map[string]map[string]int64{}, StatusDuration: map[string]map[string]int64{}}
	for k, vs := range metrics {
		out.Metrics[k] = statsSummary(vs)
	}
	for k, vs := range durations {
		out.StatusDuration[k] = statsSummary(vs)
	}
	return out
}

// statsSummary is min, max, avg, sum, median and the 25/75/95th percentiles
// (nearest rank), as Flink's StatsSummary reports them.
func statsSummary(vs []int64) map[string]int64 {
	if len(vs) == 0 {
		return map[string]int64{"min": 0, "max": 0, "avg": 0, "sum": 0, "median": 0, "p25": 0, "p75": 0, "p95": 0}
	}
	s := append([]int64(nil), vs...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	var sum int64
	for _, v := range s {
		sum += v
	}
	pct := func(p float64) int64 {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return map[string]int64{
		"min": s[0], "max": s[len(s)-1], "avg": sum / int64(len(s)), "sum": sum,
		"median": pct(0.5), "p25": pct(0.25), "p75": pct(0.75), "p95": pct(0.95),
	}
}

// userAccumulator is Flink's UserAccumulator / UserTaskAccumulator. Every
// accumulator here is a per-subtask counter, so its type is LongCounter.
type userAccumulator struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

// accumulatorsOf sums the named counters of the subtasks, sorted by name.
func accumulatorsOf(subs []subtaskView) []userAccumulator {
	sums := map[string]int64{}
	for _, sv := range subs {
		live := sv.live()
		if live == nil {
			continue
		}
		for k, n := range live.Metrics.Accumulators {
			sums[k] += n
		}
	}
	out := make([]userAccumulator, 0, len(sums))
	for k, n := range sums {
		out = append(out, userAccumulator{Name: k, Type: "LongCounter", Value: metricInt(n)})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

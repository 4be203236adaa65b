package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dispatcher-dev/dispatcher/config"
	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/runtime"
)

// Back pressure (seed 003). Two measures of a subtask's back-pressure
// ratio, both graded OK <= 0.10 < LOW <= 0.50 < HIGH, the vertex taking its
// worst subtask:
//
//   - sample (the default): the seed's method. The nodes that run the
//     vertex's subtasks look at each subtask num-samples times,
//     delay-between-samples apart, and count the fraction of looks that
//     found it blocked waiting for an output buffer (Executor.
//     SampleBackPressure). The node that serves the request fans out to them
//     and caches the result per job and vertex for refresh-interval
//     (jobmanager.web.backpressure.*). A request never waits for a sample:
//     it triggers one when there is no result or the result is stale, and
//     answers at once with the previous result (with "sampling": true) or
//     {"status":"deprecated"} when there is none yet. Concurrent requests
//     share one sample; a sample always covers every subtask of the vertex.
//   - time (?measure=time): Flink 1.13+'s metric, ratio =
//     backPressuredTimeMsPerSecond/1000 from the live metrics (averaged over
//     the last ~5 s where the subtasks run).
//
// idleRatio and busyRatio always come from the time metrics.

// Back-pressure levels, lower case as Flink writes them.
const (
	levelOK   = "ok"
	levelLow  = "low"
	levelHigh = "high"
)

func backPressureLevel(ratio float64) string {
	switch {
	case ratio > 0.5:
		return levelHigh
	case ratio > 0.10:
		return levelLow
	default:
		return levelOK
	}
}

var levelRank = map[string]int{levelOK: 0, levelLow: 1, levelHigh: 2}

// backPressureSampler is the part of the executor that samples.
type backPressureSampler interface {
	SampleBackPressure(ctx context.Context, jobID, vertexID string, samples int, delay time.Duration) (map[int]float64, error)
}

// Bounds on what a peer may ask the internal sampling route for.
const (
	maxNumSamples  = 10000
	maxSampleDelay = 10 * time.Second
)

// backPressureRoutes are the back-pressure routes (seed 003).
func (s *Server) backPressureRoutes() []route {
	t := newBackPressureTracker(s)
	return []route{
		{method: "GET", path: "/jobs/:jobid/vertices/:vertexid/backpressure", handler: t.getVertexBackPressure},
		{method: "GET", path: "/jobs/:jobid/backpressure", handler: t.getJobBackPressure},
		{method: "GET", path: "/internal/jobs/:jobid/vertices/:vertexid/backpressure-sample", handler: s.getLocalBackPressureSample},
	}
}

// backPressureTracker holds this node's sample cache.
type backPressureTracker struct {
	s       *Server
	started prometheus.Counter
	failed  prometheus.Counter

	mu      sync.Mutex
	entries map[bpKey]*bpEntry
}

type bpKey struct{ job, vertex string }

type bpEntry struct {
	result   *bpSample // last completed sample, nil before the first
	sampling bool      // a sample is running
	used     time.Time // last request, for eviction
}

// bpSample is one completed sample of a vertex.
type bpSample struct {
	attempt    int
	end        time.Time
	numSamples int
	delay      time.Duration
	ratios     map[int]float64 // by subtask index
	idle, busy map[int]float64
}

func newBackPressureTracker(s *Server) *backPressureTracker {
	t := &backPressureTracker{
		s: s,
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dispatcher_backpressure_samples_total",
			Help: "Back-pressure samples of a job vertex this node started (one per vertex, however many requests share it).",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dispatcher_backpressure_sample_failures_total",
			Help: "Back-pressure samples that got no ratio from any node.",
		}),
		entries: map[bpKey]*bpEntry{},
	}
	if s.metrics != nil {
		s.metrics.registry.MustRegister(t.started, t.failed)
	}
	return t
}

// view returns the cached sample of a vertex of the job's current attempt
// (nil when there is none) and whether a sample is running, starting one
// when the result is missing or older than the refresh interval and the
// job runs. It never waits for the sample.
func (t *backPressureTracker) view(j *fsm.Job, vertexID string) (*bpSample, bool) {
	cfg := t.s.node.Config().BackPressure
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.evictLocked(now, cfg.RefreshInterval)
	k := bpKey{j.ID, vertexID}
	e := t.entries[k]
	if e == nil {
		e = &bpEntry{}
		t.entries[k] = e
	}
	e.used = now
	res := e.result
	if res != nil && res.attempt != j.Attempt {
		res = nil // a previous attempt's subtasks
	}
	stale := res == nil || now.Sub(res.end) > cfg.RefreshInterval
	if stale && !e.sampling && j.State == fsm.JobRunning && len(j.Placement[vertexID]) > 0 {
		e.sampling = true
		t.started.Inc()
		go t.sample(j, vertexID, cfg, e)
	}
	return res, e.sampling
}

// evictLocked forgets entries nobody asked for in a long while.
func (t *backPressureTracker) evictLocked(now time.Time, refresh time.Duration) {
	keep := max(10*refresh, 10*time.Minute)
	for k, e := range t.entries {
		if !e.sampling && now.Sub(e.used) > keep {
			delete(t.entries, k)
		}
	}
}

// sample runs one sample of every subtask of the vertex on the nodes that
// host them, then records it in e.
func (t *backPressureTracker) sample(j *fsm.Job, vertexID string, cfg config.BackPressureConfig, e *bpEntry) {
	samples := min(max(cfg.NumSamples, 1), maxNumSamples)
	delay := min(max(cfg.DelayBetweenSamples, 0), maxSampleDelay)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(samples)*delay+10*time.Second)
	defer cancel()
	placement := j.Placement[vertexID]
	addrs := map[string]string{}
	for _, m := range t.s.node.Members() {
		addrs[m.ID] = m.HTTPAddress
	}
	ratios := map[int]float64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, node := range fsm.NodesOf(map[string][]string{vertexID: placement}) {
		wg.Add(1)
		go func(node string) {
			defer wg.Done()
			got, err := t.sampleOn(ctx, node, addrs[node], j.ID, vertexID, samples, delay)
			if err != nil {
				t.s.log.Debug("back-pressure sample failed", "node", node, "job", j.ID, "vertex", vertexID, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for i, r := range got {
				// Only the subtasks the current placement puts there.
				if i >= 0 && i < len(placement) && placement[i] == node {
					ratios[i] = r
				}
			}
		}(node)
	}
	wg.Wait()
	var res *bpSample
	if len(ratios) > 0 {
		res = &bpSample{attempt: j.Attempt, end: time.Now(), numSamples: samples, delay: delay, ratios: ratios,
			idle: map[int]float64{}, busy: map[int]float64{}}
		live := t.s.subtasks.get(ctx, j)
		for i := range ratios {
			m := live[fsm.SubtaskKey(vertexID, i)].Metrics
			res.idle[i], res.busy[i] = m.IdleTimeMsPerSecond/1000, m.BusyTimeMsPerSecond/1000
		}
	} else {
		t.failed.Inc()
	}
	t.mu.Lock()
	e.sampling = false
	if res != nil {
		e.result = res
	}
	t.mu.Unlock()
}

// sampleOn samples the vertex's subtasks on one node: this one directly,
// another through its internal route.
func (t *backPressureTracker) sampleOn(ctx context.Context, node, addr, jobID, vertexID string, samples int, delay time.Duration) (map[int]float64, error) {
	s := t.s
	if node == s.node.ID() {
		sampler, ok := s.runtime.(backPressureSampler)
		if !ok {
			return nil, fmt.Errorf("no task executor on this node")
		}
		return sampler.SampleBackPressure(ctx, jobID, vertexID, samples, delay)
	}
	if addr == "" {
		return nil, fmt.Errorf("no address for node %s", node)
	}
	q := url.Values{}
	q.Set("num-samples", strconv.Itoa(samples))
	q.Set("delay-between-samples", strconv.FormatInt(delay.Milliseconds(), 10))
	u := "http://" + addr + "/v1/internal/jobs/" + jobID + "/vertices/" + url.PathEscape(vertexID) + "/backpressure-sample?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.peerClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("node %s answered %s", node, resp.Status)
	}
	var body struct {
		Ratios map[int]float64 `json:"ratios"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	return body.Ratios, err
}

// getLocalBackPressureSample samples this node's subtasks of a vertex (the
// node-to-node half of a sample). It takes the sample's duration to answer.
func (s *Server) getLocalBackPressureSample(c *gin.Context) {
	id, ok := jobIDParam(c)
	if !ok {
		return
	}
	cfg := s.node.Config().BackPressure
	samples, err := strconv.Atoi(c.DefaultQuery("num-samples", strconv.Itoa(cfg.NumSamples)))
	if err != nil || samples < 1 || samples > maxNumSamples {
		fail(c, http.StatusBadRequest, fmt.Sprintf("Bad request: num-samples must be an integer from 1 to %d.", maxNumSamples))
		return
	}
	delayMs, err := strconv.ParseInt(c.DefaultQuery("delay-between-samples", strconv.FormatInt(cfg.DelayBetweenSamples.Milliseconds(), 10)), 10, 64)
	if err != nil || delayMs < 0 || delayMs > maxSampleDelay.Milliseconds() {
		fail(c, http.StatusBadRequest, fmt.Sprintf("Bad request: delay-between-samples must be milliseconds from 0 to %d.", maxSampleDelay.Milliseconds()))
		return
	}
	sampler, ok := s.runtime.(backPressureSampler)
	if !ok {
		fail(c, http.StatusNotFound, "No task executor on node "+s.node.ID()+".")
		return
	}
	ratios, err := sampler.SampleBackPressure(c.Request.Context(), id, c.Param("vertexid"), samples, time.Duration(delayMs)*time.Millisecond)
	if err != nil {
		if c.Request.Context().Err() != nil {
			c.Abort()
			return
		}
		fail(c, http.StatusNotFound, err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"node": s.node.ID(), "num-samples": samples, "delay-between-samples": delayMs, "ratios": ratios})
}

// bpSubtask is Flink's SubtaskBackPressureInfo.
type bpSubtask struct {
	Subtask     int     `json:"subtask"`
	Level       string  `json:"backpressureLevel"`
	LegacyLevel string  `json:"backpressure-level"`
	Ratio       float64 `json:"ratio"`
	IdleRatio   float64 `json:"idleRatio"`
	BusyRatio   float64 `json:"busyRatio"`
}

// bpVertex is Flink's JobVertexBackPressureInfo plus how it was measured.
type bpVertex struct {
	Status       string      `json:"status"`
	Level        string      `json:"backpressureLevel,omitempty"`
	LegacyLevel  string      `json:"backpressure-level,omitempty"`
	EndTimestamp int64       `json:"end-timestamp,omitempty"`
	Subtasks     []bpSubtask `json:"subtasks,omitempty"`
	Measure      string      `json:"measure,omitempty"`
	NumSamples   int         `json:"num-samples,omitempty"`
	Delay        *int64      `json:"delay-between-samples,omitempty"`
	Sampling     bool        `json:"sampling,omitempty"`
}

// bpDeprecated is Flink's answer when there is no data yet.
var bpDeprecated = bpVertex{Status: "deprecated"}

func round4(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return math.Round(x*1e4) / 1e4
}

// vertexInfo grades per-subtask ratios into Flink's shape.
func vertexInfo(ratios, idle, busy map[int]float64, end time.Time) bpVertex {
	idx := make([]int, 0, len(ratios))
	for i := range ratios {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	out := bpVertex{Status: "ok", Level: levelOK, EndTimestamp: end.UnixMilli(), Subtasks: make([]bpSubtask, 0, len(idx))}
	for _, i := range idx {
		lvl := backPressureLevel(ratios[i])
		if levelRank[lvl] > levelRank[out.Level] {
			out.Level = lvl
		}
		out.Subtasks = append(out.Subtasks, bpSubtask{Subtask: i, Level: lvl, LegacyLevel: lvl,
			Ratio: round4(ratios[i]), IdleRatio: round4(idle[i]), BusyRatio: round4(busy[i])})
	}
	out.LegacyLevel = out.Level
	return out
}

func (r *bpSample) info(sampling bool) bpVertex {
	out := vertexInfo(r.ratios, r.idle, r.busy, r.end)
	d := r.delay.Milliseconds()
	out.Measure, out.NumSamples, out.Delay, out.Sampling = "sample", r.numSamples, &d, sampling
	return out
}

// timeRatios reads the time-based ratios of a vertex from live metrics.
func timeRatios(live map[string]runtime.SubtaskStatus, vertexID string, parallelism int) (ratios, idle, busy map[int]float64) {
	ratios, idle, busy = map[int]float64{}, map[int]float64{}, map[int]float64{}
	for i := 0; i < parallelism; i++ {
		st, ok := live[fsm.SubtaskKey(vertexID, i)]
		if !ok {
			continue
		}
		m := st.Metrics
		ratios[i], idle[i], busy[i] = m.BackPressuredTimeMsPerSecond/1000, m.IdleTimeMsPerSecond/1000, m.BusyTimeMsPerSecond/1000
	}
	return ratios, idle, busy
}

// bpLookupJob resolves :jobid, answering 400/404 itself.
func (s *Server) bpLookupJob(c *gin.Context) (*jobService, bool) {
	id, ok := jobIDParam(c)
	if !ok {
		return nil, false
	}
	j, found := s.node.FSM.Job(id)
	if !found {
		fail(c, http.StatusNotFound, "Job "+id+" not found")
		return nil, false
	}
	g, order, err := decodeJobSpec(j.Spec)
	if err != nil {
		fail(c, http.StatusInternalServerError, "Internal server error: cannot read the stored spec of job "+id+": "+err.Error())
		return nil, false
	}
	return &jobService{job: j, graph: g, order: order, sg: serviceGroupOf(g)}, true
}

func (t *backPressureTracker) getVertexBackPressure(c *gin.Context) {
	js, ok := t.s.bpLookupJob(c)
	if !ok {
		return
	}
	v := js.vertex(c.Param("vertexid"))
	if v == nil {
		fail(c, http.StatusNotFound, "Job vertex "+quoteShort(c.Param("vertexid"))+" not found in job "+js.job.ID+".")
		return
	}
	switch measure := c.DefaultQuery("measure", "sample"); measure {
	case "sample":
		res, sampling := t.view(js.job, v.ID)
		if res == nil {
			c.JSON(http.StatusOK, bpDeprecated)
			return
		}
		c.JSON(http.StatusOK, res.info(sampling))
	case "time":
		if js.job.State != fsm.JobRunning {
			c.JSON(http.StatusOK, bpDeprecated)
			return
		}
		live := t.s.subtasks.get(c.Request.Context(), js.job)
		ratios, idle, busy := timeRatios(live, v.ID, v.Parallelism)
		if len(ratios) == 0 {
			c.JSON(http.StatusOK, bpDeprecated)
			return
		}
		out := vertexInfo(ratios, idle, busy, time.Now())
		out.Measure = "time"
		c.JSON(http.StatusOK, out)
	default:
		fail(c, http.StatusBadRequest, "Bad request: measure must be sample or time, not "+quoteShort(measure)+".")
	}
}

package agent_test

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/agent"
	"github.com/dispatcher-dev/dispatcher/config"
	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

// Short sampling so that tests see results in well under a second.
func shortSampling(refresh time.Duration, samples int, delay time.Duration) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.BackPressure = config.BackPressureConfig{RefreshInterval: refresh, NumSamples: samples, DelayBetweenSamples: delay}
	}
}

type bpSubtaskJSON struct {
	Subtask     int     `json:"subtask"`
	Level       string  `json:"backpressureLevel"`
	LegacyLevel string  `json:"backpressure-level"`
	Ratio       float64 `json:"ratio"`
	IdleRatio   float64 `json:"idleRatio"`
	BusyRatio   float64 `json:"busyRatio"`
}

type bpVertexJSON struct {
	Status       string          `json:"status"`
	Level        string          `json:"backpressureLevel"`
	LegacyLevel  string          `json:"backpressure-level"`
	EndTimestamp int64           `json:"end-timestamp"`
	Subtasks     []bpSubtaskJSON `json:"subtasks"`
	Measure      string          `json:"measure"`
	NumSamples   int             `json:"num-samples"`
	Delay        *int64          `json:"delay-between-samples"`
	Sampling     bool            `json:"sampling"`
}

type bpJobJSON struct {
	State      string `json:"state"`
	Rule       string `json:"rule"`
	Reason     string `json:"reason"`
	Bottleneck *struct {
		ID       string   `json:"id"`
		Subtasks []int    `json:"subtasks"`
		Upstream []string `json:"highUpstream"`
		Why      string   `json:"why"`
	} `json:"bottleneck"`
	Vertices []struct {
		ID           string   `json:"id"`
		Level        string   `json:"backpressureLevel"`
		LevelFrom    string   `json:"levelFrom"`
		SampledLevel *string  `json:"sampledLevel"`
		TimeLevel    string   `json:"timeLevel"`
		TimeRatio    float64  `json:"timeRatio"`
		InPoolUsage  float64  `json:"inPoolUsage"`
		OutPoolUsage float64  `json:"outPoolUsage"`
		Inputs       []string `json:"inputs"`
	} `json:"vertices"`
}

func vertexBP(t *testing.T, c *tc.Cluster, a *agent.Agent, job, vertex, query string) bpVertexJSON {
	t.Helper()
	r := c.Do(a, "GET", "/v1/jobs/"+job+"/vertices/"+vertex+"/backpressure"+query, nil)
	if r.Code != http.StatusOK {
		t.Fatalf("backpressure of %s: %d %s", vertex, r.Code, r.Body)
	}
	var v bpVertexJSON
	r.JSON(t, &v)
	if v.Status == "deprecated" && string(r.Body) != `{"status":"deprecated"}` {
		t.Errorf("a deprecated answer carries nothing else: %s", r.Body)
	}
	if v.Status == "ok" && (v.Level != v.LegacyLevel || v.EndTimestamp == 0) {
		t.Errorf("ok answer without both level keys or end-timestamp: %s", r.Body)
	}
	return v
}

// waitLevel polls a vertex until its answer is ok at one of the levels.
func waitLevel(t *testing.T, c *tc.Cluster, a *agent.Agent, job, vertex, query string, levels ...string) bpVertexJSON {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := vertexBP(t, c, a, job, vertex, query)
		if v.Status == "ok" && hasString(levels, v.Level) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s%s to be %v; last answer %+v", vertex, query, levels, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSubtasksRunning waits until every subtask of the current attempt runs.
func waitSubtasksRunning(t *testing.T, a *agent.Agent, id string) *fsm.Job {
	t.Helper()
	var j *fsm.Job
	tc.WaitFor(t, 30*time.Second, "every subtask of "+id+" to run", func() bool {
		j, _ = a.Node.FSM.Job(id)
		if j == nil || j.State != fsm.JobRunning || len(j.Subtasks) == 0 {
			return false
		}
		for _, st := range j.Subtasks {
			if st.State != fsm.TaskRunning {
				return false
			}
		}
		return true
	})
	return j
}

func cancelJob(t *testing.T, c *tc.Cluster, a *agent.Agent, id string) {
	t.Helper()
	if r := c.Do(a, "PATCH", "/v1/jobs/"+id+"?mode=cancel", nil); r.Code != http.StatusAccepted {
		t.Fatalf("cancel %s: %d %s", id, r.Code, r.Body)
	}
	waitJobState(t, a, id, 20*time.Second, fsm.JobCanceled)
}

// metricValue reads one unlabelled metric of a node.
func metricValue(t *testing.T, c *tc.Cluster, a *agent.Agent, name string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(string(c.Do(a, "GET", "/metrics", nil).Body)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// slowJob is sequence -> map -> sleep(1ms per record) -> discard; the
// sleeper runs with sleepPar subtasks fed by rebalance.
func slowJob(name string, sleepPar int) string {
	return fmt.Sprintf(`{"name":%q,"vertices":[
		{"id":"src","operator":"sequence","params":{"from":1}},
		{"id":"map","operator":"map","inputs":[{"from":"src"}],"params":{"expr":"{\"n\": n, \"k\": n %% 7}"}},
		{"id":"sleep","operator":"sleep","parallelism":%d,"inputs":[{"from":"map","ship":"rebalance"}],"params":{"perRecord":"1ms"}},
		{"id":"out","operator":"discard","parallelism":%d,"inputs":[{"from":"sleep","ship":"forward"}]}]}`, name, sleepPar, sleepPar)
}

// pipeJob is sequence -> map -> discard, the map and sink with par
// subtasks fed by rebalance; rate 0 is full speed.
func pipeJob(name string, par, rate int) string {
	return fmt.Sprintf(`{"name":%q,"vertices":[
		{"id":"src","operator":"sequence","params":{"from":1,"ratePerSecond":%d}},
		{"id":"map","operator":"map","parallelism":%d,"inputs":[{"from":"src","ship":"rebalance"}],"params":{"expr":"{\"n\": n, \"k\": n %% 7}"}},
		{"id":"out","operator":"discard","parallelism":%d,"inputs":[{"from":"map","ship":"forward"}]}]}`, name, rate, par, par)
}

func checkSlowJob(t *testing.T, c *tc.Cluster, a *agent.Agent, id string, sleepPar int) {
	t.Helper()
	for _, v := range []string{"src", "map"} {
		got := waitLevel(t, c, a, id, v, "", "high")
		if got.Measure != "sample" || got.NumSamples != 20 || got.Delay == nil || *got.Delay != 10 {
			t.Errorf("%s: measure %q num-samples %d delay %v, want sample, 20, 10", v, got.Measure, got.NumSamples, got.Delay)
		}
		if len(got.Subtasks) != 1 || got.Subtasks[0].Ratio <= 0.5 || got.Subtasks[0].Level != "high" || got.Subtasks[0].LegacyLevel != "high" {
			t.Errorf("%s subtasks %+v", v, got.Subtasks)
		}
	}
	sleep := waitLevel(t, c, a, id, "sleep", "", "ok")
	if len(sleep.Subtasks) != sleepPar {
		t.Errorf("sleep: %d subtasks sampled, want all %d", len(sleep.Subtasks), sleepPar)
	}
	for _, st := range sleep.Subtasks {
		if st.Ratio > 0.1 || st.BusyRatio < 0.5 {
			t.Errorf("sleep subtask %+v: want ratio <= 0.1 and mostly busy", st)
		}
	}
	waitLevel(t, c, a, id, "out", "", "ok")
	// The time-based measure agrees.
	waitLevel(t, c, a, id, "map", "?measure=time", "high")
	if got := waitLevel(t, c, a, id, "sleep", "?measure=time", "ok", "low"); got.Measure != "time" || got.NumSamples != 0 {
		t.Errorf("time measure: %+v", got)
	}

	var job bpJobJSON
	tc.WaitFor(t, 30*time.Second, "the sleeper to be named the bottleneck", func() bool {
		r := c.Do(a, "GET", "/v1/jobs/"+id+"/backpressure", nil)
		if r.Code != http.StatusOK {
			t.Fatalf("job backpressure: %d %s", r.Code, r.Body)
		}
		job = bpJobJSON{}
		r.JSON(t, &job)
		return job.Bottleneck != nil && job.Bottleneck.ID == "sleep"
	})
	if job.Rule == "" || len(job.Vertices) != 4 || job.Bottleneck.Upstream[0] != "map" || len(job.Bottleneck.Subtasks) == 0 {
		t.Errorf("job answer %+v", job)
	}
	levels := map[string]string{}
	for _, v := range job.Vertices {
		levels[v.ID] = v.Level
	}
	if levels["src"] != "high" || levels["map"] != "high" || levels["sleep"] != "ok" {
		t.Errorf("evidence levels %v", levels)
	}
}

// checkKeepsUp asserts that a job whose operators keep up with its source
// is OK everywhere, by both measures, and has no bottleneck.
func checkKeepsUp(t *testing.T, c *tc.Cluster, a *agent.Agent, id string) {
	t.Helper()
	for _, v := range []string{"src", "map", "out"} {
		waitLevel(t, c, a, id, v, "", "ok")
		waitLevel(t, c, a, id, v, "?measure=time", "ok")
	}
	// Once the time metrics have a window, the rate-limited source is
	// mostly idle, and still OK.
	tc.WaitFor(t, 15*time.Second, "the source's time metrics", func() bool {
		v := waitLevel(t, c, a, id, "src", "?measure=time", "ok")
		return v.Subtasks[0].IdleRatio > 0.5
	})
	var job bpJobJSON
	c.Do(a, "GET", "/v1/jobs/"+id+"/backpressure", nil).JSON(t, &job)
	if job.Bottleneck != nil || !strings.Contains(job.Reason, "keeps up") {
		t.Errorf("job that keeps up: bottleneck %+v, reason %q", job.Bottleneck, job.Reason)
	}
}

// checkFullSpeed asserts what holds for sequence -> map -> discard at full
// speed. Without operator chaining the source outruns the map, so the
// source may well be back pressured (HIGH at times): the map limits the
// throughput. The map and the sink never are, and if a bottleneck is named
// it is the map.
func checkFullSpeed(t *testing.T, c *tc.Cluster, a *agent.Agent, id string) {
	t.Helper()
	for _, v := range []string{"map", "out"} {
		if got := waitLevel(t, c, a, id, v, "", "ok", "low", "high"); got.Level == "high" {
			t.Errorf("full speed: %s is HIGH: %+v", v, got)
		}
		if got := waitLevel(t, c, a, id, v, "?measure=time", "ok", "low", "high"); got.Level == "high" {
			t.Errorf("full speed: %s is HIGH by time: %+v", v, got)
		}
	}
	var job bpJobJSON
	c.Do(a, "GET", "/v1/jobs/"+id+"/backpressure", nil).JSON(t, &job)
	if job.Bottleneck != nil && job.Bottleneck.ID != "map" {
		t.Errorf("full speed: bottleneck %+v", job.Bottleneck)
	}
	if job.Bottleneck == nil && job.Reason == "" {
		t.Errorf("no bottleneck and no reason")
	}
}

func TestBackPressureAcrossNodes(t *testing.T) {
	c := tc.New(t, 3, shortSampling(2*time.Second, 20, 10*time.Millisecond))
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)

	id := submitSpec(t, c, leader, slowJob("slow-across", 2))
	j := waitSubtasksRunning(t, leader, id)
	sleepNodes := fsm.NodesOf(map[string][]string{"sleep": j.Placement["sleep"]})
	if len(sleepNodes) != 2 {
		t.Fatalf("the sleeper's placement %v does not span two nodes", j.Placement["sleep"])
	}
	// Ask a node that runs none of the job, so every sample is fanned out.
	var asker *agent.Agent
	for _, a := range c.Running() {
		if !hasString(fsm.NodesOf(j.Placement), a.Node.ID()) {
			asker = a
		}
	}
	if asker == nil {
		t.Fatalf("placement %v covers every node", j.Placement)
	}
	checkSlowJob(t, c, asker, id, 2)
	// Unknown ids.
	for path, code := range map[string]int{
		"/v1/jobs/" + id + "/vertices/nope/backpressure":          404,
		"/v1/jobs/" + jobID(77) + "/vertices/src/backpressure":    404,
		"/v1/jobs/" + jobID(77) + "/backpressure":                 404,
		"/v1/jobs/NOT-HEX/backpressure":                           400,
		"/v1/jobs/" + id + "/vertices/src/backpressure?measure=x": 400,
	} {
		if r := c.Do(asker, "GET", path, nil); r.Code != code || !strings.Contains(string(r.Body), `"errors"`) {
			t.Errorf("GET %s: %d %s, want %d", path, r.Code, r.Body, code)
		}
	}
	cancelJob(t, c, leader, id)

	id = submitSpec(t, c, leader, pipeJob("keeps-up-across", 2, 5000))
	j = waitSubtasksRunning(t, leader, id)
	if n := len(fsm.NodesOf(j.Placement)); n < 2 {
		t.Fatalf("placement %v does not span two nodes", j.Placement)
	}
	checkKeepsUp(t, c, asker, id)
	cancelJob(t, c, leader, id)

	id = submitSpec(t, c, leader, pipeJob("full-speed-across", 2, 0))
	waitSubtasksRunning(t, leader, id)
	checkFullSpeed(t, c, asker, id)
	cancelJob(t, c, leader, id)
}

func TestBackPressureInsideOneNode(t *testing.T) {
	c := tc.New(t, 1, shortSampling(2*time.Second, 20, 10*time.Millisecond))
	a := c.WaitForLeader(10 * time.Second)

	id := submitSpec(t, c, a, slowJob("slow-local", 1))
	waitSubtasksRunning(t, a, id)
	checkSlowJob(t, c, a, id, 1)
	cancelJob(t, c, a, id)
	// A finished job keeps its last sample and starts no new one.
	if v := vertexBP(t, c, a, id, "src", ""); v.Status != "ok" || v.Sampling {
		t.Errorf("after cancel: %+v", v)
	}

	id = submitSpec(t, c, a, pipeJob("keeps-up-local", 1, 5000))
	waitSubtasksRunning(t, a, id)
	checkKeepsUp(t, c, a, id)
	cancelJob(t, c, a, id)

	id = submitSpec(t, c, a, pipeJob("full-speed-local", 1, 0))
	waitSubtasksRunning(t, a, id)
	checkFullSpeed(t, c, a, id)
	cancelJob(t, c, a, id)
}

// A request never waits for a sample, concurrent requests share one, a
// result is reused for refresh-interval and then resampled while the old
// result is served.
func TestBackPressureSamplingNeverBlocksIsSharedAndRefreshes(t *testing.T) {
	const refresh, samples, delay = 2 * time.Second, 50, 20 * time.Millisecond // a sample takes ~1 s
	c := tc.New(t, 1, shortSampling(refresh, samples, delay))
	a := c.WaitForLeader(10 * time.Second)
	id := submitSpec(t, c, a, slowJob("sampling", 1))
	waitSubtasksRunning(t, a, id)
	// Let the executor start the subtasks' data flow before the first look.
	time.Sleep(200 * time.Millisecond)
	const counter = "dispatcher_backpressure_samples_total"
	before := metricValue(t, c, a, counter)

	var wg sync.WaitGroup
	answers := make([]bpVertexJSON, 8)
	took := make([]time.Duration, 8)
	for i := range answers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			start := time.Now()
			answers[i] = vertexBP(t, c, a, id, "map", "")
			took[i] = time.Since(start)
		}(i)
	}
	wg.Wait()
	for i, v := range answers {
		if v.Status != "deprecated" {
			t.Errorf("request %d during the first sample: %+v, want deprecated", i, v)
		}
		if took[i] > 500*time.Millisecond {
			t.Errorf("request %d took %v: it waited for the sample", i, took[i])
		}
	}
	if got := metricValue(t, c, a, counter); got != before+1 {
		t.Errorf("%v samples started by 8 concurrent requests, want 1", got-before)
	}
	first := waitLevel(t, c, a, id, "map", "", "high")
	if first.NumSamples != samples || first.Delay == nil || *first.Delay != delay.Milliseconds() || first.Sampling {
		t.Errorf("first result %+v", first)
	}
	// Fresh: served from the cache, no new sample.
	if again := vertexBP(t, c, a, id, "map", ""); again.EndTimestamp != first.EndTimestamp || again.Sampling {
		t.Errorf("within refresh-interval: %+v, want the cached result", again)
	}
	started := metricValue(t, c, a, counter)
	// Stale: the old result is served at once while a new sample runs.
	time.Sleep(time.Until(time.UnixMilli(first.EndTimestamp).Add(refresh + 100*time.Millisecond)))
	start := time.Now()
	stale := vertexBP(t, c, a, id, "map", "")
	if time.Since(start) > 500*time.Millisecond || stale.Status != "ok" || !stale.Sampling || stale.EndTimestamp != first.EndTimestamp {
		t.Errorf("stale request (took %v): %+v, want the previous result with sampling true", time.Since(start), stale)
	}
	if got := metricValue(t, c, a, counter); got != started+1 {
		t.Errorf("%v samples started by the stale request, want 1", got-started)
	}
	tc.WaitFor(t, 10*time.Second, "a newer sample", func() bool {
		v := vertexBP(t, c, a, id, "map", "")
		return v.EndTimestamp > first.EndTimestamp && !v.Sampling
	})
	cancelJob(t, c, a, id)
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

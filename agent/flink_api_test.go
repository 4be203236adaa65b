package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/dispatcher-dev/dispatcher/agent"
	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

// flinkDeviation is a deliberate difference between our answers and Flink's
// OpenAPI spec. Patch adjusts the loaded spec so that validation checks
// everything else; a deviation without a patch is one the spec's open
// schemas already accept, listed so it is not mistaken for an oversight.
type flinkDeviation struct {
	what, why string
	patch     func(doc *openapi3.T)
}

var flinkDeviations = []flinkDeviation{
	{
		what: "vertex ids are the job spec's vertex ids (\"src\"), not 32-hex JobVertexIDs",
		why:  "ids users chose read better in the API and the UI, and GET /jobs, placements and failures already use them; Flink clients echo the ids they are given",
		patch: func(doc *openapi3.T) {
			doc.Components.Schemas["JobVertexID"].Value.Pattern = ""
		},
	},
	{
		what: "task manager ids are node ids (\"node1\"), not 32-hex ResourceIDs",
		why:  "a task manager is a node: its id is the one every cluster route uses",
		patch: func(doc *openapi3.T) {
			doc.Components.Schemas["ResourceID"].Value.Pattern = ""
		},
	},
	{
		what: "metric bodies are bare arrays [{id, value}], not {\"metrics\": [...]}",
		why:  "Flink's MetricCollectionResponseBody serializer writes only the array; the spec's object is a generator artifact (flink.md b13)",
		patch: func(doc *openapi3.T) {
			body := doc.Components.Schemas["MetricCollectionResponseBody"].Value
			metric := body.Properties["metrics"].Value.Items
			*body = *openapi3.NewArraySchema().WithItems(metric.Value)
		},
	},
	{
		what: "aggregated metric bodies are bare arrays [{id, min, max, avg, sum, skew}]",
		why:  "Flink's AggregatedMetricsResponseBody serializer writes only the array; the spec draws an empty object",
		patch: func(doc *openapi3.T) {
			item := openapi3.NewObjectSchema().WithRequired([]string{"id"}).
				WithProperty("id", openapi3.NewStringSchema())
			for _, p := range []string{"min", "max", "avg", "sum", "skew"} {
				item.WithProperty(p, openapi3.NewFloat64Schema())
			}
			*doc.Components.Schemas["AggregatedMetricsResponseBody"].Value = *openapi3.NewArraySchema().WithItems(item)
		},
	},
	{
		what: "GET /jobs/:jobid/vertices is not in the spec",
		why:  "Flink's legacy route (seed 000: \"the same as the job\"); validated against getJobDetails' JobDetailsInfo",
	},
	{
		what: "job config and execution result use the names Flink's serializers write (jid, name, execution-config; id, application-status, net-runtime, failure-cause)",
		why:  "the spec draws the Java field names (jobId, executionConfigInfo; jobStatus, netRuntime); its open schemas accept both, and execution-config is checked against ExecutionConfigInfo",
	},
	{
		what: "job details keep attempt, restarts, reason and failures; the plan's HASH inputs carry their key; job config adds the stored spec",
		why:  "no schema of the spec forbids additional properties",
	},
}

// flinkSpec validates responses against Flink's OpenAPI spec.
type flinkSpec struct {
	doc    *openapi3.T
	router routers.Router
}

func loadFlinkSpec(t *testing.T) *flinkSpec {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := wd
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			t.Fatalf("no go.mod above %s", wd)
		}
		root = parent
	}
	path := filepath.Join(root, "..", "shared", "reference", "flink", "rest_v1_dispatcher.yml")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("Flink's OpenAPI spec is not at %s (CI puts shared/ beside the repo): %v", path, err)
	}
	doc, err := openapi3.NewLoader().LoadFromFile(path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	for _, d := range flinkDeviations {
		if d.patch != nil {
			d.patch(doc)
		}
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatalf("router over %s: %v", path, err)
	}
	return &flinkSpec{doc: doc, router: router}
}

// validate checks a 200 answer to GET path against the operation the spec
// routes it to; specPath names the operation when the spec has no such
// path (the legacy /vertices route).
func (fs *flinkSpec) validate(t *testing.T, path, specPath string, r tc.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://localhost"+strings.TrimPrefix(path, "/v1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	route, params, err := fs.router.FindRoute(req)
	if err == nil && strings.Count(route.Path, "/") != strings.Count(req.URL.Path, "/") {
		// The legacy router lets a trailing parameter match nothing.
		err = fmt.Errorf("%s only matches %s with an empty parameter", req.URL.Path, route.Path)
	}
	if err != nil {
		// Not routable: validate the body against the named operation's
		// 200 schema directly.
		item := fs.doc.Paths.Value(specPath)
		if item == nil || item.Get == nil {
			t.Fatalf("%s: no route in the spec (%v) and no operation %q", path, err, specPath)
		}
		schema := item.Get.Responses.Status(200).Value.Content.Get("application/json").Schema.Value
		var body any
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if err := schema.VisitJSON(body, openapi3.MultiErrors(), openapi3.VisitAsResponse()); err != nil {
			t.Errorf("%s does not match %s's schema: %v", path, specPath, err)
		}
		return
	}
	if specPath != "" && route.Path != specPath {
		t.Fatalf("%s routed to %s in the spec, want %s", path, route.Path, specPath)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 r.Code,
		Header:                 r.Header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(r.Body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s does not match the spec (%s): %v\nbody: %.600s", path, route.Path, err, r.Body)
	}
}

// validateSchema checks a value against a named component schema.
func (fs *flinkSpec) validateSchema(t *testing.T, what, name string, v any) {
	t.Helper()
	ref := fs.doc.Components.Schemas[name]
	if ref == nil {
		t.Fatalf("no schema %s", name)
	}
	if err := ref.Value.VisitJSON(v, openapi3.MultiErrors(), openapi3.VisitAsResponse()); err != nil {
		t.Errorf("%s does not match %s: %v", what, name, err)
	}
}

// flinkFixture is a 3-node cluster with an unbounded job running across
// the nodes, a finished bounded job and a failed one.
type flinkFixture struct {
	c                         *tc.Cluster
	leader, follower          *agent.Agent
	running, finished, failed string
	spec                      *flinkSpec
}

const (
	streamingSpec = `{"name":"stream","vertices":[
		{"id":"src","operator":"sequence","parallelism":2,"params":{"from":1,"ratePerSecond":400}},
		{"id":"keyed","operator":"map","parallelism":2,"inputs":[{"from":"src","ship":"forward"}],"params":{"expr":"{\"k\": n % 7, \"n\": n}"}},
		{"id":"cnt","operator":"count","parallelism":3,"inputs":[{"from":"keyed","ship":"hash","key":"k"}]},
		{"id":"out","operator":"discard","parallelism":3,"inputs":[{"from":"cnt","ship":"forward"}]}]}`
	boundedSpec = `{"name":"evens","params":{"limit":1000},"vertices":[
		{"id":"src","operator":"sequence","params":{"from":1,"to":1000}},
		{"id":"even","operator":"filter","inputs":[{"from":"src"}],"params":{"expr":"n % 2 == 0"}},
		{"id":"out","operator":"discard","inputs":[{"from":"even"}]}]}`
	failingSpec = `{"name":"bad-expr","restartStrategy":{"type":"fixed-delay","attempts":1,"delay":"100ms"},"vertices":[
		{"id":"src","operator":"sequence","parallelism":2,"params":{"from":1,"to":100}},
		{"id":"m","operator":"map","parallelism":2,"inputs":[{"from":"src"}],"params":{"expr":"{\"x\": n > 20 ? int(\"not a number\") : n}"}},
		{"id":"out","operator":"discard","inputs":[{"from":"m"}]}]}`
)

func newFlinkFixture(t *testing.T) *flinkFixture {
	t.Helper()
	spec := loadFlinkSpec(t)
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	f := &flinkFixture{c: c, leader: leader, follower: c.Followers()[0], spec: spec}
	f.running = submitSpec(t, c, leader, streamingSpec)
	f.finished = submitSpec(t, c, f.follower, boundedSpec)
	f.failed = submitSpec(t, c, leader, failingSpec)
	waitJobState(t, leader, f.finished, 60*time.Second, fsm.JobFinished)
	waitJobState(t, leader, f.failed, 60*time.Second, fsm.JobFailed)
	j := waitJobState(t, leader, f.running, 30*time.Second, fsm.JobRunning)
	if nodes := fsm.NodesOf(j.Placement); len(nodes) < 2 {
		t.Fatalf("the streaming job runs on %v, want several nodes", nodes)
	}
	// Every node sees every subtask running, and records flow: out of both
	// source subtasks, and over the network into the counters 0 and 1.
	for _, a := range c.Running() {
		for _, id := range []string{f.finished, f.failed} {
			waitJobState(t, a, id, 10*time.Second, fsm.JobFinished, fsm.JobFailed)
		}
		tc.WaitFor(t, 20*time.Second, "every subtask of the streaming job running on "+a.Node.ID(), func() bool {
			j, _ := a.Node.FSM.Job(f.running)
			if j == nil || j.State != fsm.JobRunning || len(j.Subtasks) != 10 {
				return false
			}
			for _, st := range j.Subtasks {
				if st.State != fsm.TaskRunning {
					return false
				}
			}
			return true
		})
	}
	flowing := func(path, agg string) bool {
		r := c.Do(f.follower, "GET", "/jobs/"+f.running+path+"&agg="+agg, nil)
		var m []map[string]any
		if r.Code != 200 || json.Unmarshal(r.Body, &m) != nil || len(m) != 1 {
			return false
		}
		n, _ := m[0][agg].(float64)
		return n > 0
	}
	tc.WaitFor(t, 20*time.Second, "records flowing through the streaming job", func() bool {
		return flowing("/vertices/src/subtasks/metrics?get=numRecordsOut", "min") &&
			flowing("/vertices/cnt/subtasks/metrics?get=numRecordsIn&subtasks=0-1", "sum")
	})
	return f
}

type flinkCase struct {
	name string
	path string // {run}, {fin}, {fail}, {tm} are replaced
	// specPath is the spec's path of the operation; "-" when the route is
	// not Flink's (no validation).
	specPath string
	code     int
	check    func(t *testing.T, f *flinkFixture, body []byte)
}

func (f *flinkFixture) expand(p string) string {
	j, _ := f.leader.Node.FSM.Job(f.running)
	return strings.NewReplacer("{run}", f.running, "{fin}", f.finished, "{fail}", f.failed,
		"{tm}", fsm.SlotNodes(j.Placement)[0]).Replace(p)
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %.300s: %v", body, err)
	}
	return v
}

type metricList []struct {
	ID    string  `json:"id"`
	Value *string `json:"value"`
}

func (m metricList) value(id string) (string, bool) {
	for _, e := range m {
		if e.ID == id && e.Value != nil {
			return *e.Value, true
		}
	}
	return "", false
}

func TestFlinkAPIRoutesOnLeaderAndFollowerMatchTheSpec(t *testing.T) {
	f := newFlinkFixture(t)
	cases := []flinkCase{
		{"jobmanager config", "/jobmanager/config", "/jobmanager/config", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			kv := map[string]string{}
			for _, e := range decode[[]struct{ Key, Value string }](t, b) {
				kv[e.Key] = e.Value
			}
			for _, k := range []string{"rest.port", "taskmanager.numberOfTaskSlots", "jobmanager.web.backpressure.num-samples", "web.refresh-interval", "node-id"} {
				if kv[k] == "" {
					t.Errorf("no %s in %v", k, kv)
				}
			}
			if strings.Contains(string(b), tc.Token) {
				t.Errorf("the config shows the API token")
			}
		}},
		{"jobmanager metric ids", "/jobmanager/metrics", "/jobmanager/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if ids := decode[metricList](t, b); len(ids) != 4 || ids[0].Value != nil {
				t.Errorf("ids %s", b)
			}
		}},
		{"jobmanager metric values", "/jobmanager/metrics?get=taskSlotsTotal,taskSlotsAvailable,numRunningJobs,numRegisteredTaskManagers,nope", "/jobmanager/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			m := decode[metricList](t, b)
			want := map[string]string{"taskSlotsTotal": "12", "taskSlotsAvailable": "9", "numRunningJobs": "1", "numRegisteredTaskManagers": "3"}
			for id, v := range want {
				if got, _ := m.value(id); got != v {
					t.Errorf("%s = %q, want %q (%s)", id, got, v, b)
				}
			}
			if len(m) != 4 {
				t.Errorf("unknown id answered: %s", b)
			}
		}},
		{"taskmanagers", "/taskmanagers", "/taskmanagers", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			j, _ := f.leader.Node.FSM.Job(f.running)
			used := map[string]int{}
			for _, n := range fsm.SlotNodes(j.Placement) {
				used[n]++
			}
			tms := decode[struct {
				TaskManagers []struct {
					ID                     string
					SlotsNumber, FreeSlots int
					AssignedTasks          int
					Hardware               struct{ CPUCores int }
					TimeSinceLastHeartbeat int64
				}
			}](t, b).TaskManagers
			if len(tms) != 3 {
				t.Fatalf("%d task managers", len(tms))
			}
			for _, tm := range tms {
				if tm.SlotsNumber != 4 || tm.FreeSlots != 4-used[tm.ID] || tm.Hardware.CPUCores < 1 || tm.TimeSinceLastHeartbeat <= 0 {
					t.Errorf("task manager %+v, used slots %d", tm, used[tm.ID])
				}
			}
		}},
		{"taskmanager", "/taskmanagers/{tm}", "/taskmanagers/{taskmanagerid}", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			tm := decode[struct {
				ID             string
				AllocatedSlots []struct{ JobID string }
				Metrics        struct{ HeapUsed int64 }
			}](t, b)
			if len(tm.AllocatedSlots) == 0 || tm.AllocatedSlots[0].JobID != f.running || tm.Metrics.HeapUsed <= 0 {
				t.Errorf("task manager %s", b)
			}
		}},
		{"taskmanager metrics", "/taskmanagers/{tm}/metrics?get=Status.JVM.Memory.Heap.Used", "/taskmanagers/{taskmanagerid}/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if v, ok := decode[metricList](t, b).value("Status.JVM.Memory.Heap.Used"); !ok || v == "0" {
				t.Errorf("heap %s", b)
			}
		}},
		{"taskmanagers metrics", "/taskmanagers/metrics?get=Status.JVM.Threads.Count&agg=min,max", "/taskmanagers/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			m := decode[[]map[string]any](t, b)
			if len(m) != 1 || m[0]["min"] == nil || m[0]["sum"] != nil {
				t.Errorf("aggregated %s", b)
			}
		}},
		{"taskmanagers metric ids", "/taskmanagers/metrics", "/taskmanagers/metrics", 200, nil},

		{"jobs overview", "/jobs/overview", "/jobs/overview", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			jobs := decode[struct {
				Jobs []struct {
					JID, State string
					Tasks      map[string]int
				}
			}](t, b).Jobs
			want := map[string]string{f.running: "RUNNING", f.finished: "FINISHED", f.failed: "FAILED"}
			for _, j := range jobs {
				if want[j.JID] != j.State {
					t.Errorf("job %s is %s, want %s", j.JID, j.State, want[j.JID])
				}
				if j.JID == f.running && (j.Tasks["total"] != 10 || j.Tasks["running"] != 10) {
					t.Errorf("running job tasks %v", j.Tasks)
				}
				if j.JID == f.finished && j.Tasks["finished"] != 3 {
					t.Errorf("finished job tasks %v", j.Tasks)
				}
			}
			if len(jobs) != 3 {
				t.Errorf("%d jobs", len(jobs))
			}
		}},
		{"job details running", "/jobs/{run}", "/jobs/{jobid}", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			d := decode[struct {
				JID, State string
				EndTime    int64 `json:"end-time"`
				Timestamps map[string]int64
				Vertices   []struct {
					ID, Status string
					Tasks      map[string]int
					Metrics    map[string]any
				}
				StatusCounts map[string]int `json:"status-counts"`
				Plan         struct{ Nodes []struct{ ID string } }
				Attempt      int
			}](t, b)
			if d.State != "RUNNING" || d.EndTime != -1 || d.Timestamps["RUNNING"] == 0 || d.Timestamps["FINISHED"] != 0 || len(d.Timestamps) != 11 {
				t.Errorf("job %+v", d)
			}
			if len(d.Vertices) != 4 || d.Vertices[0].ID != "src" || d.Vertices[3].ID != "out" || len(d.Plan.Nodes) != 4 || d.StatusCounts["RUNNING"] != 4 || d.Attempt != 1 {
				t.Fatalf("vertices/plan %s", b)
			}
			if d.Vertices[2].Tasks["RUNNING"] != 3 || d.Vertices[2].Metrics["read-records-complete"] != true {
				t.Errorf("cnt %+v", d.Vertices[2])
			}
		}},
		{"job details failed", "/jobs/{fail}", "/jobs/{jobid}", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			d := decode[struct {
				State      string
				Timestamps map[string]int64
				Restarts   int
				Failures   []fsm.Failure
			}](t, b)
			if d.State != "FAILED" || d.Timestamps["FAILED"] == 0 || d.Timestamps["RESTARTING"] == 0 || d.Restarts != 1 || len(d.Failures) < 2 {
				t.Errorf("failed job %s", b)
			}
		}},
		{"vertices (legacy)", "/jobs/{fin}/vertices", "/jobs/{jobid}", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			d := decode[struct {
				State    string
				Vertices []struct{ Status string }
			}](t, b)
			if d.State != "FINISHED" || len(d.Vertices) != 3 || d.Vertices[2].Status != "FINISHED" {
				t.Errorf("finished job %s", b)
			}
		}},
		{"status", "/jobs/{run}/status", "/jobs/{jobid}/status", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if s := decode[struct{ Status string }](t, b).Status; s != "RUNNING" {
				t.Errorf("status %s", s)
			}
		}},
		{"config", "/jobs/{fail}/config", "/jobs/{jobid}/config", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			cfg := decode[map[string]any](t, b)
			f.spec.validateSchema(t, "execution-config", "ExecutionConfigInfo", cfg["execution-config"])
			ec, _ := cfg["execution-config"].(map[string]any)
			if cfg["jid"] != f.failed || !strings.Contains(fmt.Sprint(ec["restart-strategy"]), "fixed delay") {
				t.Errorf("config %s", b)
			}
		}},
		{"config params", "/jobs/{fin}/config", "/jobs/{jobid}/config", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if !strings.Contains(string(b), `"user-config":{"limit":"1000"}`) {
				t.Errorf("config %s", b)
			}
		}},
		{"plan", "/jobs/{run}/plan", "/jobs/{jobid}/plan", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			p := decode[struct {
				Plan struct {
					JID   string
					Nodes []struct {
						ID     string
						Inputs []struct {
							Num          int
							ID           string
							ShipStrategy string `json:"ship_strategy"`
							Exchange     string
						}
					}
				}
			}](t, b).Plan
			if p.JID != f.running || len(p.Nodes) != 4 || p.Nodes[2].ID != "cnt" || len(p.Nodes[2].Inputs) != 1 ||
				p.Nodes[2].Inputs[0].ID != "keyed" || p.Nodes[2].Inputs[0].ShipStrategy != "HASH" || p.Nodes[0].Inputs != nil {
				t.Errorf("plan %s", b)
			}
		}},
		{"exceptions", "/jobs/{fail}/exceptions", "/jobs/{jobid}/exceptions", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			e := decode[struct {
				Root             string                                       `json:"root-exception"`
				All              []struct{ Exception, Task, Location string } `json:"all-exceptions"`
				ExceptionHistory struct {
					Entries []struct {
						ExceptionName, Stacktrace, TaskName, TaskManagerID string
						Timestamp                                          int64
						ConcurrentExceptions                               []struct{ TaskName string }
					}
					Truncated bool
				}
			}](t, b)
			h := e.ExceptionHistory
			if len(h.Entries) != 2 || h.Truncated {
				t.Fatalf("history %s", b)
			}
			if h.Entries[0].Timestamp < h.Entries[1].Timestamp {
				t.Errorf("history is not newest first")
			}
			for _, en := range h.Entries {
				if !strings.Contains(en.Stacktrace, "not a number") || !strings.HasPrefix(en.TaskName, "map:m (") || en.TaskManagerID == "" {
					t.Errorf("entry %+v", en)
				}
			}
			if !strings.Contains(e.Root, "not a number") || len(e.All) == 0 {
				t.Errorf("legacy fields %s", b)
			}
		}},
		{"exceptions limited", "/jobs/{fail}/exceptions?maxExceptions=1", "/jobs/{jobid}/exceptions", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			e := decode[struct {
				ExceptionHistory struct {
					Entries   []any
					Truncated bool
				}
			}](t, b)
			if len(e.ExceptionHistory.Entries) != 1 || !e.ExceptionHistory.Truncated {
				t.Errorf("limited %s", b)
			}
		}},
		{"exceptions filtered by label", "/jobs/{fail}/exceptions?failureLabelFilter=type:user", "/jobs/{jobid}/exceptions", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if !strings.Contains(string(b), `"entries":[]`) || !strings.Contains(string(b), "root-exception") {
				t.Errorf("no failure has labels, so none passes a filter: %s", b)
			}
		}},
		{"exceptions of a healthy job", "/jobs/{fin}/exceptions", "/jobs/{jobid}/exceptions", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if !strings.Contains(string(b), `"entries":[]`) || strings.Contains(string(b), "root-exception") {
				t.Errorf("exceptions %s", b)
			}
		}},
		{"accumulators", "/jobs/{fin}/accumulators", "/jobs/{jobid}/accumulators", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if !strings.Contains(string(b), `{"name":"numRecordsFiltered","type":"LongCounter","value":"500"}`) {
				t.Errorf("accumulators %s", b)
			}
		}},
		{"job metric ids", "/jobs/{run}/metrics", "/jobs/{jobid}/metrics", 200, nil},
		{"job metrics", "/jobs/{fail}/metrics?get=numRestarts,uptime", "/jobs/{jobid}/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			m := decode[metricList](t, b)
			if v, _ := m.value("numRestarts"); v != "1" {
				t.Errorf("metrics %s", b)
			}
		}},
		{"jobs metrics", "/jobs/metrics?get=numRestarts&agg=sum,max,skew&jobs={run},{fail}", "/jobs/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			m := decode[[]map[string]any](t, b)
			if len(m) != 1 || m[0]["sum"] != 1.0 || m[0]["max"] != 1.0 || m[0]["skew"] != 100.0 || m[0]["min"] != nil {
				t.Errorf("aggregated %s", b)
			}
		}},
		{"execution result running", "/jobs/{run}/execution-result", "/jobs/{jobid}/execution-result", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if string(b) != `{"status":{"id":"IN_PROGRESS"}}` {
				t.Errorf("result %s", b)
			}
		}},
		{"execution result finished", "/jobs/{fin}/execution-result", "/jobs/{jobid}/execution-result", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if !strings.Contains(string(b), `"application-status":"SUCCEEDED"`) || !strings.Contains(string(b), `"COMPLETED"`) {
				t.Errorf("result %s", b)
			}
		}},
		{"execution result failed", "/jobs/{fail}/execution-result", "/jobs/{jobid}/execution-result", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if !strings.Contains(string(b), `"application-status":"FAILED"`) || !strings.Contains(string(b), "not a number") {
				t.Errorf("result %s", b)
			}
		}},

		{"vertex", "/jobs/{run}/vertices/cnt", "/jobs/{jobid}/vertices/{vertexid}", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			v := decode[struct {
				ID       string
				Subtasks []struct {
					Subtask, Attempt int
					Status           string
					Endpoint         string
					TaskManagerID    string           `json:"taskmanager-id"`
					StartTime        int64            `json:"start-time"`
					StatusDuration   map[string]int64 `json:"status-duration"`
				}
			}](t, b)
			if v.ID != "cnt" || len(v.Subtasks) != 3 {
				t.Fatalf("vertex %s", b)
			}
			for i, st := range v.Subtasks {
				if st.Subtask != i || st.Status != "RUNNING" || st.Attempt != 0 || st.TaskManagerID == "" || !strings.Contains(st.Endpoint, ":") || st.StartTime <= 0 {
					t.Errorf("subtask %+v", st)
				}
			}
		}},
		{"subtask times", "/jobs/{fin}/vertices/src/subtasktimes", "/jobs/{jobid}/vertices/{vertexid}/subtasktimes", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			st := decode[struct {
				Subtasks []struct{ Timestamps map[string]int64 }
			}](t, b).Subtasks
			if len(st) != 1 || st[0].Timestamps["FINISHED"] == 0 || st[0].Timestamps["FAILED"] != 0 {
				t.Errorf("times %s", b)
			}
		}},
		{"vertex task managers", "/jobs/{run}/vertices/cnt/taskmanagers", "/jobs/{jobid}/vertices/{vertexid}/taskmanagers", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			tms := decode[struct {
				TaskManagers []struct {
					TaskManagerID string         `json:"taskmanager-id"`
					StatusCounts  map[string]int `json:"status-counts"`
				}
			}](t, b).TaskManagers
			n := 0
			for _, tm := range tms {
				n += tm.StatusCounts["RUNNING"]
			}
			if n != 3 {
				t.Errorf("task managers %s", b)
			}
		}},
		{"vertex accumulators", "/jobs/{fin}/vertices/even/accumulators", "/jobs/{jobid}/vertices/{vertexid}/accumulators", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if string(b) != `{"id":"even","user-accumulators":[{"name":"numRecordsFiltered","type":"LongCounter","value":"500"}]}` {
				t.Errorf("accumulators %s", b)
			}
		}},
		{"subtasks accumulators", "/jobs/{fin}/vertices/even/subtasks/accumulators", "/jobs/{jobid}/vertices/{vertexid}/subtasks/accumulators", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if !strings.Contains(string(b), `"parallelism":1`) || !strings.Contains(string(b), `"value":"500"`) {
				t.Errorf("accumulators %s", b)
			}
		}},
		{"subtask", "/jobs/{run}/vertices/src/subtasks/1", "/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			st := decode[struct {
				Subtask int
				Status  string
				Metrics map[string]any
			}](t, b)
			if st.Subtask != 1 || st.Status != "RUNNING" || st.Metrics["write-records"].(float64) <= 0 {
				t.Errorf("subtask %s", b)
			}
		}},
		{"current attempt", "/jobs/{run}/vertices/src/subtasks/0/attempts/0", "/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/attempts/{attempt}", 200, nil},
		{"current attempt after a restart", "/jobs/{fail}/vertices/m/subtasks/0/attempts/1", "/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/attempts/{attempt}", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if st := decode[struct{ Attempt int }](t, b); st.Attempt != 1 {
				t.Errorf("attempt %s", b)
			}
		}},
		{"attempt accumulators", "/jobs/{fin}/vertices/even/subtasks/0/attempts/0/accumulators", "/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/attempts/{attempt}/accumulators", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			a := decode[struct {
				ID               string
				UserAccumulators []struct{ Name, Value string } `json:"user-accumulators"`
			}](t, b)
			if len(a.ID) != 32 || len(a.UserAccumulators) != 1 || a.UserAccumulators[0].Value != "500" {
				t.Errorf("accumulators %s", b)
			}
		}},
		{"vertex metric ids", "/jobs/{run}/vertices/cnt/metrics", "/jobs/{jobid}/vertices/{vertexid}/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			ids := map[string]bool{}
			for _, m := range decode[metricList](t, b) {
				ids[m.ID] = true
			}
			for _, id := range []string{"0.numRecordsIn", "2.busyTimeMsPerSecond", "1.buffers.inPoolUsage", "2.isBackPressured"} {
				if !ids[id] {
					t.Errorf("no %s in %s", id, b)
				}
			}
		}},
		{"vertex metric values", "/jobs/{run}/vertices/cnt/metrics?get=0.numRecordsIn,1.numRecordsIn,9.numRecordsIn", "/jobs/{jobid}/vertices/{vertexid}/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if m := decode[metricList](t, b); len(m) != 2 {
				t.Errorf("values %s", b)
			}
		}},
		{"subtasks metrics", "/jobs/{run}/vertices/cnt/subtasks/metrics?get=numRecordsIn,isBackPressured&agg=sum,MIN&subtasks=0-1", "/jobs/{jobid}/vertices/{vertexid}/subtasks/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			m := decode[[]map[string]any](t, b)
			if len(m) != 1 || m[0]["id"] != "numRecordsIn" || m[0]["sum"].(float64) <= 0 || m[0]["max"] != nil {
				t.Errorf("aggregated %s", b)
			}
		}},
		{"subtasks metric ids", "/jobs/{run}/vertices/cnt/subtasks/metrics", "/jobs/{jobid}/vertices/{vertexid}/subtasks/metrics", 200, nil},
		{"subtask metrics", "/jobs/{run}/vertices/cnt/subtasks/2/metrics?get=numRecordsIn,idleTimeMsPerSecond", "/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/metrics", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			if m := decode[metricList](t, b); len(m) != 2 {
				t.Errorf("metrics %s", b)
			}
		}},
		{"watermarks", "/jobs/{run}/vertices/out/watermarks", "/jobs/{jobid}/vertices/{vertexid}/watermarks", 200, func(t *testing.T, f *flinkFixture, b []byte) {
			m := decode[metricList](t, b)
			if v, _ := m.value("2.currentInputWatermark"); len(m) != 3 || v != "-9223372036854775808" {
				t.Errorf("watermarks %s", b)
			}
		}},

		// Bad input.
		{"malformed job id", "/jobs/not-a-job", "-", 400, nil},
		{"malformed job id, nested", "/jobs/ABCDEF0123456789ABCDEF0123456789/vertices/src", "-", 400, nil},
		{"unknown job", "/jobs/0123456789abcdef0123456789abcdef", "-", 404, func(t *testing.T, f *flinkFixture, b []byte) {
			if string(b) != `{"errors":["Job 0123456789abcdef0123456789abcdef not found"]}` {
				t.Errorf("body %s", b)
			}
		}},
		{"unknown job exceptions", "/jobs/0123456789abcdef0123456789abcdef/exceptions", "-", 404, nil},
		{"unknown vertex", "/jobs/{run}/vertices/nope", "-", 404, nil},
		{"unknown vertex metrics", "/jobs/{run}/vertices/nope/subtasks/metrics", "-", 404, nil},
		{"subtask index not a number", "/jobs/{run}/vertices/src/subtasks/one", "-", 400, nil},
		{"negative subtask index", "/jobs/{run}/vertices/src/subtasks/-1/metrics", "-", 400, nil},
		{"unknown subtask", "/jobs/{run}/vertices/src/subtasks/2", "-", 404, nil},
		{"older attempt", "/jobs/{fail}/vertices/m/subtasks/0/attempts/0", "-", 404, nil},
		{"unknown attempt", "/jobs/{run}/vertices/src/subtasks/0/attempts/7/accumulators", "-", 404, nil},
		{"attempt not a number", "/jobs/{run}/vertices/src/subtasks/0/attempts/x", "-", 400, nil},
		{"unknown task manager", "/taskmanagers/nope", "-", 404, nil},
		{"unknown task manager metrics", "/taskmanagers/nope/metrics", "-", 404, nil},
		{"bad maxExceptions", "/jobs/{fail}/exceptions?maxExceptions=many", "-", 400, nil},
		{"bad failureLabelFilter", "/jobs/{fail}/exceptions?failureLabelFilter=nolabel", "-", 400, nil},
		{"bad agg", "/jobs/{run}/vertices/cnt/subtasks/metrics?get=numRecordsIn&agg=median", "-", 400, nil},
		{"bad subtask range", "/jobs/{run}/vertices/cnt/subtasks/metrics?subtasks=2-1", "-", 400, nil},
		{"bad job filter", "/jobs/metrics?jobs=xyz", "-", 400, nil},
		{"unknown query params are ignored", "/jobs/{run}/plan?color=blue&maxExceptions=x", "/jobs/{jobid}/plan", 200, nil},
	}
	nodes := []struct {
		name   string
		a      *agent.Agent
		prefix string
	}{{"leader", f.leader, "/v1"}, {"leader", f.leader, ""}, {"follower", f.follower, "/v1"}, {"follower", f.follower, ""}}
	for _, tcase := range cases {
		t.Run(tcase.name, func(t *testing.T) {
			path := f.expand(tcase.path)
			for _, n := range nodes {
				r := f.c.Do(n.a, "GET", n.prefix+path, nil)
				where := n.name + " " + n.prefix + path
				if r.Code != tcase.code {
					t.Errorf("%s: %d %s, want %d", where, r.Code, r.Body, tcase.code)
					continue
				}
				if r.Code != 200 {
					if !bytes.HasPrefix(r.Body, []byte(`{"errors":["`)) {
						t.Errorf("%s: error body %s", where, r.Body)
					}
				} else if tcase.specPath != "-" {
					f.spec.validate(t, n.prefix+path, tcase.specPath, r)
				}
				if tcase.check != nil {
					t.Run(n.name+n.prefix, func(t *testing.T) { tcase.check(t, f, r.Body) })
				}
			}
		})
	}
}

// TestFlinkAPIEndedJobsReadTheSameOnEveryNode compares whole answers about
// ended jobs across the nodes: only "now" may differ.
func TestFlinkAPIEndedJobsReadTheSameOnEveryNode(t *testing.T) {
	f := newFlinkFixture(t)
	paths := []string{
		"/jobs/{fin}", "/jobs/{fail}", "/jobs/{fin}/plan", "/jobs/{fail}/config", "/jobs/{fail}/exceptions",
		"/jobs/{fin}/accumulators", "/jobs/{fin}/execution-result", "/jobs/{fail}/execution-result",
		"/jobs/{fin}/vertices/even", "/jobs/{fail}/vertices/m/subtasktimes", "/jobs/{fin}/vertices/src/taskmanagers",
		"/jobs/{fin}/vertices/even/subtasks/accumulators", "/jobs/{fin}/vertices/src/metrics?get=0.numRecordsOut",
	}
	for _, p := range paths {
		p = f.expand(p)
		var first any
		for i, a := range f.c.Running() {
			r := f.c.Do(a, "GET", p, nil)
			if r.Code != 200 {
				t.Fatalf("%s on %s: %d %s", p, a.Node.ID(), r.Code, r.Body)
			}
			body := decode[any](t, r.Body)
			if m, ok := body.(map[string]any); ok {
				delete(m, "now")
			}
			if i == 0 {
				first = body
			} else if !reflect.DeepEqual(first, body) {
				t.Errorf("%s differs on %s:\n%v\n%v", p, a.Node.ID(), first, body)
			}
		}
	}
	// The running job: same states, vertices and plan everywhere.
	shape := func(a *agent.Agent) string {
		var d struct {
			State    string
			Vertices []struct {
				ID, Name, Status string
				Parallelism      int
				Tasks            map[string]int
			}
			Plan any
		}
		if err := json.Unmarshal(f.c.Do(a, "GET", "/jobs/"+f.running, nil).Body, &d); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(d)
		return string(b)
	}
	if l, fo := shape(f.leader), shape(f.follower); l != fo {
		t.Errorf("running job differs:\nleader   %s\nfollower %s", l, fo)
	}
}

// TestFlinkAPIFreeSlotsFollowPlacements checks slot accounting as jobs come
// and go: a cancelled job gives its slots back.
func TestFlinkAPIFreeSlotsFollowPlacements(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	free := func() (total int) {
		var out struct{ TaskManagers []struct{ FreeSlots int } }
		c.Do(c.Followers()[0], "GET", "/taskmanagers", nil).JSON(t, &out)
		for _, tm := range out.TaskManagers {
			total += tm.FreeSlots
		}
		return total
	}
	if n := free(); n != 12 {
		t.Fatalf("%d free slots before any job, want 12", n)
	}
	id := submitSpec(t, c, leader, streamingSpec)
	waitJobState(t, leader, id, 20*time.Second, fsm.JobRunning)
	tc.WaitFor(t, 5*time.Second, "9 free slots on the follower", func() bool { return free() == 9 })
	if r := c.Do(leader, "PATCH", "/jobs/"+id, nil); r.Code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", r.Code, r.Body)
	}
	waitJobState(t, leader, id, 10*time.Second, fsm.JobCanceled)
	tc.WaitFor(t, 5*time.Second, "12 free slots again", func() bool { return free() == 12 })
}

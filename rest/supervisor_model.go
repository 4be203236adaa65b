package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"weak"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/cluster"
	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
	"github.com/dispatcher-dev/dispatcher/runtime"
)

// Jobs as Habitat services. A job belongs to the service group
// <service>.<group>[@<organization>]: the spec's service.name (default the
// job name), service.group (default "default") and service.organization
// (default none). Every part is a Habitat name: letters, digits, '_' and '-'.
// Parts that are not are made into one (each run of other characters becomes
// '-'), so that every job has a usable group.

// habitatNamePattern is what a service, group or organization may be: the
// characters of Habitat package names, which also excludes the '.', '@' and
// '#' that Habitat's ServiceGroup parser rejects.
var habitatNamePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

var habitatNameInvalid = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

func validHabitatName(s string) bool { return habitatNamePattern.MatchString(s) }

// habitatName makes s a valid Habitat name.
func habitatName(s, fallback string) string {
	if validHabitatName(s) {
		return s
	}
	s = strings.Trim(habitatNameInvalid.ReplaceAllString(s, "-"), "-")
	if len(s) > 255 {
		s = s[:255]
	}
	if s == "" {
		return fallback
	}
	return s
}

// serviceGroup is Habitat's ServiceGroup.
type serviceGroup struct {
	Service, Group, Org string
}

func (sg serviceGroup) String() string {
	s := sg.Service + "." + sg.Group
	if sg.Org != "" {
		s += "@" + sg.Org
	}
	return s
}

// orgPtr is the census's "org": null without an organization.
func (sg serviceGroup) orgPtr() *string {
	if sg.Org == "" {
		return nil
	}
	o := sg.Org
	return &o
}

// serviceGroupOf is the job's service group.
func serviceGroupOf(g *jobgraph.JobGraph) serviceGroup {
	sg := serviceGroup{Service: g.Name, Group: "default"}
	if g.Service != nil {
		if g.Service.Name != "" {
			sg.Service = g.Service.Name
		}
		if g.Service.Group != "" {
			sg.Group = g.Service.Group
		}
		sg.Org = g.Service.Organization
	}
	sg.Service = habitatName(sg.Service, "job")
	sg.Group = habitatName(sg.Group, "default")
	if sg.Org != "" {
		sg.Org = habitatName(sg.Org, "")
	}
	return sg
}

// jobService is a stored job with its decoded spec.
type jobService struct {
	job   *fsm.Job
	graph *jobgraph.JobGraph
	order []*jobgraph.Vertex
	sg    serviceGroup
}

// decodeJobSpec reads a stored spec (Parse already filled every default) and
// orders its vertices topologically.
func decodeJobSpec(spec json.RawMessage) (*jobgraph.JobGraph, []*jobgraph.Vertex, error) {
	var g jobgraph.JobGraph
	if err := json.Unmarshal(spec, &g); err != nil {
		return nil, nil, err
	}
	return &g, specTopoOrder(&g), nil
}

// specTopoOrder sorts vertices sources first, stable in spec order, as
// jobgraph's validator does (the stored spec has no cycles).
func specTopoOrder(g *jobgraph.JobGraph) []*jobgraph.Vertex {
	ids := map[string]bool{}
	for _, v := range g.Vertices {
		if v != nil {
			ids[v.ID] = true
		}
	}
	indeg := map[string]int{}
	down := map[string][]string{}
	for _, v := range g.Vertices {
		if v == nil {
			continue
		}
		for _, in := range v.Inputs {
			if ids[in.From] {
				indeg[v.ID]++
				down[in.From] = append(down[in.From], v.ID)
			}
		}
	}
	var order []*jobgraph.Vertex
	done := map[string]bool{}
	for progressed := true; progressed; {
		progressed = false
		for _, v := range g.Vertices {
			if v != nil && !done[v.ID] && indeg[v.ID] == 0 {
				done[v.ID] = true
				order = append(order, v)
				progressed = true
				for _, d := range down[v.ID] {
					indeg[d]--
				}
			}
		}
	}
	return order
}

func (js *jobService) vertex(id string) *jobgraph.Vertex {
	for _, v := range js.order {
		if v.ID == id {
			return v
		}
	}
	return nil
}

// nodes are the distinct nodes of the job's current placement, sorted.
func (js *jobService) nodes() []string { return fsm.NodesOf(js.job.Placement) }

func (js *jobService) placedOn(node string) bool {
	for _, n := range js.nodes() {
		if n == node {
			return true
		}
	}
	return false
}

// leaderNode is the service group's leader: the node hosting subtask 0 of
// the first vertex in topological order.
func (js *jobService) leaderNode() string {
	if len(js.order) == 0 {
		return ""
	}
	if nodes := js.job.Placement[js.order[0].ID]; len(nodes) > 0 {
		return nodes[0]
	}
	return ""
}

// subtasksOn lists the job's subtasks of the current attempt on node, in
// topological vertex order.
func (js *jobService) subtasksOn(node string) []*fsm.Subtask {
	var out []*fsm.Subtask
	for _, v := range js.order {
		for i, n := range js.job.Placement[v.ID] {
			if n != node {
				continue
			}
			if st := js.job.Subtasks[fsm.SubtaskKey(v.ID, i)]; st != nil {
				out = append(out, st)
			}
		}
	}
	return out
}

// loaded tells whether a job still counts as a loaded service: it has been
// placed and neither finished nor was cancelled. A FAILED job stays loaded
// (desired state Down, health CRITICAL), as a crashed Habitat service stays
// loaded, until another job takes its service group.
func serviceLoaded(j *fsm.Job) bool {
	return len(j.Placement) > 0 && j.State != fsm.JobFinished && j.State != fsm.JobCanceled
}

// jobServices returns the loaded services of the cluster, one per service
// group, sorted by group. When several jobs claim a group, a job that has
// not ended wins over a FAILED one; among running jobs the first claimant
// (oldest) wins, among failed ones the newest.
func (s *Server) jobServices() []*jobService {
	best := map[string]*jobService{}
	for _, j := range s.node.FSM.Jobs() {
		if !serviceLoaded(j) {
			continue
		}
		g, order, err := decodeJobSpec(j.Spec)
		if err != nil {
			continue
		}
		js := &jobService{job: j, graph: g, order: order, sg: serviceGroupOf(g)}
		key := js.sg.String()
		cur, ok := best[key]
		if !ok || claimBeats(js.job, cur.job) {
			best[key] = js
		}
	}
	out := make([]*jobService, 0, len(best))
	for _, js := range best {
		out = append(out, js)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].sg.String() < out[b].sg.String() })
	return out
}

func claimBeats(a, b *fsm.Job) bool {
	aLive, bLive := !fsm.TerminalJobState(a.State), !fsm.TerminalJobState(b.State)
	switch {
	case aLive != bLive:
		return aLive
	case aLive:
		return a.StartTime < b.StartTime || (a.StartTime == b.StartTime && a.ID < b.ID)
	default:
		return a.StartTime > b.StartTime || (a.StartTime == b.StartTime && a.ID > b.ID)
	}
}

// servicesHere are the loaded services with subtasks on this node.
func (s *Server) servicesHere() []*jobService {
	var out []*jobService
	for _, js := range s.jobServices() {
		if js.placedOn(s.node.ID()) {
			out = append(out, js)
		}
	}
	return out
}

// serviceHere finds a service group loaded on this node.
func (s *Server) serviceHere(sg serviceGroup) *jobService {
	want := sg.String()
	for _, js := range s.servicesHere() {
		if js.sg.String() == want {
			return js
		}
	}
	return nil
}

// serviceGroupTaken tells whether a job that has not ended already claims
// graph's service group; the string says which, for a 409. A FAILED job does
// not hold its group. The same job id (an idempotent resubmission) is not a
// conflict.
func (s *Server) serviceGroupTaken(graph *jobgraph.JobGraph) (string, bool) {
	want := serviceGroupOf(graph).String()
	for _, j := range s.node.FSM.Jobs() {
		if fsm.TerminalJobState(j.State) || (graph.JobID != "" && j.ID == graph.JobID) {
			continue
		}
		g, _, err := decodeJobSpec(j.Spec)
		if err != nil {
			continue
		}
		if serviceGroupOf(g).String() == want {
			return fmt.Sprintf("Service group %s is already claimed by job %s (%q, %s); cancel it first or set another service.name/service.group.", want, j.ID, j.Name, j.State), true
		}
	}
	return "", false
}

// Health, Habitat's four results.
const (
	healthOK       = "OK"
	healthWarning  = "WARNING"
	healthCritical = "CRITICAL"
	healthUnknown  = "UNKNOWN"
)

// habitatHealthName is the /services spelling ("Ok", "Warning", ...).
func habitatHealthName(status string) string {
	return status[:1] + strings.ToLower(status[1:])
}

type healthResult struct {
	Status string `json:"status"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

// highTimeRatio is the threshold of HIGH back pressure.
const highTimeRatio = 0.5

// health judges a job as a service: CRITICAL when it is failing or failed,
// WARNING when it is restarting, being cancelled or has a subtask with HIGH
// back pressure (backPressuredTimeMsPerSecond/1000 > 0.5 in the live
// metrics), OK when it runs without either (checkpoints cannot fail yet),
// UNKNOWN when there is nothing to judge by.
func (s *Server) serviceHealth(ctx context.Context, js *jobService) healthResult {
	j := js.job
	lastFailure := ""
	if n := len(j.Failures); n > 0 {
		f := j.Failures[n-1]
		where := ""
		if f.VertexID != "" {
			where = fmt.Sprintf(" in %s subtask %d", f.VertexID, f.Subtask)
		}
		if f.Node != "" {
			where += " on " + f.Node
		}
		lastFailure = fmt.Sprintf("attempt %d failed%s: %s", f.Attempt, where, f.Message)
	}
	who := fmt.Sprintf("job %s (%s)", j.ID, j.Name)
	switch j.State {
	case fsm.JobFailed, fsm.JobFailing:
		msg := who + " is " + j.State
		if j.Reason != "" {
			msg += ": " + j.Reason
		}
		return healthResult{healthCritical, msg, lastFailure}
	case fsm.JobRestarting:
		return healthResult{healthWarning, fmt.Sprintf("%s is RESTARTING (restart %d)", who, j.Restarts), lastFailure}
	case fsm.JobCancelling:
		return healthResult{healthWarning, who + " is being cancelled", ""}
	case fsm.JobRunning:
	default:
		return healthResult{healthUnknown, who + " is " + j.State + ": nothing to judge its health by", ""}
	}
	live := s.subtasks.get(ctx, j)
	if len(live) == 0 {
		return healthResult{healthUnknown, who + " is RUNNING but no live metrics arrived from its subtasks yet", ""}
	}
	var worst runtime.SubtaskStatus
	worstRatio := -1.0
	for _, v := range js.order {
		for i := 0; i < v.Parallelism; i++ {
			st, ok := live[fsm.SubtaskKey(v.ID, i)]
			if !ok {
				continue
			}
			if r := st.Metrics.BackPressuredTimeMsPerSecond / 1000; r > worstRatio {
				worst, worstRatio = st, r
			}
		}
	}
	if worstRatio > highTimeRatio {
		return healthResult{healthWarning, fmt.Sprintf("%s is RUNNING with HIGH back pressure: %s subtask %d is back pressured %.0f%% of the time (GET /v1/jobs/%s/backpressure names the likely bottleneck)",
			who, worst.VertexID, worst.Subtask, worstRatio*100, j.ID), ""}
	}
	msg := who + " is RUNNING; no HIGH back pressure"
	if worstRatio >= 0 {
		msg += fmt.Sprintf(" (highest: %s subtask %d at %.0f%%)", worst.VertexID, worst.Subtask, worstRatio*100)
	}
	return healthResult{healthOK, msg + "; no failing checkpoints", ""}
}

// gatewayStarted remembers the nodes whose gateway has answered once: the
// gateway answers 503 only until the node first becomes ready, not during
// every later election (it serves replicated state, which stays readable).
// Weak keys keep a stopped node (tests run many) collectable.
var gatewayStarted sync.Map // weak.Pointer[cluster.Node] -> struct{}

// gatewayReady answers 503 "Supervisor hasn't fully started" while this
// node has no state yet (no leader seen or not caught up with the log).
func (s *Server) gatewayReady(c *gin.Context) bool {
	key := weak.Make(s.node)
	if _, ok := gatewayStarted.Load(key); ok {
		return true
	}
	if ok, _ := s.node.Ready(); ok {
		gatewayStarted.Store(key, struct{}{})
		return true
	}
	c.Header("Retry-After", "1")
	fail(c, http.StatusServiceUnavailable, "Supervisor hasn't fully started. Try again later.")
	return false
}

// membersByID indexes the ring's members by id.
func membersByID(members []cluster.MemberInfo) map[string]cluster.MemberInfo {
	out := make(map[string]cluster.MemberInfo, len(members))
	for _, m := range members {
		out[m.ID] = m
	}
	return out
}

package agent_test

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/agent"
	"github.com/dispatcher-dev/dispatcher/config"
	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

type serviceJSON struct {
	ServiceGroup string `json:"service_group"`
	Pkg          struct {
		Origin, Name, Version, Release string
	} `json:"pkg"`
	Process struct {
		PID          *int   `json:"pid"`
		State        string `json:"state"`
		StateEntered int64  `json:"state_entered"`
	} `json:"process"`
	HealthCheck    string         `json:"health_check"`
	RestartCount   int            `json:"restart_count"`
	DesiredState   string         `json:"desired_state"`
	Topology       string         `json:"topology"`
	UpdateStrategy string         `json:"update_strategy"`
	Initialized    bool           `json:"initialized"`
	Cfg            map[string]any `json:"cfg"`
	Sys            struct {
		MemberID        string `json:"member_id"`
		HTTPGatewayPort int    `json:"http_gateway_port"`
		GossipPort      int    `json:"gossip_port"`
	} `json:"sys"`
}

type healthJSON struct {
	Status string `json:"status"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

type censusJSON struct {
	CensusGroups map[string]struct {
		ServiceGroup string  `json:"service_group"`
		LeaderID     *string `json:"leader_id"`
		Population   map[string]struct {
			MemberID  string  `json:"member_id"`
			Service   string  `json:"service"`
			Group     string  `json:"group"`
			Org       *string `json:"org"`
			Leader    bool    `json:"leader"`
			Alive     bool    `json:"alive"`
			Suspect   bool    `json:"suspect"`
			Confirmed bool    `json:"confirmed"`
			Departed  bool    `json:"departed"`
			Sys       struct {
				HTTPGatewayPort int `json:"http_gateway_port"`
			} `json:"sys"`
			Pkg struct{ Release string } `json:"pkg"`
		} `json:"population"`
	} `json:"census_groups"`
}

func services(t *testing.T, c *tc.Cluster, a *agent.Agent) []serviceJSON {
	t.Helper()
	r := c.Do(a, "GET", "/services", nil)
	if r.Code != http.StatusOK {
		t.Fatalf("/services on %s: %d %s", a.Node.ID(), r.Code, r.Body)
	}
	var out []serviceJSON
	r.JSON(t, &out)
	return out
}

func groupsOf(svcs []serviceJSON) []string {
	out := []string{}
	for _, s := range svcs {
		out = append(out, s.ServiceGroup)
	}
	sort.Strings(out)
	return out
}

// The seed's curl sequence: without the token an empty 401, with it a node
// that runs nothing answers exactly [].
func TestSupervisorSeedCurlSequence(t *testing.T) {
	c := tc.New(t, 1, nil)
	a := c.WaitForLeader(10 * time.Second)
	tc.WaitFor(t, 5*time.Second, "the node to be ready", func() bool { ok, _ := a.Node.Ready(); return ok })
	for _, p := range []string{"/services", "/v1/services"} {
		r := tc.Do(t, http.DefaultClient, "GET", a.URL()+p, "", nil)
		if r.Code != http.StatusUnauthorized || len(r.Body) != 0 || r.Header.Get("Content-Length") != "0" {
			t.Errorf("%s without the token: %d %q (content-length %q), want an empty 401", p, r.Code, r.Body, r.Header.Get("Content-Length"))
		}
		r = c.Do(a, "GET", p, nil)
		if r.Code != http.StatusOK || string(r.Body) != "[]" || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s with the token: %d %q %q, want 200 []", p, r.Code, r.Body, r.Header.Get("Content-Type"))
		}
	}
}

// Before the node has a state every gateway route is 503 "Supervisor
// hasn't fully started".
func TestSupervisorNotStartedIs503(t *testing.T) {
	c := tc.New(t, 1, func(cfg *config.Config) { cfg.BootstrapExpect = 2 }) // waits for a peer forever
	a := c.Running()[0]
	for _, p := range []string{"/services", "/services/a/b", "/services/a/b/health", "/services/a/b/c/config", "/census", "/butterfly"} {
		r := c.Do(a, "GET", p, nil)
		if r.Code != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "Supervisor hasn't fully started") {
			t.Errorf("%s: %d %s, want 503", p, r.Code, r.Body)
		}
	}
}

func TestSupervisorServicesAndCensusFollowPlacementAndANodeKill(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)

	alpha := submitSpec(t, c, leader, `{"name":"alpha","parallelism":2,"service":{"group":"blue"},"params":{"rate":300},
		"restartStrategy":{"type":"fixed-delay","attempts":10,"delay":"100ms"},"vertices":[
		{"id":"src","operator":"sequence","params":{"from":1,"ratePerSecond":"${rate}"}},
		{"id":"out","operator":"discard","inputs":[{"from":"src"}]}]}`)
	ja := waitSubtasksRunning(t, leader, alpha)
	beta := submitSpec(t, c, leader, `{"name":"beta","service":{"name":"beta-svc","group":"green","organization":"acme"},"vertices":[
		{"id":"src","operator":"sequence","params":{"from":1,"ratePerSecond":300}},
		{"id":"out","operator":"discard","inputs":[{"from":"src"}]}]}`)
	jb := waitSubtasksRunning(t, leader, beta)
	if len(fsm.NodesOf(ja.Placement)) != 2 {
		t.Fatalf("alpha's placement %v does not span two nodes", ja.Placement)
	}

	// /services on each node lists exactly what runs there.
	expect := func(a *agent.Agent) []string {
		out := []string{}
		if hasString(fsm.NodesOf(ja.Placement), a.Node.ID()) {
			out = append(out, "alpha.blue")
		}
		if hasString(fsm.NodesOf(jb.Placement), a.Node.ID()) {
			out = append(out, "beta-svc.green@acme")
		}
		sort.Strings(out)
		return out
	}
	for _, a := range c.Running() {
		want := expect(a)
		var svcs []serviceJSON
		tc.WaitFor(t, 10*time.Second, fmt.Sprintf("%s to list %v, healthy", a.Node.ID(), want), func() bool {
			svcs = services(t, c, a)
			for _, s := range svcs {
				if s.HealthCheck != "Ok" || s.Process.State != "up" {
					return false
				}
			}
			return strings.Join(groupsOf(svcs), ",") == strings.Join(want, ",")
		})
		for _, s := range svcs {
			jobID := alpha
			if s.ServiceGroup != "alpha.blue" {
				jobID = beta
			}
			if s.Pkg.Origin != "dispatcher" || s.Pkg.Release != jobID || s.Process.PID != nil || s.Process.State != "up" || s.Process.StateEntered == 0 ||
				s.DesiredState != "Up" || s.Topology != "standalone" || s.UpdateStrategy != "none" || !s.Initialized ||
				s.Sys.MemberID != a.Node.ID() || s.Sys.HTTPGatewayPort == 0 || s.RestartCount != 0 || s.Cfg["job_id"] != jobID {
				t.Errorf("%s on %s: %+v", s.ServiceGroup, a.Node.ID(), s)
			}
		}
		// One service, its config and health; 404 where it is not loaded.
		for _, sg := range []struct{ path, job string }{{"/services/alpha/blue", alpha}, {"/services/beta-svc/green/acme", beta}} {
			here := hasString(want, map[string]string{alpha: "alpha.blue", beta: "beta-svc.green@acme"}[sg.job])
			for _, suffix := range []string{"", "/config", "/health"} {
				r := c.Do(a, "GET", sg.path+suffix, nil)
				switch {
				case !here && (r.Code != http.StatusNotFound || len(r.Body) != 0):
					t.Errorf("%s%s on %s: %d %q, want an empty 404", sg.path, suffix, a.Node.ID(), r.Code, r.Body)
				case here && r.Code != http.StatusOK:
					t.Errorf("%s%s on %s: %d %s", sg.path, suffix, a.Node.ID(), r.Code, r.Body)
				case here && suffix == "/config":
					var cfg map[string]any
					r.JSON(t, &cfg)
					if cfg["job_id"] != sg.job || cfg["vertices"] == nil {
						t.Errorf("config %s", r.Body)
					}
					if sg.job == alpha && cfg["params"].(map[string]any)["rate"] != float64(300) {
						t.Errorf("alpha's config lacks its params: %s", r.Body)
					}
				case here && suffix == "/health":
					var h healthJSON
					r.JSON(t, &h)
					if h.Status != "OK" || h.Stdout == "" {
						t.Errorf("health %s", r.Body)
					}
				}
			}
		}
		// Organization scoping, malformed names.
		if r := c.Do(a, "GET", "/services/beta-svc/green", nil); r.Code != http.StatusNotFound || len(r.Body) != 0 {
			t.Errorf("beta without its organization: %d %q", r.Code, r.Body)
		}
		for _, p := range []string{"/services/bad.name/blue", "/services/alpha/bl@ue", "/services/alpha/blue/ac.me", "/services/alpha/blue/a%23b/health"} {
			if r := c.Do(a, "GET", p, nil); r.Code != http.StatusBadRequest || len(r.Body) != 0 {
				t.Errorf("%s: %d %q, want an empty 400", p, r.Code, r.Body)
			}
		}
	}

	// The census of every node has a group per job: its population is the
	// placement, its leader hosts src subtask 0.
	checkCensus := func(a *agent.Agent, group, job string, placement map[string][]string) bool {
		var cs censusJSON
		c.Do(a, "GET", "/census", nil).JSON(t, &cs)
		g, ok := cs.CensusGroups[group]
		if _, dflt := cs.CensusGroups["dispatcher.default"]; !ok || !dflt {
			return false
		}
		nodes := fsm.NodesOf(placement)
		if len(g.Population) != len(nodes) || g.LeaderID == nil || *g.LeaderID != placement["src"][0] {
			return false
		}
		for _, n := range nodes {
			m, ok := g.Population[n]
			if !ok || !m.Alive || m.Leader != (n == *g.LeaderID) || m.Pkg.Release != job || m.Sys.HTTPGatewayPort == 0 {
				return false
			}
		}
		return true
	}
	for _, a := range c.Running() {
		tc.WaitFor(t, 10*time.Second, "the census on "+a.Node.ID()+" to show both jobs", func() bool {
			return checkCensus(a, "alpha.blue", alpha, ja.Placement) && checkCensus(a, "beta-svc.green@acme", beta, jb.Placement)
		})
		var bf struct {
			Services map[string]map[string]struct {
				ServiceGroup string `json:"service_group"`
			} `json:"services"`
			LatestElection map[string]struct {
				MemberID string `json:"member_id"`
			} `json:"latest_election"`
		}
		c.Do(a, "GET", "/butterfly", nil).JSON(t, &bf)
		if len(bf.Services["alpha.blue"]) != 2 || bf.LatestElection["beta-svc.green@acme"].MemberID != jb.Placement["src"][0] {
			t.Errorf("butterfly on %s lacks the job groups: %+v", a.Node.ID(), bf)
		}
	}

	// Kill a node of alpha's population (not the Raft leader): the census
	// shows it gone from the group once the job runs elsewhere.
	var victim string
	for _, n := range fsm.NodesOf(ja.Placement) {
		if n != leader.Node.ID() && !hasString(fsm.NodesOf(jb.Placement), n) {
			victim = n
		}
	}
	if victim == "" {
		t.Fatalf("no victim: alpha %v beta %v leader %s", ja.Placement, jb.Placement, leader.Node.ID())
	}
	c.Kill(victim)
	var now *fsm.Job
	tc.WaitFor(t, 30*time.Second, "alpha to run again without "+victim, func() bool {
		now, _ = leader.Node.FSM.Job(alpha)
		return now.State == fsm.JobRunning && now.Attempt > ja.Attempt && !hasString(fsm.NodesOf(now.Placement), victim)
	})
	now = waitSubtasksRunning(t, leader, alpha)
	for _, a := range c.Running() {
		tc.WaitFor(t, 10*time.Second, "the census on "+a.Node.ID()+" to follow", func() bool {
			return checkCensus(a, "alpha.blue", alpha, now.Placement)
		})
		got := groupsOf(services(t, c, a))
		if hasString(fsm.NodesOf(now.Placement), a.Node.ID()) != hasString(got, "alpha.blue") {
			t.Errorf("after the kill %s lists %v; alpha placed on %v", a.Node.ID(), got, now.Placement)
		}
	}
	var ss []serviceJSON
	for _, a := range c.Running() {
		ss = append(ss, services(t, c, a)...)
	}
	for _, s := range ss {
		if s.ServiceGroup == "alpha.blue" && s.RestartCount < 1 {
			t.Errorf("alpha's restart_count %d after its node died", s.RestartCount)
		}
	}
}

// Health follows the job of a service group: OK while it keeps up,
// WARNING with a slow operator (HIGH back pressure), CRITICAL once failed.
func TestSupervisorHealthMovesFromOKToWarningToCritical(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	const svc = `"service":{"name":"probe","group":"health"}`
	health := func(a *agent.Agent) (int, healthJSON) {
		r := c.Do(a, "GET", "/services/probe/health/health", nil)
		var h healthJSON
		if r.Code != http.StatusNotFound {
			r.JSON(t, &h)
		}
		return r.Code, h
	}
	// waitHealth polls the node running the job (whose replicated state may
	// trail the leader's by a moment) until its health has the status and
	// its stdout says the state.
	waitHealth := func(id, status string, code int, state string) (*agent.Agent, healthJSON) {
		t.Helper()
		j := waitJobState(t, leader, id, 20*time.Second, fsm.JobRunning, fsm.JobFailed)
		node := c.Node(fsm.NodesOf(j.Placement)[0])
		var h healthJSON
		var got int
		tc.WaitFor(t, 20*time.Second, fmt.Sprintf("health %s (%d) on %s", status, code, node.Node.ID()), func() bool {
			got, h = health(node)
			return got == code && h.Status == status && strings.Contains(h.Stdout, state)
		})
		return node, h
	}

	ok := submitSpec(t, c, leader, `{"name":"ok",`+svc+`,"parallelism":2,"vertices":[
		{"id":"src","operator":"sequence","params":{"from":1,"ratePerSecond":500}},
		{"id":"out","operator":"discard","inputs":[{"from":"src"}]}]}`)
	waitSubtasksRunning(t, leader, ok)
	node, h := waitHealth(ok, "OK", http.StatusOK, "RUNNING")
	if !strings.Contains(h.Stdout, "RUNNING") {
		t.Errorf("OK health says %+v", h)
	}
	if s := services(t, c, node); len(s) != 1 || s[0].HealthCheck != "Ok" {
		t.Errorf("services %+v", s)
	}
	cancelJob(t, c, leader, ok)
	tc.WaitFor(t, 10*time.Second, "the cancelled job's service to unload", func() bool {
		code, _ := health(node)
		return code == http.StatusNotFound
	})

	slow := submitSpec(t, c, leader, `{"name":"slow",`+svc+`,"parallelism":2,"vertices":[
		{"id":"src","operator":"sequence","params":{"from":1}},
		{"id":"slow","operator":"sleep","inputs":[{"from":"src"}],"params":{"perRecord":"1ms"}},
		{"id":"out","operator":"discard","inputs":[{"from":"slow"}]}]}`)
	waitSubtasksRunning(t, leader, slow)
	node, h = waitHealth(slow, "WARNING", http.StatusOK, "RUNNING")
	if !strings.Contains(h.Stdout, "HIGH back pressure") || !strings.Contains(h.Stdout, "src") {
		t.Errorf("WARNING health says %+v", h)
	}
	if s := services(t, c, node); len(s) != 1 || s[0].HealthCheck != "Warning" {
		t.Errorf("services %+v", s)
	}
	cancelJob(t, c, leader, slow)

	failing := submitSpec(t, c, leader, `{"name":"failing",`+svc+`,"restartStrategy":{"type":"none"},"vertices":[
		{"id":"src","operator":"sequence","params":{"from":1,"to":100}},
		{"id":"m","operator":"map","inputs":[{"from":"src"}],"params":{"expr":"{\"x\": n > 50 ? int(\"not a number\") : n}"}},
		{"id":"out","operator":"discard","inputs":[{"from":"m"}]}]}`)
	waitJobState(t, leader, failing, 20*time.Second, fsm.JobFailed)
	node, h = waitHealth(failing, "CRITICAL", http.StatusServiceUnavailable, "is FAILED")
	if !strings.Contains(h.Stdout, "FAILED") || !strings.Contains(h.Stderr, "not a number") {
		t.Errorf("CRITICAL health says %+v", h)
	}
	s := services(t, c, node)
	if len(s) != 1 || s[0].HealthCheck != "Critical" || s[0].DesiredState != "Down" || s[0].Process.State != "down" {
		t.Errorf("a failed job's service: %+v", s)
	}
}

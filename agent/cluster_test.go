package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/config"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

const smallJob = `{"name":"%s","jobId":"%s","vertices":[{"id":"src","operator":"sequence","params":{"from":1,"to":10}},{"id":"out","operator":"discard","inputs":[{"from":"src","ship":"forward"}]}]}`

func jobID(i int) string { return fmt.Sprintf("%032x", i+1) }

func submit(t *testing.T, c *tc.Cluster, on interface{ URL() string }, i int) tc.Response {
	t.Helper()
	return tc.Do(t, http.DefaultClient, "POST", on.URL()+"/v1/jobs", tc.Token, fmt.Sprintf(smallJob, fmt.Sprintf("job-%d", i), jobID(i)))
}

func TestThreeNodesElectOneLeaderAndReplaceItWhenItDies(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	if r := submit(t, c, leader, 1); r.Code != http.StatusAccepted {
		t.Fatalf("submit on leader: %d %s", r.Code, r.Body)
	}

	killed := leader.Node.ID()
	start := time.Now()
	c.Kill(killed)
	next := c.WaitForLeader(10 * time.Second)
	if next.Node.ID() == killed {
		t.Fatalf("dead node %s still leads", killed)
	}
	t.Logf("new leader %s after %v", next.Node.ID(), time.Since(start))
	// Acknowledged writes survive the leader.
	for _, a := range c.Running() {
		r := c.Do(a, "GET", "/v1/jobs/"+jobID(1)+"?consistent=true", nil)
		if r.Code != http.StatusOK {
			t.Fatalf("job lost on %s after failover: %d %s", a.Node.ID(), r.Code, r.Body)
		}
	}
	if r := submit(t, c, c.Followers()[0], 2); r.Code != http.StatusAccepted {
		t.Fatalf("write after failover: %d %s", r.Code, r.Body)
	}
}

func TestWriteOnAFollowerIsForwardedToTheLeader(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	follower := c.Followers()[0]
	r := submit(t, c, follower, 7)
	if r.Code != http.StatusAccepted {
		t.Fatalf("forwarded write: %d %s", r.Code, r.Body)
	}
	if got := r.Header.Get("X-Dispatcher-Node"); got != leader.Node.ID() {
		t.Errorf("served by %q, want the leader %q", got, leader.Node.ID())
	}
	if got := r.Header.Get("X-Dispatcher-Forwarded-By"); got != follower.Node.ID() {
		t.Errorf("forwarded-by %q, want %q", got, follower.Node.ID())
	}
	var body map[string]string
	r.JSON(t, &body)
	if body["jobid"] != jobID(7) {
		t.Errorf("jobid %q", body["jobid"])
	}
	// A retry with the same id is idempotent.
	if r := submit(t, c, follower, 7); r.Code != http.StatusAccepted {
		t.Fatalf("idempotent retry: %d %s", r.Code, r.Body)
	}
	// Every node answers from its own state once it has applied the write.
	for _, a := range c.Running() {
		tc.WaitFor(t, 5*time.Second, "job visible on "+a.Node.ID(), func() bool {
			return c.Do(a, "GET", "/jobs/"+jobID(7), nil).Code == http.StatusOK
		})
	}
	var list struct {
		Jobs []struct{ ID string } `json:"jobs"`
	}
	c.Do(follower, "GET", "/v1/jobs", nil).JSON(t, &list)
	if len(list.Jobs) != 1 {
		t.Errorf("want exactly one job after the retry, got %d", len(list.Jobs))
	}
	// A request that claims to be forwarded already is never forwarded again.
	req, _ := http.NewRequest("POST", follower.URL()+"/v1/jobs", strings.NewReader(fmt.Sprintf(smallJob, "x", jobID(8))))
	req.Header.Set("Authorization", "Bearer "+tc.Token)
	req.Header.Set("X-Dispatcher-Forwarded-By", "somebody")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("loop guard: got %d, want 503", resp.StatusCode)
	}
}

func TestWithoutALeaderWritesAnswer503WithinTheBound(t *testing.T) {
	c := tc.New(t, 3, func(cfg *config.Config) { cfg.LeaderWait = time.Second })
	c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	survivor := c.Followers()[0]
	for _, a := range c.Running() {
		if a != survivor {
			c.Kill(a.Node.ID())
		}
	}
	tc.WaitFor(t, 5*time.Second, "the survivor to lose its leader", func() bool {
		_, ok := survivor.Node.Leader()
		return !ok
	})
	start := time.Now()
	r := submit(t, c, survivor, 1)
	took := time.Since(start)
	if r.Code != http.StatusServiceUnavailable {
		t.Fatalf("write without quorum: %d %s", r.Code, r.Body)
	}
	if took < 900*time.Millisecond || took > 4*time.Second {
		t.Errorf("held for %v; want about the 1s leader wait", took)
	}
	if r.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if !strings.Contains(string(r.Body), "ongoing leader election") {
		t.Errorf("body %s", r.Body)
	}
	if r := c.Do(survivor, "GET", "/v1/cluster/leader", nil); r.Code != http.StatusServiceUnavailable {
		t.Errorf("leader route without leader: %d", r.Code)
	}
	if r := c.Do(survivor, "GET", "/v1/health/ready", nil); r.Code != http.StatusServiceUnavailable {
		t.Errorf("ready without leader: %d", r.Code)
	}
	if r := c.Do(survivor, "GET", "/v1/overview?consistent=true", nil); r.Code != http.StatusServiceUnavailable {
		t.Errorf("consistent read without leader: %d", r.Code)
	}
	// Stale reads keep working.
	if r := c.Do(survivor, "GET", "/v1/overview", nil); r.Code != http.StatusOK {
		t.Errorf("local read without leader: %d", r.Code)
	}
}

func TestJoinGracefulLeaveAndDeadServerCleanupKeepQuorum(t *testing.T) {
	c := tc.New(t, 5, nil)
	c.WaitForLeader(15 * time.Second)
	c.WaitForVoters(5, 15*time.Second)

	c.Add("node6")
	c.WaitForVoters(6, 10*time.Second)

	// A graceful leave removes the server from Raft at once.
	leaving := c.Node("node6")
	c.Forget("node6")
	if err := leaving.Leave(t.Context()); err != nil {
		t.Logf("leave: %v", err)
	}
	c.WaitForVoters(5, 10*time.Second)

	// Two dead servers out of five: both go after the timeout, one pass
	// never removing more than (voters-1)/2, and writes keep working.
	leader := c.WaitForLeader(10 * time.Second)
	var victims []string
	for _, a := range c.Followers() {
		if len(victims) < 2 {
			victims = append(victims, a.Node.ID())
		}
	}
	for _, id := range victims {
		c.Kill(id)
	}
	c.WaitForVoters(3, 15*time.Second)
	leader = c.WaitForLeader(10 * time.Second)
	if r := submit(t, c, leader, 3); r.Code != http.StatusAccepted {
		t.Fatalf("write after cleanup: %d %s", r.Code, r.Body)
	}
	var members struct {
		Members []struct {
			ID, Status, Suffrage string
		} `json:"members"`
	}
	c.Do(leader, "GET", "/v1/cluster/members", nil).JSON(t, &members)
	for _, m := range members.Members {
		for _, v := range victims {
			if m.ID == v && m.Suffrage == "voter" {
				t.Errorf("dead %s is still a voter", v)
			}
		}
	}
}

func TestLeaderLeavingGracefullyHandsOver(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	id := leader.Node.ID()
	c.Forget(id)
	if err := leader.Leave(t.Context()); err != nil {
		t.Logf("leave: %v", err)
	}
	next := c.WaitForLeader(5 * time.Second)
	if next.Node.ID() == id {
		t.Fatal("left node still leads")
	}
	c.WaitForVoters(2, 10*time.Second)
	if r := submit(t, c, next, 1); r.Code != http.StatusAccepted {
		t.Fatalf("write after leader left: %d %s", r.Code, r.Body)
	}
}

func TestRestartWithTheSameDataDirKeepsStateEvenAtANewAddress(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	for i := 0; i < 5; i++ {
		if r := submit(t, c, leader, i); r.Code != http.StatusAccepted {
			t.Fatalf("submit: %d %s", r.Code, r.Body)
		}
	}
	// One follower: back on new ports, same id and data.
	f := c.Followers()[0].Node.ID()
	c.Kill(f)
	back := c.Restart(f)
	tc.WaitFor(t, 10*time.Second, f+" to catch up", func() bool {
		_, ok := back.Node.FSM.Job(jobID(4))
		return ok
	})
	tc.WaitFor(t, 10*time.Second, "the leader to learn the new raft address", func() bool {
		l := c.WaitForLeader(5 * time.Second)
		for _, addr := range l.Node.Voters() {
			if addr == back.Node.RaftAddress() {
				return true
			}
		}
		return false
	})

	// The whole cluster: every node stops, then all come back.
	ids := []string{}
	for _, a := range c.Running() {
		ids = append(ids, a.Node.ID())
		c.Kill(a.Node.ID())
	}
	for _, id := range ids {
		c.Restart(id)
	}
	leader = c.WaitForLeader(15 * time.Second)
	for i := 0; i < 5; i++ {
		if r := c.Do(leader, "GET", "/v1/jobs/"+jobID(i)+"?consistent=true", nil); r.Code != http.StatusOK {
			t.Fatalf("job %d lost across a full restart: %d", i, r.Code)
		}
	}
	if r := submit(t, c, c.Followers()[0], 9); r.Code != http.StatusAccepted {
		t.Fatalf("write after full restart: %d %s", r.Code, r.Body)
	}
}

func TestSnapshotsInstallOnANewNodeAndSurviveRestart(t *testing.T) {
	tune := func(cfg *config.Config) {
		cfg.Raft.SnapshotThreshold = 8
		cfg.Raft.SnapshotInterval = 50 * time.Millisecond
		cfg.Raft.TrailingLogs = 4
	}
	c := tc.New(t, 3, tune)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	const n = 40
	for i := 0; i < n; i++ {
		if r := submit(t, c, leader, i); r.Code != http.StatusAccepted {
			t.Fatalf("submit %d: %d %s", i, r.Code, r.Body)
		}
	}
	tc.WaitFor(t, 10*time.Second, "a snapshot on the leader", func() bool {
		return leader.Node.Raft().Stats()["last_snapshot_index"] != "0"
	})
	late := c.Add("node4")
	tc.WaitFor(t, 15*time.Second, "the new node to hold every job", func() bool {
		return len(late.Node.FSM.Jobs()) == n
	})
	c.Kill("node4")
	back := c.Restart("node4")
	tc.WaitFor(t, 15*time.Second, "the restarted node to hold every job", func() bool {
		return len(back.Node.FSM.Jobs()) == n
	})
}

func TestEveryRouteRequiresTheToken(t *testing.T) {
	c := tc.New(t, 1, nil)
	a := c.WaitForLeader(10 * time.Second)
	routes := a.API.Routes()
	if len(routes) < 20 {
		t.Fatalf("only %d routes registered", len(routes))
	}
	fill := strings.NewReplacer(":jobid", jobID(1), ":vertexid", "src", ":subtaskindex", "0", ":attempt", "0",
		":jarid", "x.jar", ":triggerid", jobID(2), ":tmid", "node1", ":checkpointid", "1", ":name", "a", ":group", "b", ":organization", "c")
	for _, rt := range routes {
		path := fill.Replace(rt.Path)
		for _, auth := range []string{"", "Bearer wrong", "bearer " + tc.Token, "Bearer  " + tc.Token + " x", tc.Token, "Basic " + tc.Token} {
			req, _ := http.NewRequest(rt.Method, a.URL()+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var buf [1]byte
			n, _ := resp.Body.Read(buf[:])
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || n != 0 || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %q: %d (body %d bytes), want an empty 401", rt.Method, path, auth, resp.StatusCode, n)
			}
		}
	}
	// And the right token passes.
	if r := c.Do(a, "GET", "/v1/overview", nil); r.Code != http.StatusOK {
		t.Errorf("with the token: %d", r.Code)
	}
}

func TestVersionPrefixesUnknownRoutesAndBadInput(t *testing.T) {
	c := tc.New(t, 1, func(cfg *config.Config) { cfg.MaxBodyBytes = 4096 })
	a := c.WaitForLeader(10 * time.Second)
	cases := []struct {
		method, path string
		body         any
		code         int
	}{
		{"GET", "/overview", nil, 200},
		{"GET", "/v1/overview", nil, 200},
		{"GET", "/v2/overview", nil, 404},
		{"GET", "/v0/overview", nil, 404},
		{"GET", "/v1/no/such/route", nil, 404},
		{"DELETE", "/v1/overview", nil, 405},
		{"GET", "/v1/jobs/NOT-HEX", nil, 400},
		{"GET", "/v1/jobs/" + jobID(99), nil, 404},
		{"PATCH", "/v1/jobs/" + jobID(99) + "?mode=cancel", nil, 404},
		{"PATCH", "/v1/jobs/" + jobID(99) + "?mode=explode", nil, 400},
		{"POST", "/v1/jobs", "{not json", 400},
		{"POST", "/v1/jobs", `{"name":"x","vertices":[]}`, 400},
		{"POST", "/v1/jobs", strings.Repeat("x", 5000), 413},
	}
	for _, tt := range cases {
		r := c.Do(a, tt.method, tt.path, tt.body)
		if r.Code != tt.code {
			t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, r.Code, r.Body, tt.code)
			continue
		}
		if tt.code >= 400 {
			var e struct{ Errors []string }
			if json.Unmarshal(r.Body, &e) != nil || len(e.Errors) == 0 {
				t.Errorf("%s %s: error body %q is not {\"errors\":[...]}", tt.method, tt.path, r.Body)
			}
		}
	}
	// Cancel is 202 while the job runs, 409 once it is terminal.
	endless := `{"name":"endless","jobId":"` + jobID(5) + `","vertices":[{"id":"src","operator":"sequence","params":{"from":1,"ratePerSecond":100}},{"id":"out","operator":"discard","inputs":[{"from":"src"}]}]}`
	if r := c.Do(a, "POST", "/v1/jobs", endless); r.Code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.Code, r.Body)
	}
	if r := c.Do(a, "PATCH", "/v1/jobs/"+jobID(5)+"?mode=cancel", nil); r.Code != http.StatusAccepted {
		t.Errorf("cancel: %d %s", r.Code, r.Body)
	}
	tc.WaitFor(t, 5*time.Second, "the job to be CANCELED", func() bool {
		j, _ := a.Node.FSM.Job(jobID(5))
		return j.State == "CANCELED"
	})
	if r := c.Do(a, "PATCH", "/v1/jobs/"+jobID(5)+"?mode=cancel", nil); r.Code != http.StatusConflict {
		t.Errorf("second cancel: %d %s", r.Code, r.Body)
	}
}

func TestClusterViews(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	f := c.Followers()[0]

	r := c.Do(f, "GET", "/v1/cluster/leader", nil)
	if r.Code != 200 {
		t.Fatalf("leader: %d", r.Code)
	}
	var lm map[string]any
	r.JSON(t, &lm)
	for _, k := range []string{"id", "http_address", "raft_address", "term", "since"} {
		if _, ok := lm[k]; !ok {
			t.Errorf("leader lacks %q: %s", k, r.Body)
		}
	}
	if lm["id"] != leader.Node.ID() {
		t.Errorf("leader id %v", lm["id"])
	}

	var members struct {
		Members []map[string]any `json:"members"`
	}
	tc.WaitFor(t, 5*time.Second, "three alive voters in the member list", func() bool {
		c.Do(f, "GET", "/v1/cluster/members", nil).JSON(t, &members)
		alive := 0
		for _, m := range members.Members {
			if m["status"] == "alive" && m["suffrage"] == "voter" {
				alive++
			}
		}
		return alive == 3
	})

	var peers []string
	c.Do(f, "GET", "/v1/status/peers", nil).JSON(t, &peers)
	if len(peers) != 3 {
		t.Errorf("peers %v", peers)
	}
	var statusLeader string
	c.Do(f, "GET", "/v1/status/leader", nil).JSON(t, &statusLeader)
	if statusLeader != leader.Node.RaftAddress() {
		t.Errorf("status/leader %q, want %q", statusLeader, leader.Node.RaftAddress())
	}

	var census struct {
		CensusGroups map[string]struct {
			LeaderID   *string                   `json:"leader_id"`
			Population map[string]map[string]any `json:"population"`
		} `json:"census_groups"`
		LocalMemberID string `json:"local_member_id"`
	}
	c.Do(f, "GET", "/census", nil).JSON(t, &census)
	g, ok := census.CensusGroups["dispatcher.default"]
	if !ok || g.LeaderID == nil || *g.LeaderID != leader.Node.ID() || len(g.Population) != 3 || census.LocalMemberID != f.Node.ID() {
		t.Errorf("census: %+v", census)
	}
	var butterfly map[string]any
	c.Do(f, "GET", "/butterfly", nil).JSON(t, &butterfly)
	for _, k := range []string{"member", "membership", "service", "services", "election", "latest_election", "departure", "departed_members"} {
		if _, ok := butterfly[k]; !ok {
			t.Errorf("butterfly lacks %q", k)
		}
	}

	if r := c.Do(leader, "GET", "/v1/health/leader", nil); r.Code != 200 {
		t.Errorf("health/leader on leader: %d", r.Code)
	}
	if r := c.Do(f, "GET", "/v1/health/leader", nil); r.Code != 503 {
		t.Errorf("health/leader on follower: %d", r.Code)
	}
	for _, p := range []string{"/v1/health/live", "/v1/health/ready", "/config", "/v1/overview"} {
		if r := c.Do(f, "GET", p, nil); r.Code != 200 {
			t.Errorf("%s: %d %s", p, r.Code, r.Body)
		}
	}
	var ov map[string]any
	c.Do(f, "GET", "/overview", nil).JSON(t, &ov)
	if ov["taskmanagers"] != float64(3) || ov["slots-total"] != float64(12) {
		t.Errorf("overview %v", ov)
	}
	metrics := string(c.Do(f, "GET", "/metrics", nil).Body)
	for _, name := range []string{"dispatcher_raft_term", "dispatcher_raft_applied_index", "dispatcher_gossip_members{state=\"alive\"} 3", "dispatcher_http_requests_total", "go_goroutines", "dispatcher_raft_apply_duration_seconds"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("metrics lack %s", name)
		}
	}
}

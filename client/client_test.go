package client_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/client"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

const (
	boundedSpec   = `{"name":"short","vertices":[{"id":"s","operator":"sequence","params":{"from":1,"to":100}},{"id":"d","operator":"discard","inputs":[{"from":"s"}]}]}`
	unboundedSpec = `{"name":"endless","vertices":[{"id":"s","operator":"sequence","params":{"from":1,"ratePerSecond":50}},{"id":"d","operator":"discard","inputs":[{"from":"s"}]}]}`
)

// everyNodeSeesThreeVoters waits until followers, which learn the Raft
// configuration shortly after the leader, answer with all three voters.
func everyNodeSeesThreeVoters(t *testing.T, c *tc.Cluster) {
	t.Helper()
	tc.WaitFor(t, 15*time.Second, "every node to see three voters", func() bool {
		for _, a := range c.Running() {
			if len(a.Node.Voters()) != 3 {
				return false
			}
		}
		return true
	})
}

func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// The client against a real three-node cluster, with a dead address
// first in its list.
func TestClientAgainstACluster(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(15 * time.Second)
	c.WaitForVoters(3, 15*time.Second)
	everyNodeSeesThreeVoters(t, c)
	addrs := []string{deadAddr(t)}
	for _, a := range c.Running() {
		addrs = append(addrs, a.URL())
	}
	cl, err := client.New(client.Config{Addresses: addrs, Token: tc.Token})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	t.Run("cluster", func(t *testing.T) {
		l, err := cl.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.ID != leader.Node.ID() || l.Term == 0 || l.HTTPAddress == "" || l.Meta.Node == "" || !strings.Contains(string(l.Raw), `"id"`) {
			t.Fatalf("leader %+v", l)
		}
		m, err := cl.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		leaders, voters := 0, 0
		for _, x := range m.Members {
			if x.Leader {
				leaders++
			}
			if x.Suffrage == "voter" {
				voters++
			}
		}
		if len(m.Members) != 3 || leaders != 1 || voters != 3 {
			t.Fatalf("members %+v", m.Members)
		}
		census, err := cl.Census(ctx)
		if err != nil {
			t.Fatal(err)
		}
		g := census.CensusGroups["dispatcher.default"]
		if g.LeaderID == nil || *g.LeaderID != leader.Node.ID() || len(g.Population) != 3 || !g.Population[leader.Node.ID()].Leader {
			t.Fatalf("census group %+v", g)
		}
		o, err := cl.Overview(ctx)
		if err != nil || o.TaskManagers != 3 || o.SlotsTotal == 0 {
			t.Fatalf("overview %+v %v", o, err)
		}
		if peers, err := cl.StatusPeers(ctx); err != nil || len(peers) != 3 {
			t.Fatalf("peers %v %v", peers, err)
		}
		if raft, err := cl.StatusLeader(ctx); err != nil || raft != l.RaftAddress {
			t.Fatalf("status leader %q %v, want %q", raft, err, l.RaftAddress)
		}
		if text, err := cl.Metrics(ctx); err != nil || !strings.Contains(text, "dispatcher_raft_term") {
			t.Fatalf("metrics: %v", err)
		}
		if _, err := cl.Butterfly(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("per node and leader lookup", func(t *testing.T) {
		for _, a := range c.Running() {
			n, err := cl.Node(a.URL())
			if err != nil {
				t.Fatal(err)
			}
			h, err := n.Ready(ctx)
			if err != nil || h.Status != "ready" || h.Node != a.Node.ID() || h.Leader != leader.Node.ID() {
				t.Fatalf("%s ready: %+v %v", a.Node.ID(), h, err)
			}
			_, err = n.IsLeaderNode(ctx)
			if a == leader && err != nil || a != leader && client.StatusCode(err) != 503 {
				t.Fatalf("%s /health/leader: %v", a.Node.ID(), err)
			}
		}
		ln, l, err := cl.LeaderNode(ctx)
		if err != nil || l.ID != leader.Node.ID() {
			t.Fatalf("leader node: %v", err)
		}
		if h, err := ln.IsLeaderNode(ctx); err != nil || h.Node != leader.Node.ID() {
			t.Fatalf("pinned to the leader: %+v %v", h, err)
		}
	})

	t.Run("jobs", func(t *testing.T) {
		id := client.NewID()
		spec, err := client.WithJobID([]byte(boundedSpec), id)
		if err != nil {
			t.Fatal(err)
		}
		res, err := cl.SubmitJob(ctx, spec)
		if err != nil || res.JobID != id {
			t.Fatalf("submit: %+v %v", res, err)
		}
		// The same spec again is the same job, never a second one.
		if again, err := cl.SubmitJob(ctx, spec); err != nil || again.JobID != id {
			t.Fatalf("resubmit: %+v %v", again, err)
		}
		var seen []string
		j, err := cl.WaitForJobState(ctx, id, client.WaitOptions{Interval: 50 * time.Millisecond, Progress: func(s string, _ time.Duration) { seen = append(seen, s) }})
		if err != nil || j.State != client.JobFinished || len(seen) == 0 {
			t.Fatalf("wait: %+v %v", j, err)
		}
		if j.JID != id || j.Name != "short" || len(j.Vertices) != 2 || j.Vertices[0].Status != "FINISHED" {
			t.Fatalf("details %+v", j)
		}
		list, err := cl.ListJobs(ctx, client.Consistent())
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range list.Jobs {
			found = found || (s.ID == id && s.Status == client.JobFinished && s.Name == "short" && len(s.Vertices) == 2)
		}
		if !found {
			t.Fatalf("job %s not in %+v", id, list.Jobs)
		}
		// A finished job cannot be cancelled: 409 with the server's words.
		err = cl.CancelJob(ctx, id)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 409 || len(ae.Errors) == 0 {
			t.Fatalf("cancel a finished job: %v", err)
		}

		// Without a jobId the server picks one; cancel a running job.
		res, err = cl.SubmitJob(ctx, []byte(unboundedSpec))
		if err != nil || !client.ValidID(res.JobID) {
			t.Fatalf("submit: %+v %v", res, err)
		}
		if _, err := cl.WaitForJobState(ctx, res.JobID, client.WaitOptions{}, client.JobRunning); err != nil {
			t.Fatal(err)
		}
		t.Run("monitoring", func(t *testing.T) { monitoring(ctx, t, c, cl, res.JobID) })
		if err := cl.CancelJob(ctx, res.JobID); err != nil {
			t.Fatal(err)
		}
		if j, err := cl.WaitForJobState(ctx, res.JobID, client.WaitOptions{}); err != nil || j.State != client.JobCanceled {
			t.Fatalf("after cancel: %v %v", j, err)
		}
		// Waiting for a state a terminal job will never reach ends.
		var se *client.StateError
		if _, err := cl.WaitForJobState(ctx, res.JobID, client.WaitOptions{}, client.JobRunning); !errors.As(err, &se) || se.State != client.JobCanceled {
			t.Fatalf("wait for RUNNING on a cancelled job: %v", err)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		unknown := client.NewID()
		_, err := cl.Job(ctx, unknown)
		if !client.IsNotFound(err) || !strings.Contains(err.Error(), "Job "+unknown+" not found") {
			t.Fatalf("unknown job: %v", err)
		}
		if _, err := cl.Job(ctx, "nope"); client.StatusCode(err) != 400 {
			t.Fatalf("malformed id: %v", err)
		}
		_, err = cl.SubmitJob(ctx, []byte(`{"name":"bad","vertices":[{"id":"a","operator":"no-such-operator"}]}`))
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 400 || len(ae.Errors) == 0 {
			t.Fatalf("invalid spec: %v", err)
		}
		wrong, _ := client.New(client.Config{Addresses: addrs, Token: "wrong"})
		if _, err := wrong.ListJobs(ctx); client.StatusCode(err) != 401 {
			t.Fatalf("wrong token: %v", err)
		}
		none, _ := client.New(client.Config{Addresses: []string{deadAddr(t)}, Token: tc.Token, Retry: client.Retry{Attempts: 2, InitialBackoff: time.Millisecond}})
		var ce *client.ConnectionError
		if _, err := none.ListJobs(ctx); !errors.As(err, &ce) {
			t.Fatalf("no node: %v", err)
		}
	})

	t.Run("jars", func(t *testing.T) {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, _ := zw.Create("job.json")
		io.WriteString(w, `{"name":"bundled","params":{"upto":100},"vertices":[{"id":"src","operator":"sequence","params":{"from":1,"to":"${upto}"}},{"id":"out","operator":"discard","inputs":[{"from":"src"}]}]}`)
		zw.Close()
		up, err := cl.UploadJar(ctx, "bundle.jar", buf.Bytes())
		if err != nil || up.Status != "success" || !strings.HasSuffix(up.ID(), "_bundle.jar") {
			t.Fatalf("upload: %+v %v", up, err)
		}
		list, err := cl.ListJars(ctx, client.Consistent())
		if err != nil || len(list.Files) != 1 || list.Files[0].ID != up.ID() || list.Files[0].Entry[0].Name != "job.json" || len(list.Files[0].Holders) < 2 {
			t.Fatalf("list: %+v %v", list, err)
		}
		// Plans are served by any node from its own state: let them all
		// apply the upload first.
		tc.WaitFor(t, 10*time.Second, "every node to know the bundle", func() bool {
			for _, a := range c.Running() {
				if _, ok := a.Node.FSM.Bundle(up.ID()); !ok {
					return false
				}
			}
			return true
		})
		plan, err := cl.JarPlan(ctx, up.ID(), client.JarPlanRequest{ProgramArgsList: []string{"--upto", "5"}})
		if err != nil || !strings.Contains(string(plan.Plan), "src") {
			t.Fatalf("plan: %s %v", plan.Plan, err)
		}
		// A run with a jobId is idempotent: a repeat is the same job.
		req := client.JarRunRequest{JobID: client.NewID(), Parallelism: 2, ProgramArgsList: []string{"--upto", "50"}}
		run, err := cl.RunJar(ctx, up.ID(), req)
		if err != nil || run.JobID != req.JobID {
			t.Fatalf("run: %+v %v", run, err)
		}
		if again, err := cl.RunJar(ctx, up.ID(), req); err != nil || again.JobID != req.JobID {
			t.Fatalf("run again: %+v %v", again, err)
		}
		j, err := cl.WaitForJobState(ctx, run.JobID, client.WaitOptions{}, client.JobFinished)
		if err != nil || j.Vertices[0].Parallelism != 2 {
			t.Fatalf("bundled job: %+v %v", j, err)
		}
		if _, err := cl.RunJar(ctx, up.ID(), client.JarRunRequest{EntryClass: "missing.json"}); client.StatusCode(err) != 400 {
			t.Fatalf("unknown entry: %v", err)
		}
		if err := cl.DeleteJar(ctx, up.ID()); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.RunJar(ctx, up.ID(), client.JarRunRequest{}); !client.IsNotFound(err) {
			t.Fatalf("run a deleted jar: %v", err)
		}
	})

	t.Run("leader failover", func(t *testing.T) {
		// Kill the leader; the client keeps working through the other
		// nodes, retrying through the election.
		old := leader.Node.ID()
		c.Kill(old)
		deadline := time.Now().Add(20 * time.Second)
		for {
			l, err := cl.Leader(ctx)
			if err == nil && l.ID != old {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no new leader through the client: %+v %v", l, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		spec, _ := client.WithJobID([]byte(boundedSpec), client.NewID())
		res, err := cl.SubmitJob(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if j, err := cl.WaitForJobState(ctx, res.JobID, client.WaitOptions{}, client.JobFinished); err != nil {
			t.Fatalf("after failover: %+v %v", j, err)
		}
	})
}

// monitoring reads a running job through Flink's monitoring routes and the
// Habitat service routes.
func monitoring(ctx context.Context, t *testing.T, c *tc.Cluster, cl *client.Client, id string) {
	// Every node has applied the job's RUNNING state: no read is stale.
	tc.WaitFor(t, 10*time.Second, "every node to see the job running", func() bool {
		for _, a := range c.Running() {
			if j, ok := a.Node.FSM.Job(id); !ok || j.State != client.JobRunning {
				return false
			}
		}
		return true
	})
	if st, err := cl.JobStatus(ctx, id); err != nil || st.Status != client.JobRunning {
		t.Fatalf("status: %+v %v", st, err)
	}
	ov, err := cl.JobsOverview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, j := range ov.Jobs {
		found = found || (j.JID == id && j.State == client.JobRunning && j.Tasks["total"] == 2)
	}
	if !found {
		t.Fatalf("job %s not in the overview %+v", id, ov.Jobs)
	}
	v, err := cl.Vertex(ctx, id, "s")
	if err != nil || v.ID != "s" || len(v.Subtasks) != 1 || v.Subtasks[0].Status == "" {
		t.Fatalf("vertex: %+v %v", v, err)
	}
	if _, err := cl.Vertex(ctx, id, "nope"); !client.IsNotFound(err) {
		t.Fatalf("unknown vertex: %v", err)
	}
	ex, err := cl.JobExceptions(ctx, id, 5)
	if err != nil || len(ex.ExceptionHistory.Entries) != 0 {
		t.Fatalf("exceptions: %+v %v", ex, err)
	}
	tms, err := cl.TaskManagers(ctx)
	if err != nil || len(tms.TaskManagers) != 3 {
		t.Fatalf("task managers: %+v %v", tms, err)
	}
	bp, err := cl.BackPressure(ctx, id, "s", client.MeasureByTime())
	if err != nil || bp.Status == "" {
		t.Fatalf("back pressure: %+v %v", bp, err)
	}
	if jb, err := cl.JobBackPressure(ctx, id); err != nil || jb.JobID != id {
		t.Fatalf("job back pressure: %+v %v", jb, err)
	}
	// The job is a Habitat service on the nodes that run its subtasks.
	loaded := 0
	for _, a := range c.Running() {
		n, _ := cl.Node(a.URL())
		services, err := n.Services(ctx)
		if err != nil {
			t.Fatalf("%s services: %v", a.Node.ID(), err)
		}
		for _, s := range services {
			if s.ServiceGroup != "endless.default" {
				continue
			}
			loaded++
			if len(s.Raw) == 0 || s.Pkg.Name == "" {
				t.Fatalf("service %+v", s)
			}
			h, err := n.ServiceHealth(ctx, "endless", "default")
			if err != nil || h.Status == "" {
				t.Fatalf("health on %s: %+v %v", a.Node.ID(), h, err)
			}
			if _, err := n.Service(ctx, "endless", "default"); err != nil {
				t.Fatalf("service on %s: %v", a.Node.ID(), err)
			}
		}
	}
	if loaded == 0 {
		t.Fatal("the running job is a service on no node")
	}
}

package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/client"
	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

// The CLI as a real process (the binary TestMain built) against a real
// three-node cluster. Every invocation lists a dead address first, so
// every command also shows the client falling over to the next node.

const (
	cliBounded   = `{"name":"cli-short","vertices":[{"id":"s","operator":"sequence","params":{"from":1,"to":100}},{"id":"d","operator":"discard","inputs":[{"from":"s"}]}]}`
	cliUnbounded = `{"name":"cli-endless","vertices":[{"id":"src","operator":"sequence","parallelism":2,"params":{"from":1,"ratePerSecond":50}},{"id":"sink","operator":"discard","inputs":[{"from":"src"}]}]}`
)

var tokenEnv = []string{"DISPATCHER_AUTH_TOKEN=" + tc.Token, "DISPATCHER_ADDR="}

type cliCluster struct {
	t     *testing.T
	c     *tc.Cluster
	addrs []string // --address flags: a dead address, then every node
	dead  string
}

func newCLICluster(t *testing.T) *cliCluster {
	t.Helper()
	c := tc.New(t, 3, nil)
	c.WaitForLeader(15 * time.Second)
	c.WaitForVoters(3, 15*time.Second)
	// Followers learn the Raft configuration shortly after the leader.
	tc.WaitFor(t, 15*time.Second, "every node to see three voters", func() bool {
		for _, a := range c.Running() {
			if len(a.Node.Voters()) != 3 {
				return false
			}
		}
		return true
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	cc := &cliCluster{t: t, c: c, dead: dead, addrs: []string{"--address", dead}}
	for _, a := range c.Running() {
		cc.addrs = append(cc.addrs, "--address", a.URL())
	}
	return cc
}

// run runs the CLI with the cluster's addresses and token.
func (cc *cliCluster) run(args ...string) (int, string, string) {
	cc.t.Helper()
	return run(cc.t, tokenEnv, append(append([]string{}, args...), cc.addrs...)...)
}

// ok runs the CLI and fails the test unless it exits 0 with nothing on
// stderr (not a terminal: no progress either).
func (cc *cliCluster) ok(args ...string) string {
	cc.t.Helper()
	code, out, errOut := cc.run(args...)
	if code != 0 || errOut != "" {
		cc.t.Fatalf("dispatcher %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// json runs the CLI with -o json and decodes stdout into v.
func (cc *cliCluster) json(v any, args ...string) {
	cc.t.Helper()
	out := cc.ok(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		cc.t.Fatalf("dispatcher %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// fails runs the CLI and checks the exit code and one line on stderr.
func (cc *cliCluster) fails(code int, want string, args ...string) {
	cc.t.Helper()
	got, out, errOut := cc.run(args...)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if got != code || !strings.Contains(errOut, want) || len(lines) != 1 || !strings.HasPrefix(errOut, "dispatcher: ") {
		cc.t.Fatalf("dispatcher %s: exit %d (want %d)\nstdout: %s\nstderr: %s (want %q)", strings.Join(args, " "), got, code, out, errOut, want)
	}
}

// with returns the helpers bound to t (a subtest's).
func (cc *cliCluster) with(t *testing.T) *cliCluster {
	c := *cc
	c.t = t
	return &c
}

func (cc *cliCluster) leader() string {
	return cc.c.WaitForLeader(15 * time.Second).Node.ID()
}

// waitJob waits until every running node has applied the job in one of
// states, so that no read the CLI makes next can be stale.
func (cc *cliCluster) waitJob(id string, states ...string) *fsm.Job {
	cc.t.Helper()
	var j *fsm.Job
	tc.WaitFor(cc.t, 30*time.Second, "job "+id+" "+strings.Join(states, "|")+" on every node", func() bool {
		for _, a := range cc.c.Running() {
			var ok bool
			if j, ok = a.Node.FSM.Job(id); !ok || !slices.Contains(states, j.State) {
				return false
			}
		}
		return j != nil
	})
	return j
}

func writeSpec(t *testing.T, spec string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeJar writes a job bundle: a zip holding job.json.
func writeJar(t *testing.T, name, spec string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("job.json")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(spec))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// routeExists tells whether the cluster serves a route yet (others are
// adding routes); an unregistered route answers "Not found: <path>".
func (cc *cliCluster) routeExists(method, path string, body any) bool {
	r := cc.c.Do(cc.c.Running()[0], method, path, body)
	return !(r.Code == http.StatusNotFound && strings.Contains(string(r.Body), "Not found: "))
}

func TestCLIAgainstACluster(t *testing.T) {
	all := newCLICluster(t)

	t.Run("cluster", func(t *testing.T) {
		cc := all.with(t)
		leader := cc.leader()
		out := cc.ok("cluster", "members")
		for _, a := range cc.c.Running() {
			if !strings.Contains(out, a.Node.ID()) {
				t.Fatalf("members table lacks %s:\n%s", a.Node.ID(), out)
			}
		}
		if !strings.HasPrefix(out, "ID") || strings.Count(out, "voter") != 3 {
			t.Fatalf("members table:\n%s", out)
		}
		var members client.Members
		cc.json(&members, "cluster", "members")
		if len(members.Members) != 3 {
			t.Fatalf("members json: %+v", members)
		}

		if out := cc.ok("cluster", "leader"); !strings.Contains(out, leader) {
			t.Fatalf("leader table:\n%s", out)
		}
		var l client.Leader
		cc.json(&l, "cluster", "leader")
		if l.ID != leader || l.Term == 0 {
			t.Fatalf("leader json %+v, want %s", l, leader)
		}

		out = cc.ok("cluster", "census")
		if !strings.Contains(out, "dispatcher.default") || !strings.Contains(out, "leader "+leader) || strings.Count(out, "Alive") != 3 {
			t.Fatalf("census table:\n%s", out)
		}
		var census client.Census
		cc.json(&census, "cluster", "census")
		if g := census.CensusGroups["dispatcher.default"]; g.LeaderID == nil || *g.LeaderID != leader || len(g.Population) != 3 {
			t.Fatalf("census json %+v", census)
		}
	})

	t.Run("health", func(t *testing.T) {
		cc := all.with(t)
		node := cc.c.Running()[1]
		code, out, errOut := run(t, tokenEnv, "health", "--address", node.URL())
		if code != 0 || !strings.Contains(out, `"status":"ready"`) || !strings.Contains(out, node.Node.ID()) {
			t.Fatalf("health: %d %q %q", code, out, errOut)
		}
		// One node is asked, the first: no falling over for a health check.
		code, _, errOut = run(t, tokenEnv, "health", "--address", cc.dead, "--address", node.URL(), "--timeout", "1s")
		if code != 1 || !strings.Contains(errOut, "not healthy") {
			t.Fatalf("health of a dead node: %d %q", code, errOut)
		}
		code, _, errOut = run(t, []string{"DISPATCHER_AUTH_TOKEN=wrong"}, "health", "--address", node.URL())
		if code != 1 || !strings.Contains(errOut, "not ready (401)") {
			t.Fatalf("health with a wrong token: %d %q", code, errOut)
		}
		// DISPATCHER_ADDR when there is no --address.
		code, out, _ = run(t, []string{"DISPATCHER_AUTH_TOKEN=" + tc.Token, "DISPATCHER_ADDR=" + strings.TrimPrefix(node.URL(), "http://")}, "health")
		if code != 0 || !strings.Contains(out, node.Node.ID()) {
			t.Fatalf("health from DISPATCHER_ADDR: %d %q", code, out)
		}
	})

	t.Run("jobs", func(t *testing.T) {
		cc := all.with(t)
		// submit --wait follows a bounded job to FINISHED.
		out := cc.ok("jobs", "submit", writeSpec(t, cliBounded), "--wait")
		fields := strings.Fields(out)
		if len(fields) != 2 || !client.ValidID(fields[0]) || fields[1] != "FINISHED" {
			t.Fatalf("submit --wait: %q", out)
		}
		finished := fields[0]

		// submit with --job-id, and again: the same job.
		id := client.NewID()
		spec := writeSpec(t, cliUnbounded)
		if out := cc.ok("jobs", "submit", spec, "--job-id", id); strings.TrimSpace(out) != id {
			t.Fatalf("submit --job-id: %q", out)
		}
		var sub client.SubmitResult
		cc.json(&sub, "jobs", "submit", spec, "--job-id", id)
		if sub.JobID != id {
			t.Fatalf("resubmit: %+v", sub)
		}
		cc.waitJob(id, fsm.JobRunning)

		out = cc.ok("jobs", "list", "--consistent")
		if !strings.Contains(out, id) || !strings.Contains(out, "cli-endless") || !strings.Contains(out, finished) {
			t.Fatalf("jobs list:\n%s", out)
		}
		var list client.JobList
		cc.json(&list, "jobs", "list")
		if len(list.Jobs) < 2 {
			t.Fatalf("jobs list json %+v", list)
		}

		out = cc.ok("jobs", "info", id)
		if !strings.Contains(out, "cli-endless") || !strings.Contains(out, "src") || !strings.Contains(out, "RUNNING") {
			t.Fatalf("jobs info:\n%s", out)
		}
		var info client.JobDetails
		cc.json(&info, "jobs", "info", id, "--consistent")
		if info.JID != id || len(info.Vertices) != 2 {
			t.Fatalf("jobs info json %+v", info)
		}

		if out := cc.ok("jobs", "cancel", id); !strings.Contains(out, id) {
			t.Fatalf("cancel: %q", out)
		}
		cc.waitJob(id, fsm.JobCanceled)
		// Refusals: the server's status and message, exit 1.
		cc.fails(1, "dispatcher: 409: ", "jobs", "cancel", id)
		unknown := client.NewID()
		cc.fails(1, "dispatcher: 404: Job "+unknown+" not found", "jobs", "info", unknown)
		cc.fails(1, "dispatcher: 400: ", "jobs", "submit", writeSpec(t, `{"name":"bad","vertices":[{"id":"a","operator":"no-such-operator"}]}`))
		cc.fails(1, "dispatcher: 400: ", "jobs", "submit", writeSpec(t, `not json`))
	})

	t.Run("usage errors exit 2", func(t *testing.T) {
		cc := all.with(t)
		for _, args := range [][]string{
			{"jobs", "list", "--no-such-flag"},
			{"jobs", "list", "-o", "yaml"},
			{"jobs", "info"},
			{"jobs", "info", "not-a-job-id"},
			{"jobs", "info", client.NewID(), "extra"},
			{"jobs", "submit"},
			{"jobs", "submit", "/no/such/spec.json"},
			{"jobs", "submit", writeSpec(t, cliBounded), "--job-id", "short"},
			{"jobs", "rescale", client.NewID(), "--parallelism", "2"},
			{"jobs", "rescale", client.NewID(), "--vertex", "v"},
			{"jobs", "rescale", client.NewID(), "--vertex", "v", "--parallelism", "0"},
			{"jobs", "frobnicate"},
			{"jars", "run"},
			{"jars", "run", "x.jar", "--args", "'unterminated"},
			{"cluster", "members", "extra"},
			{"completion", "tcsh"},
			{"cluster", "leader", "--address", "ftp://x"},
		} {
			code, out, errOut := cc.run(args...)
			if code != 2 || len(strings.Split(strings.TrimSpace(errOut), "\n")) != 1 || out != "" {
				t.Errorf("dispatcher %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
			}
		}
	})

	t.Run("token and addresses", func(t *testing.T) {
		cc := all.with(t)
		code, _, errOut := run(t, []string{"DISPATCHER_AUTH_TOKEN=wrong"}, append([]string{"jobs", "list"}, cc.addrs...)...)
		if code != 1 || !strings.Contains(errOut, "401") || !strings.Contains(errOut, "DISPATCHER_AUTH_TOKEN") {
			t.Fatalf("wrong token: %d %q", code, errOut)
		}
		code, _, errOut = run(t, nil, "cluster", "leader", "--address", cc.dead)
		if code != 1 || !strings.Contains(errOut, "no node answered") {
			t.Fatalf("only a dead node: %d %q", code, errOut)
		}
		// DISPATCHER_ADDR, comma-separated, dead node first.
		env := []string{"DISPATCHER_AUTH_TOKEN=" + tc.Token, "DISPATCHER_ADDR=" + cc.dead + "," + cc.c.Running()[2].URL()}
		code, out, errOut := run(t, env, "cluster", "leader")
		if code != 0 || !strings.Contains(out, cc.leader()) {
			t.Fatalf("DISPATCHER_ADDR: %d %q %q", code, out, errOut)
		}
	})

	t.Run("completion", func(t *testing.T) {
		cc := all.with(t)
		for _, sh := range []string{"bash", "zsh", "fish"} {
			code, out, errOut := run(t, nil, "completion", sh)
			if code != 0 || !strings.Contains(out, "dispatcher") || errOut != "" {
				t.Fatalf("completion %s: %d %q", sh, code, errOut)
			}
		}
		// Job ids complete from the cluster.
		args := append(append([]string{"__complete", "jobs", "info"}, cc.addrs...), "")
		code, out, _ := run(t, tokenEnv, args...)
		if code != 0 || !strings.Contains(out, "cli-short") {
			t.Fatalf("job id completion:\n%s", out)
		}
	})

	t.Run("routes added by others", func(t *testing.T) {
		cc := all.with(t)
		id := client.NewID()
		cc.ok("jobs", "submit", writeSpec(t, cliUnbounded), "--job-id", id)
		cc.waitJob(id, fsm.JobRunning)

		t.Run("exceptions", func(t *testing.T) {
			cc := cc.with(t)
			if !cc.routeExists("GET", "/v1/jobs/"+id+"/exceptions", nil) {
				t.Skip("GET /jobs/:jobid/exceptions is not registered yet")
			}
			var ex client.JobExceptions
			cc.json(&ex, "jobs", "exceptions", id)
			cc.ok("jobs", "exceptions", id)
			cc.fails(1, "dispatcher: 404: ", "jobs", "exceptions", client.NewID())
		})
		t.Run("rescale", func(t *testing.T) {
			cc := cc.with(t)
			if !cc.routeExists("PUT", "/v1/jobs/"+client.NewID()+"/vertices/src/parallelism", map[string]int{"new_scale": 1}) {
				t.Skip("PUT /jobs/:jobid/vertices/:vertexid/parallelism is not registered yet")
			}
			cc.ok("jobs", "rescale", id, "--vertex", "src", "--parallelism", "3")
			cc.fails(1, "dispatcher: 404: ", "jobs", "rescale", client.NewID(), "--vertex", "src", "--parallelism", "3")
		})
		t.Run("savepoint", func(t *testing.T) {
			cc := cc.with(t)
			if !cc.routeExists("GET", "/v1/jobs/"+id+"/savepoints/"+client.NewID(), nil) {
				t.Skip("the savepoint routes are not registered yet")
			}
			out := cc.ok("jobs", "savepoint", id, "--wait")
			if strings.TrimSpace(out) == "" {
				t.Fatalf("savepoint --wait printed no location")
			}
			var trig client.TriggerResponse
			cc.json(&trig, "jobs", "savepoint", id)
			if trig.RequestID == "" {
				t.Fatalf("savepoint json %+v", trig)
			}
		})
		t.Run("stop", func(t *testing.T) {
			cc := cc.with(t)
			if !cc.routeExists("POST", "/v1/jobs/"+client.NewID()+"/stop", map[string]any{}) {
				t.Skip("POST /jobs/:jobid/stop is not registered yet")
			}
			cc.ok("jobs", "stop", id, "--wait")
			cc.waitJob(id, fsm.JobFinished)
		})
		t.Run("jars", func(t *testing.T) {
			cc := cc.with(t)
			if !cc.routeExists("GET", "/v1/jars", nil) {
				t.Skip("the jar routes are not registered yet")
			}
			jar := writeJar(t, "counter.jar", `{"name":"cli-bundled","params":{"upto":100},"vertices":[
				{"id":"src","operator":"sequence","params":{"from":1,"to":"${upto}"}},
				{"id":"out","operator":"discard","inputs":[{"from":"src"}]}]}`)
			jarID := strings.TrimSpace(cc.ok("jars", "upload", jar))
			if !strings.HasSuffix(jarID, "_counter.jar") {
				t.Fatalf("upload printed %q", jarID)
			}
			if out := cc.ok("jars", "list", "--consistent"); !strings.Contains(out, jarID) || !strings.Contains(out, "job.json") {
				t.Fatalf("jars list:\n%s", out)
			}
			var list client.JarList
			cc.json(&list, "jars", "list", "--consistent")
			if len(list.Files) == 0 || list.Files[0].ID != jarID {
				t.Fatalf("jars list json %+v", list)
			}
			jobID := client.NewID()
			out := strings.TrimSpace(cc.ok("jars", "run", jarID, "--parallelism", "2", "--args", "--upto 50", "--job-id", jobID))
			if out != jobID {
				t.Fatalf("jars run printed %q, want %s", out, jobID)
			}
			j := cc.waitJob(jobID, fsm.JobFinished)
			if !strings.Contains(string(j.Spec), `"parallelism":2`) {
				t.Fatalf("run options not applied: %s", j.Spec)
			}
			var run client.JarRunResult
			cc.json(&run, "jars", "run", jarID, "--entry", "job.json")
			if !client.ValidID(run.JobID) {
				t.Fatalf("jars run json %+v", run)
			}
			cc.fails(1, "dispatcher: 400: ", "jars", "run", jarID, "--entry", "no-such.json")
			cc.fails(1, "dispatcher: 400: ", "jars", "upload", writeSpec(t, cliBounded))
			if out := cc.ok("jars", "delete", jarID); !strings.Contains(out, jarID) {
				t.Fatalf("delete: %q", out)
			}
			cc.fails(1, "dispatcher: 404: ", "jars", "run", jarID)
		})
	})

	t.Run("a dead member", func(t *testing.T) {
		cc := all.with(t)
		// Kill a follower and put its address first: the CLI goes on
		// through the others and shows the member as no longer alive.
		f := cc.c.Followers()[0]
		id, url := f.Node.ID(), f.URL()
		cc.c.Kill(id)
		code, out, errOut := run(t, tokenEnv, "cluster", "members", "--address", url, "--address", cc.c.Running()[0].URL())
		if code != 0 || !strings.Contains(out, id) {
			t.Fatalf("members with a dead first node: %d %q %q", code, out, errOut)
		}
		if out := cc.ok("jobs", "list"); !strings.Contains(out, "cli-short") {
			t.Fatalf("jobs list:\n%s", out)
		}
	})
}

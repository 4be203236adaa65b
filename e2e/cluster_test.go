//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cluster drives the compose cluster of deploy/cluster.sh: three nodes
// published on 127.0.0.1:18081..18083 (DISPATCHER_DEBUG_PORTS=1) behind the
// load balancer on 127.0.0.1:8081. Every address it talks to is loopback.
type cluster struct {
	t       testing.TB
	repo    string
	project string
	token   string
	lb      string
	nodes   []string          // node1..node3
	debug   map[string]string // node -> http://127.0.0.1:1808x
	compose []string
	http    *http.Client
	// sideNet is the network a disconnected node is attached to so that
	// its debug port stays published; it reaches no other container.
	sideNet string
	logDir  string
}

func newCluster(t testing.TB) *cluster {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Dir(wd)
	c := &cluster{
		t:       t,
		repo:    repo,
		project: envOr("DISPATCHER_PROJECT", "dispatcher"),
		token:   envOr("DISPATCHER_AUTH_TOKEN", "dev-token"),
		lb:      "http://127.0.0.1:8081",
		nodes:   []string{"node1", "node2", "node3"},
		debug: map[string]string{
			"node1": "http://127.0.0.1:18081",
			"node2": "http://127.0.0.1:18082",
			"node3": "http://127.0.0.1:18083",
		},
		http: &http.Client{
			Timeout:   3 * time.Second,
			Transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext},
		},
		logDir: filepath.Join(repo, "deploy", ".build", "e2e"),
	}
	c.sideNet = c.project + "_e2e_isolated"
	if v := os.Getenv("DISPATCHER_COMPOSE"); v != "" {
		c.compose = strings.Fields(v)
	} else if exec.Command("docker", "compose", "version").Run() == nil {
		c.compose = []string{"docker", "compose"}
	} else {
		c.compose = []string{"docker-compose"}
	}
	return c
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (c *cluster) logf(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("%s "+format, append([]any{time.Now().UTC().Format("15:04:05.000")}, args...)...)
}

// run runs a command with a deadline and returns its combined output.
func run(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %v", name, strings.Join(args, " "), timeout)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out.String(), 40))
	}
	return out.String(), err
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func (c *cluster) scriptEnv() []string {
	return []string{"DISPATCHER_DEBUG_PORTS=1", "DISPATCHER_NODES=3", "DISPATCHER_PROJECT=" + c.project}
}

func (c *cluster) script(timeout time.Duration, args ...string) (string, error) {
	return run(timeout, c.scriptEnv(), filepath.Join(c.repo, "deploy", "cluster.sh"), args...)
}

// up starts the cluster; it refuses to take over a project that already
// has containers unless E2E_CLEAN=1 (then it removes them first).
func (c *cluster) up() {
	c.t.Helper()
	if ids := c.containers(true); len(ids) > 0 {
		if os.Getenv("E2E_CLEAN") != "1" {
			c.t.Fatalf("compose project %q already has %d containers: run 'deploy/cluster.sh down' (or set E2E_CLEAN=1)", c.project, len(ids))
		}
		c.down()
	}
	start := time.Now()
	if out, err := c.script(5*time.Minute, "up"); err != nil {
		c.t.Fatalf("deploy/cluster.sh up: %v\n%s", err, tail(out, 40))
	}
	c.logf("cluster up in %v", time.Since(start).Round(time.Millisecond))
}

// down removes containers, network and volumes, and the side network.
func (c *cluster) down() {
	if _, err := c.script(3*time.Minute, "down"); err != nil {
		c.t.Logf("deploy/cluster.sh down: %v", err)
	}
	run(30*time.Second, nil, "docker", "network", "rm", c.sideNet)
}

// saveLogs writes the compose logs next to the build output.
func (c *cluster) saveLogs(name string) string {
	os.MkdirAll(c.logDir, 0o755)
	out, _ := c.script(2*time.Minute, "logs", "--no-color", "--timestamps")
	p := filepath.Join(c.logDir, name)
	os.WriteFile(p, []byte(out), 0o644)
	return p
}

// composeCmd runs compose on the same files cluster.sh uses, with the
// images the running cluster was started with.
func (c *cluster) composeCmd(timeout time.Duration, env []string, args ...string) (string, error) {
	full := append(append([]string{}, c.compose[1:]...), "-p", c.project, "--project-directory", c.repo,
		"-f", filepath.Join(c.repo, "docker-compose.yml"), "-f", filepath.Join(c.repo, "deploy", "docker-compose.debug.yml"))
	full = append(full, args...)
	return run(timeout, env, c.compose[0], full...)
}

// containers lists the project's containers (all=true: stopped ones too).
func (c *cluster) containers(all bool) []string {
	args := []string{"ps", "-q", "--filter", "label=com.docker.compose.project=" + c.project}
	if all {
		args = append(args, "-a")
	}
	out, _ := run(30*time.Second, nil, "docker", args...)
	return strings.Fields(out)
}

// container returns the container id of a service (running or not).
func (c *cluster) container(service string) string {
	c.t.Helper()
	out, err := run(30*time.Second, nil, "docker", "ps", "-aq",
		"--filter", "label=com.docker.compose.project="+c.project,
		"--filter", "label=com.docker.compose.service="+service)
	ids := strings.Fields(out)
	if err != nil || len(ids) != 1 {
		c.t.Fatalf("container of %s: %v %q", service, err, out)
	}
	return ids[0]
}

func (c *cluster) docker(timeout time.Duration, args ...string) {
	c.t.Helper()
	if _, err := run(timeout, nil, "docker", args...); err != nil {
		c.t.Fatalf("%v", err)
	}
}

func (c *cluster) image(service string) string {
	out, err := run(30*time.Second, nil, "docker", "inspect", "-f", "{{.Config.Image}}", c.container(service))
	if err != nil {
		c.t.Fatalf("image of %s: %v", service, err)
	}
	return strings.TrimSpace(out)
}

// network is the compose network the nodes share.
func (c *cluster) network() string { return c.project + "_default" }

// ------------------------------------------------------------------ http ---

type httpResult struct {
	Status int
	Body   []byte
	Header http.Header
}

func (c *cluster) request(ctx context.Context, hc *http.Client, method, url string, body []byte) (*httpResult, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &httpResult{Status: resp.StatusCode, Body: b, Header: resp.Header}, nil
}

// getJSON is a GET with the cluster's short-timeout client.
func (c *cluster) getJSON(base, path string, out any) (int, error) {
	r, err := c.request(context.Background(), c.http, "GET", base+path, nil)
	if err != nil {
		return 0, err
	}
	if r.Status == 200 && out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			return r.Status, err
		}
	}
	return r.Status, nil
}

// leaderSeenBy is the leader a node reports ("" when none or unreachable).
func (c *cluster) leaderSeenBy(node string) string {
	var l struct {
		ID string `json:"id"`
	}
	if code, err := c.getJSON(c.debug[node], "/v1/cluster/leader", &l); err != nil || code != 200 {
		return ""
	}
	return l.ID
}

// leader is the leader every reachable node agrees on, or "".
func (c *cluster) leader() string {
	var agreed string
	for _, n := range c.nodes {
		l := c.leaderSeenBy(n)
		if l == "" {
			return ""
		}
		if agreed != "" && l != agreed {
			return ""
		}
		agreed = l
	}
	return agreed
}

func (c *cluster) ready(node string) bool {
	code, err := c.getJSON(c.debug[node], "/v1/health/ready", nil)
	return err == nil && code == 200
}

var errTimeout = errors.New("timed out")

// waitFor polls cond every interval until it holds or the timeout passes.
func waitFor(timeout, interval time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(interval)
	}
}

// healthy waits until every node is ready and all agree on one leader.
func (c *cluster) waitHealthy(timeout time.Duration) error {
	var last string
	err := waitFor(timeout, 200*time.Millisecond, func() bool {
		for _, n := range c.nodes {
			if !c.ready(n) {
				last = n + " not ready"
				return false
			}
		}
		if c.leader() == "" {
			last = "nodes do not agree on a leader"
			return false
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("cluster not healthy after %v: %s", timeout, last)
	}
	return nil
}

// jobPlacement returns the job's state and the node of each subtask of
// the given vertex (as reported by the load balancer's node).
func (c *cluster) jobPlacement(job, vertex string) (state string, nodes map[int]string, err error) {
	var j struct {
		State string `json:"state"`
	}
	if code, err := c.getJSON(c.lb, "/v1/jobs/"+job+"?consistent=true", &j); err != nil || code != 200 {
		return "", nil, fmt.Errorf("job %s: %d %v", job, code, err)
	}
	var v struct {
		Subtasks []struct {
			Subtask int    `json:"subtask"`
			Status  string `json:"status"`
			TM      string `json:"taskmanager-id"`
		} `json:"subtasks"`
	}
	if code, err := c.getJSON(c.lb, "/v1/jobs/"+job+"/vertices/"+vertex, &v); err != nil || code != 200 {
		return j.State, nil, fmt.Errorf("vertex %s of %s: %d %v", vertex, job, code, err)
	}
	nodes = map[int]string{}
	for _, s := range v.Subtasks {
		if s.Status == "RUNNING" {
			nodes[s.Subtask] = s.TM
		}
	}
	return j.State, nodes, nil
}

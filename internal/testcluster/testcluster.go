// Package testcluster starts real dispatcher nodes inside a test process:
// real sockets on 127.0.0.1 with kernel-chosen ports, real data dirs, fast
// Raft and gossip timings, and WaitFor-style helpers instead of sleeps.
package testcluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/agent"
	"github.com/dispatcher-dev/dispatcher/config"
)

// Token is the API token every test cluster uses.
const Token = "test-token"

// Cluster is a set of in-process nodes.
type Cluster struct {
	t     testing.TB
	mu    sync.Mutex
	nodes map[string]*agent.Agent
	cfgs  map[string]config.Config
	order []string
	// Tune changes each node's configuration before it starts.
	Tune   func(*config.Config)
	client *http.Client
	// Shared plays the compose cluster's shared volume: every node keeps
	// checkpoints and savepoints under it.
	Shared string
}

// Config returns a fast node configuration on loopback.
func Config(t testing.TB, id, dataDir string, expect int) config.Config {
	c := config.Default()
	c.NodeID = id
	c.DataDir = dataDir
	c.HTTPAddr = "127.0.0.1:0"
	c.RaftAddr = "127.0.0.1:0"
	c.GossipAddr = "127.0.0.1:0"
	c.Advertise = "127.0.0.1"
	c.BootstrapExpect = expect
	c.AuthToken = Token
	c.GossipKey = []byte("0123456789abcdef")
	c.Raft.HeartbeatTimeout = 200 * time.Millisecond
	c.Raft.ElectionTimeout = 200 * time.Millisecond
	c.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
	c.Raft.CommitTimeout = 5 * time.Millisecond
	c.DeadServerTimeout = 2 * time.Second
	c.LeaderWait = 3 * time.Second
	if err := c.Finish(); err != nil {
		t.Fatalf("config: %v", err)
	}
	return c
}

// New starts n nodes that bootstrap together (bootstrap-expect n).
func New(t testing.TB, n int, tune func(*config.Config)) *Cluster {
	t.Helper()
	c := &Cluster{t: t, nodes: map[string]*agent.Agent{}, cfgs: map[string]config.Config{}, Tune: tune, client: &http.Client{Timeout: 10 * time.Second}, Shared: t.TempDir()}
	t.Cleanup(c.Close)
	for i := 0; i < n; i++ {
		id := "node" + strconv.Itoa(i+1)
		cfg := Config(t, id, filepath.Join(t.TempDir(), id), n)
		c.start(cfg)
	}
	return c
}

func logger(t testing.TB) *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (c *Cluster) start(cfg config.Config) *agent.Agent {
	c.t.Helper()
	c.mu.Lock()
	for _, a := range c.nodes {
		addr, port := a.Node.Gossip().LocalAddr()
		cfg.Join = append(cfg.Join, fmt.Sprintf("%s:%d", addr, port))
	}
	c.mu.Unlock()
	if _, restarted := c.cfgs[cfg.NodeID]; !restarted {
		cfg.CheckpointDir = filepath.Join(c.Shared, "checkpoints")
		cfg.SavepointDir = filepath.Join(c.Shared, "savepoints")
		if c.Tune != nil {
			c.Tune(&cfg)
		}
	}
	a, err := agent.New(cfg, agent.Options{Logger: logger(c.t), Version: "test", FastGossip: true, ReconcileInterval: 200 * time.Millisecond})
	if err != nil {
		c.t.Fatalf("new node %s: %v", cfg.NodeID, err)
	}
	if err := a.Start(); err != nil {
		c.t.Fatalf("start node %s: %v", cfg.NodeID, err)
	}
	c.mu.Lock()
	if _, ok := c.cfgs[cfg.NodeID]; !ok {
		c.order = append(c.order, cfg.NodeID)
	}
	cfg.Join = nil
	c.nodes[cfg.NodeID] = a
	c.cfgs[cfg.NodeID] = cfg
	c.mu.Unlock()
	return a
}

// Add starts a new node that joins the running cluster.
func (c *Cluster) Add(id string) *agent.Agent {
	c.t.Helper()
	return c.start(Config(c.t, id, filepath.Join(c.t.TempDir(), id), 0))
}

// Node returns a running node by id.
func (c *Cluster) Node(id string) *agent.Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// Running returns the running nodes in start order.
func (c *Cluster) Running() []*agent.Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*agent.Agent
	for _, id := range c.order {
		if a, ok := c.nodes[id]; ok {
			out = append(out, a)
		}
	}
	return out
}

// Kill stops a node at once, as a crash would.
func (c *Cluster) Kill(id string) {
	c.mu.Lock()
	a := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if a != nil {
		a.Shutdown()
	}
}

// Restart starts a stopped node again with the same id and data dir (on
// new ports, as a container with a new address would).
func (c *Cluster) Restart(id string) *agent.Agent {
	c.t.Helper()
	c.mu.Lock()
	cfg := c.cfgs[id]
	c.mu.Unlock()
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	return c.start(cfg)
}

// Forget removes a node that left gracefully from the running set.
func (c *Cluster) Forget(id string) {
	c.mu.Lock()
	delete(c.nodes, id)
	c.mu.Unlock()
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, a := range c.Running() {
		a.Shutdown()
	}
}

// WaitFor polls cond until it holds or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitForLeader waits until every running node agrees on one leader and
// returns it.
func (c *Cluster) WaitForLeader(timeout time.Duration) *agent.Agent {
	c.t.Helper()
	var leader *agent.Agent
	WaitFor(c.t, timeout, "a leader all nodes agree on", func() bool {
		leader = nil
		id := ""
		for _, a := range c.Running() {
			l, ok := a.Node.Leader()
			if !ok || (id != "" && l.ID != id) {
				return false
			}
			id = l.ID
		}
		leader = c.Node(id)
		return leader != nil && leader.Node.IsLeader()
	})
	return leader
}

// WaitForVoters waits until the leader's Raft configuration has n voters.
func (c *Cluster) WaitForVoters(n int, timeout time.Duration) {
	c.t.Helper()
	WaitFor(c.t, timeout, fmt.Sprintf("%d voters", n), func() bool {
		for _, a := range c.Running() {
			if a.Node.IsLeader() {
				return len(a.Node.Voters()) == n
			}
		}
		return false
	})
}

// Followers returns the running nodes that are not the leader.
func (c *Cluster) Followers() []*agent.Agent {
	var out []*agent.Agent
	for _, a := range c.Running() {
		if !a.Node.IsLeader() {
			out = append(out, a)
		}
	}
	return out
}

// Response is an HTTP answer.
type Response struct {
	Code   int
	Body   []byte
	Header http.Header
}

// JSON decodes the body.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends a request with the cluster's token.
func (c *Cluster) Do(a *agent.Agent, method, path string, body any) Response {
	c.t.Helper()
	return Do(c.t, c.client, method, a.URL()+path, Token, body)
}

// Do sends one request; body may be nil, []byte, a string or a value to
// encode as JSON.
func Do(t testing.TB, client *http.Client, method, url, token string, body any) Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return Response{Code: resp.StatusCode, Body: data, Header: resp.Header}
}

package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// testCluster is a set of executors in one process, each with its own TCP
// listener on 127.0.0.1; Dial connects to the other executor's listener.
type testCluster struct {
	t      testing.TB
	execs  map[string]*Executor
	addrs  map[string]string
	lns    []net.Listener
	events *eventLog
	in     string
	out    string
	wg     sync.WaitGroup
}

// testLogger keeps test output to warnings (log-sink records are Info).
var testLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

type eventLog struct {
	mu      sync.Mutex
	evs     []SubtaskEvent
	acks    []CheckpointAck
	ackHook func(CheckpointAck)
}

func (l *eventLog) SubtaskStateChanged(ev SubtaskEvent) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) all() []SubtaskEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]SubtaskEvent(nil), l.evs...)
}

func newTestCluster(t testing.TB, nodes int, tweak func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, execs: map[string]*Executor{}, addrs: map[string]string{}, events: &eventLog{},
		in: t.TempDir(), out: t.TempDir()}
	for i := 0; i < nodes; i++ {
		id := fmt.Sprintf("n%d", i)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.lns = append(c.lns, ln)
		c.addrs[id] = ln.Addr().String()
		cfg := Config{NodeID: id, InputDir: c.in, OutputDir: c.out, Reporter: c.events, Logger: testLogger,
			Dial: func(ctx context.Context, node string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", c.addrs[node])
			}}
		if tweak != nil {
			tweak(&cfg)
		}
		e, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.execs[id] = e
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				go e.HandleConn(conn)
			}
		}()
	}
	t.Cleanup(c.close)
	return c
}

func (c *testCluster) close() {
	for _, ln := range c.lns {
		ln.Close()
	}
	for _, e := range c.execs {
		e.Close()
	}
	c.wg.Wait()
}

func (c *testCluster) parse(spec string) *jobgraph.JobGraph {
	c.t.Helper()
	g, err := jobgraph.Parse([]byte(spec), jobgraph.Options{InputDir: c.in, OutputDir: c.out, AllowExec: true, ExecPaths: []string{"/bin", "/usr/bin"}})
	if err != nil {
		c.t.Fatal(err)
	}
	return g
}

// deploy places subtask i of every vertex on nodes[i % len(nodes)] (slot
// sharing) and deploys on all executors.
func (c *testCluster) deploy(jobID string, g *jobgraph.JobGraph, place func(vertex string, i int) string) {
	c.t.Helper()
	pl := map[string][]string{}
	for _, v := range g.Vertices {
		for i := 0; i < v.Parallelism; i++ {
			pl[v.ID] = append(pl[v.ID], place(v.ID, i))
		}
	}
	for _, e := range c.execs {
		if err := e.Deploy(Deployment{JobID: jobID, Attempt: 1, Graph: g, Placement: pl}); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *testCluster) subtasks(jobID string) []SubtaskStatus {
	var all []SubtaskStatus
	for _, e := range c.execs {
		all = append(all, e.Subtasks(jobID)...)
	}
	sort.Slice(all, func(a, b int) bool {
		if all[a].VertexID != all[b].VertexID {
			return all[a].VertexID < all[b].VertexID
		}
		return all[a].Subtask < all[b].Subtask
	})
	return all
}

func (c *testCluster) subtask(jobID, vertex string, i int) SubtaskStatus {
	for _, s := range c.subtasks(jobID) {
		if s.VertexID == vertex && s.Subtask == i {
			return s
		}
	}
	c.t.Fatalf("no subtask %s[%d]", vertex, i)
	return SubtaskStatus{}
}

// waitAll waits until every subtask of the job is terminal and returns them.
func (c *testCluster) waitAll(jobID string, timeout time.Duration) []SubtaskStatus {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		subs := c.subtasks(jobID)
		done := len(subs) > 0
		for _, s := range subs {
			done = done && terminal(s.State)
		}
		if done {
			return subs
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, s := range subs {
				fmt.Fprintf(&b, "\n  %s[%d]@%s %s %s", s.VertexID, s.Subtask, s.NodeID, s.State, s.Failure)
			}
			c.t.Fatalf("job %s not done after %s:%s", jobID, timeout, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *testCluster) waitFor(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func requireState(t testing.TB, subs []SubtaskStatus, state string) {
	t.Helper()
	for _, s := range subs {
		if s.State != state {
			t.Fatalf("%s[%d] is %s, want %s (failure: %s)", s.VertexID, s.Subtask, s.State, state, s.Failure)
		}
	}
}

// readOutput reads every committed part file under OutputDir/dir.
func readOutput(t testing.TB, root, dir string) []Record {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, dir, "part-*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if line == "" {
				continue
			}
			r, err := parseJSONRecord([]byte(line))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			recs = append(recs, r)
		}
	}
	return recs
}

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// node is one dispatcher process of a local cluster. Its ports and data
// dir are fixed for its whole life, so a restart rejoins as the same server.
type node struct {
	id                             string
	httpAddr, raftAddr, gossipAddr string
	dataDir                        string
	logPath                        string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current process has exited
	killed  bool          // the bench killed the current process on purpose
	exitErr error
	starts  int
}

func (n *node) url() string { return "http://" + n.httpAddr }

// running tells whether the current process is alive.
func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// cluster is a set of real dispatcher processes on 127.0.0.1.
type cluster struct {
	binary string
	token  string
	dir    string
	extra  []string // extra agent flags for every node
	nodes  []*node
	// unexpected collects processes that exited without being killed.
	mu         sync.Mutex
	unexpected []string
}

// usedPorts keeps the ports handed out in this run so that two nodes never
// get the same one between the probe and the bind.
var (
	usedPortsMu sync.Mutex
	usedPorts   = map[int]bool{}
)

// freePort returns a port free on 127.0.0.1 for TCP and, when udp is set,
// for UDP too (memberlist binds both).
func freePort(udp bool) (int, error) {
	for i := 0; i < 50; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		if udp {
			pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				ok = false
			} else {
				pc.Close()
			}
		}
		ln.Close()
		usedPortsMu.Lock()
		if ok && !usedPorts[port] {
			usedPorts[port] = true
			usedPortsMu.Unlock()
			return port, nil
		}
		usedPortsMu.Unlock()
	}
	return 0, errors.New("no free port found on 127.0.0.1")
}

// newCluster lays out n nodes (ports, data dirs) under dir without starting them.
func newCluster(binary, token, dir string, n int, extra []string) (*cluster, error) {
	c := &cluster{binary: binary, token: token, dir: dir, extra: extra}
	for i := 1; i <= n; i++ {
		var ports [3]int
		for j := range ports {
			p, err := freePort(j == 2)
			if err != nil {
				return nil, err
			}
			ports[j] = p
		}
		id := fmt.Sprintf("n%d", i)
		c.nodes = append(c.nodes, &node{
			id:         id,
			httpAddr:   fmt.Sprintf("127.0.0.1:%d", ports[0]),
			raftAddr:   fmt.Sprintf("127.0.0.1:%d", ports[1]),
			gossipAddr: fmt.Sprintf("127.0.0.1:%d", ports[2]),
			dataDir:    filepath.Join(dir, id, "data"),
			logPath:    filepath.Join(dir, id+".log"),
		})
	}
	return c, nil
}

func (c *cluster) joinList() string {
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.gossipAddr)
	}
	return strings.Join(addrs, ",")
}

// args are the agent flags of node n.
func (c *cluster) args(n *node) []string {
	args := []string{"agent",
		"--node-id", n.id,
		"--data-dir", n.dataDir,
		"--http-addr", n.httpAddr,
		"--raft-addr", n.raftAddr,
		"--gossip-addr", n.gossipAddr,
		"--advertise", "127.0.0.1",
		"--join", c.joinList(),
		"--bootstrap-expect", strconv.Itoa(len(c.nodes)),
	}
	return append(args, c.extra...)
}

// env is the parent's environment without DISPATCHER_* (which would change
// the nodes' settings behind the bench's back) plus the token.
func (c *cluster) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DISPATCHER_") || strings.HasPrefix(kv, "HAB_SUP_GATEWAY_AUTH_TOKEN=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "DISPATCHER_AUTH_TOKEN="+c.token)
}

// start launches (or relaunches) node n in its own process group, with its
// output appended to its log file.
func (c *cluster) start(n *node) error {
	if err := os.MkdirAll(n.dataDir, 0o750); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.starts++
	fmt.Fprintf(logf, "----- bench: start #%d of %s at %s\n", n.starts, n.id, time.Now().Format(time.RFC3339Nano))
	n.mu.Unlock()
	cmd := exec.Command(c.binary, c.args(n)...)
	cmd.Env = c.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a kill reaches anything the node spawns. Pdeathsig:
	// should the bench die without cleaning up, the kernel kills the node.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.id, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done, n.killed, n.exitErr = cmd, done, false, nil
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		n.exitErr = err
		killed := n.killed
		n.mu.Unlock()
		if !killed {
			c.mu.Lock()
			c.unexpected = append(c.unexpected, fmt.Sprintf("%s exited on its own at %s: %v (log %s)", n.id, time.Now().Format("15:04:05.000"), err, n.logPath))
			c.mu.Unlock()
		}
		close(done)
	}()
	return nil
}

// kill sends SIGKILL to node n's process group and returns at once (the
// kernel reaps it; wait for n.done to know it is gone).
func (c *cluster) kill(n *node) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return fmt.Errorf("%s is not running", n.id)
	}
	n.killed = true
	return syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
}

// waitExit waits for node n's current process to be gone.
func (n *node) waitExit(timeout time.Duration) error {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %s", n.id, timeout)
	}
}

// startAll launches every node.
func (c *cluster) startAll() error {
	for _, n := range c.nodes {
		if err := c.start(n); err != nil {
			return err
		}
	}
	return nil
}

// close kills every process group still running and waits for them; it is
// safe to call more than once.
func (c *cluster) close() {
	for _, n := range c.nodes {
		if n.running() {
			_ = c.kill(n)
		}
	}
	for _, n := range c.nodes {
		if err := n.waitExit(5 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "warning:", err)
		}
	}
}

// unexpectedExits lists the processes that died without being killed.
func (c *cluster) unexpectedExits() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.unexpected...)
}

// node returns the node with the given id.
func (c *cluster) node(id string) *node {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// others returns the nodes other than skip.
func (c *cluster) others(skip *node) []*node {
	var out []*node
	for _, n := range c.nodes {
		if n != skip {
			out = append(out, n)
		}
	}
	return out
}

// expectedWhilePeerDown tells a raft ERROR line that only says a killed
// peer is unreachable: normal during the failover benchmark.
func expectedWhilePeerDown(line string) bool {
	return strings.Contains(line, "component=raft") &&
		(strings.Contains(line, "connection refused") || strings.Contains(line, "error=EOF") || strings.Contains(line, "connection reset"))
}

// suspiciousLogLines scans the node logs for panics, fatal errors and
// ERROR-level lines, which are bugs whatever the figures say. Raft errors
// about an unreachable (killed) peer are only counted.
func (c *cluster) suspiciousLogLines(max int) (lines []string, peerDown int) {
	for _, n := range c.nodes {
		f, err := os.Open(n.logPath)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		line := 0
		for sc.Scan() {
			line++
			t := sc.Text()
			if !(strings.HasPrefix(t, "panic:") || strings.HasPrefix(t, "fatal error:") ||
				strings.Contains(t, "level=ERROR") || strings.Contains(t, "[ERROR]") || strings.Contains(t, "DATA RACE")) {
				continue
			}
			if expectedWhilePeerDown(t) {
				peerDown++
				continue
			}
			if len(lines) < max {
				if len(t) > 300 {
					t = t[:300] + "..."
				}
				lines = append(lines, fmt.Sprintf("%s:%d: %s", filepath.Base(n.logPath), line, t))
			}
		}
		f.Close()
	}
	return lines, peerDown
}

// waitHealthy waits until every node is running and ready, all agree on
// one leader, and the leader lists every node as an alive voter.
func (c *cluster) waitHealthy(ctx context.Context, api *apiClient, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "not checked yet"
	for {
		leader, why := c.healthy(ctx, api)
		if why == "" {
			return leader, nil
		}
		last = why
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("cluster not healthy after %s: %s", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *cluster) healthy(ctx context.Context, api *apiClient) (string, string) {
	leaderID := ""
	for _, n := range c.nodes {
		if !n.running() {
			return "", n.id + " is not running"
		}
		if code, body, err := api.get(ctx, n, "/v1/health/ready", time.Second); err != nil || code != 200 {
			return "", fmt.Sprintf("%s not ready: %d %s %v", n.id, code, strings.TrimSpace(string(body)), err)
		}
		l, err := api.leader(ctx, n, time.Second)
		if err != nil {
			return "", fmt.Sprintf("%s: leader: %v", n.id, err)
		}
		if leaderID == "" {
			leaderID = l.ID
		} else if l.ID != leaderID {
			return "", fmt.Sprintf("nodes disagree on the leader (%s vs %s)", leaderID, l.ID)
		}
	}
	ln := c.node(leaderID)
	if ln == nil {
		return "", "leader " + leaderID + " is not a node of this cluster"
	}
	members, err := api.members(ctx, ln, time.Second)
	if err != nil {
		return "", "members: " + err.Error()
	}
	ok := 0
	for _, m := range members {
		if c.node(m.ID) != nil && m.Status == "alive" && m.Suffrage == "voter" {
			ok++
		}
	}
	if ok != len(c.nodes) || len(members) != len(c.nodes) {
		var desc []string
		for _, m := range members {
			desc = append(desc, m.ID+"="+m.Status+"/"+m.Suffrage)
		}
		return "", fmt.Sprintf("leader %s sees members %s", leaderID, strings.Join(desc, " "))
	}
	return leaderID, ""
}

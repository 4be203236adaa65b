package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, 100 on every Linux the bench runs on.
const clockTicks = 100

// cpuSample is CPU time used so far by each node, the bench itself and the
// whole machine, to tell whether a run was CPU-bound (2 cores shared by
// three nodes, the load generator and whatever else the machine runs).
type cpuSample struct {
	at          time.Time
	nodes       map[string]float64 // seconds
	self        float64
	busy, total float64 // machine-wide, seconds summed over cores
}

func takeCPU(c *cluster) cpuSample {
	s := cpuSample{at: time.Now(), nodes: map[string]float64{}}
	for _, n := range c.nodes {
		n.mu.Lock()
		cmd := n.cmd
		n.mu.Unlock()
		if cmd != nil && cmd.Process != nil && n.running() {
			s.nodes[n.id] = procCPU(cmd.Process.Pid)
		}
	}
	s.self = procCPU(os.Getpid())
	s.busy, s.total = machineCPU()
	return s
}

// procCPU is utime+stime of a process in seconds.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces; fields restart after the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// machineCPU is the busy and total time of all cores from /proc/stat.
func machineCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line := strings.SplitN(string(b), "\n", 2)[0]
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		if i >= 8 { // guest times are already counted in user
			break
		}
		total += x
		if i != 3 && i != 4 { // idle, iowait
			busy += x
		}
	}
	return busy / clockTicks, total / clockTicks
}

// cpuUse is the CPU time used over some wall time (possibly summed over
// several intervals).
type cpuUse struct {
	wall  float64
	nodes map[string]float64
	self  float64
	busy  float64
	total float64
}

// add accumulates the use between samples a and b.
func (u *cpuUse) add(a, b cpuSample) {
	if u.nodes == nil {
		u.nodes = map[string]float64{}
	}
	u.wall += b.at.Sub(a.at).Seconds()
	for id, x := range b.nodes {
		if y, ok := a.nodes[id]; ok {
			u.nodes[id] += x - y
		}
	}
	u.self += b.self - a.self
	u.busy += b.busy - a.busy
	u.total += b.total - a.total
}

// report describes the use in cores (1.00 = one core busy all the time).
func (u *cpuUse) report(c *cluster) string {
	if u.wall <= 0 {
		return ""
	}
	var parts []string
	nodes := 0.0
	for _, n := range c.nodes {
		if x, ok := u.nodes[n.id]; ok {
			nodes += x / u.wall
			parts = append(parts, fmt.Sprintf("%s %.2f", n.id, x/u.wall))
		}
	}
	self := u.self / u.wall
	others := max(0, u.busy/u.wall-nodes-self)
	machine := 0.0
	if u.total > 0 {
		machine = u.busy / u.total * 100
	}
	return fmt.Sprintf("CPU in cores: %s (nodes %.2f), bench %.2f, other processes %.2f; machine %.0f%% busy",
		strings.Join(parts, ", "), nodes, self, others, machine)
}

// fsyncProbe times n small write+fsync pairs in dir: the floor under a
// Raft commit, which fsyncs the log on the leader and on a follower.
func fsyncProbe(dir string, n int) (stats, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return stats{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var ds []time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return stats{}, err
		}
		if err := f.Sync(); err != nil {
			return stats{}, err
		}
		ds = append(ds, time.Since(t0))
	}
	return summarize(ds), nil
}

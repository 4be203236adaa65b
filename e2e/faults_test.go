//go:build e2e

package e2e

import (
	"context"
	"fmt"
	mrand "math/rand"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultResult is what one injected fault measured.
type faultResult struct {
	Phase    string // "single" or "mixed"
	Scenario string
	Target   string
	From, To int64 // history timeline (ns since the history started)
	// Leader is the time from the fault to a new leader reported by a
	// surviving node; -1 when the fault does not remove the leader.
	Leader time.Duration
	// Writes is the time from the fault until a write through the load
	// balancer succeeded; -1 when not measured.
	Writes time.Duration
	// Gap is the longest time without a successful probe write (requests
	// stuck on a dead or frozen node until their 3 s timeout count).
	Gap time.Duration
	// Recovery is scenario specific: the restarted node ready again, the
	// job RUNNING again elsewhere, the whole cluster back.
	Recovery time.Duration
	Lost     int
	Problems []string
	Notes    []string
}

type suite struct {
	probe   *writeProbe
	t       *testing.T
	c       *cluster
	h       *history
	w       *workload
	rng     *mrand.Rand
	actorID int
	mu      sync.Mutex
	results []faultResult
}

func (s *suite) nextActor(base string, timeout time.Duration) *actor {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.actorID++
	return newActor(s.c, s.h, 100+s.actorID, base, timeout)
}

type scenario struct {
	name   string
	weight int // in the mixed run
	run    func(s *suite, t *testing.T, r *faultResult, mixed bool)
}

var scenarios = []scenario{
	{"kill-leader", 6, (*suite).killLeader},
	{"pause-leader", 5, (*suite).pauseLeader},
	{"partition", 5, (*suite).partition},
	{"restart-follower", 4, (*suite).restartFollower},
	{"rolling-restart", 2, (*suite).rollingRestart},
	{"kill-subtask-node", 4, (*suite).killSubtaskNode},
	{"compose-down-up", 1, (*suite).composeDownUp},
}

func pickScenario(rng *mrand.Rand) scenario {
	total := 0
	for _, sc := range scenarios {
		total += sc.weight
	}
	n := rng.Intn(total)
	for _, sc := range scenarios {
		if n < sc.weight {
			return sc
		}
		n -= sc.weight
	}
	return scenarios[0]
}

// runFault runs one scenario as a subtest and records its result; it
// returns false when the cluster could not be brought back.
func (s *suite) runFault(phase string, name string, sc scenario) bool {
	r := faultResult{Phase: phase, Scenario: sc.name, Leader: -1, Writes: -1, Gap: -1, Recovery: -1}
	ok := s.t.Run(name, func(t *testing.T) {
		s.c.t = t
		defer func() { s.c.t = s.t }()
		if err := s.c.waitHealthy(90 * time.Second); err != nil {
			t.Fatalf("before the fault: %v", err)
		}
		r.From = s.h.now()
		wall := time.Now().UTC()
		s.probe = s.startProbe()
		defer s.probe.stop()
		sc.run(s, t, &r, phase == "mixed")
		if err := s.c.waitHealthy(90 * time.Second); err != nil {
			t.Fatalf("after the fault: %v", err)
		}
		r.Writes, r.Gap = s.probe.stop()
		if len(s.probe.failures) > 0 {
			t.Logf("failed probe writes: %s", strings.Join(s.probe.failures, "; "))
		}
		if r.Writes > 60*time.Second {
			r.Problems = append(r.Problems, fmt.Sprintf("no successful write through the load balancer for %v", r.Writes.Round(time.Second)))
		}
		time.Sleep(time.Second) // let the workload run on the healed cluster
		r.To = s.h.now()
		for _, p := range r.Problems {
			t.Errorf("%s: %s", name, p)
		}
		t.Logf("%s from %s (+%v) to +%v target=%s leader=%v writes=%v gap=%v recovery=%v %s", name, wall.Format("15:04:05"), time.Duration(r.From).Round(time.Second), time.Duration(r.To).Round(time.Second), r.Target, fmtDur(r.Leader), fmtDur(r.Writes), fmtDur(r.Gap), fmtDur(r.Recovery), strings.Join(r.Notes, "; "))
	})
	if r.To == 0 {
		r.To = s.h.now()
	}
	s.mu.Lock()
	s.results = append(s.results, r)
	s.mu.Unlock()
	// A failed check is reported and the run goes on, as long as the
	// cluster comes back.
	return ok || s.c.waitHealthy(60*time.Second) == nil
}

// currentLeader waits for an agreed leader.
func (s *suite) currentLeader(t *testing.T) string {
	var l string
	if err := waitFor(30*time.Second, 100*time.Millisecond, func() bool { l = s.c.leader(); return l != "" }); err != nil {
		t.Fatalf("no agreed leader within 30s")
	}
	return l
}

func (s *suite) others(node string) []string {
	var out []string
	for _, n := range s.c.nodes {
		if n != node {
			out = append(out, n)
		}
	}
	return out
}

// waitNewLeader polls the surviving nodes until one reports a leader other
// than old; it returns the time since t0, or -1 on timeout.
func (s *suite) waitNewLeader(t0 time.Time, old string, survivors []string, timeout time.Duration) time.Duration {
	var d time.Duration = -1
	waitFor(timeout, 50*time.Millisecond, func() bool {
		for _, n := range survivors {
			if l := s.c.leaderSeenBy(n); l != "" && l != old && slices.Contains(survivors, l) {
				d = time.Since(t0)
				return true
			}
		}
		return false
	})
	return d
}

// writeProbe writes through the load balancer all through a fault, open
// loop: every 100 ms it sends a new write (3 s timeout) whatever happened
// to the earlier ones, so a request stuck on a dead node does not hide
// that later ones succeed. Each probe owns one job, submitted and
// cancelled once, then submitted again and again: an idempotent
// re-submission is a full Raft write on the leader that creates nothing,
// so the probe does not flood the scheduler with jobs. Its operations are
// part of the history.
type writeProbe struct {
	mu        sync.Mutex
	sent, ret []time.Time // successful writes
	start     time.Time
	t0, at    time.Time // fault started, fault in effect (mark)
	quit      chan struct{}
	wg        sync.WaitGroup
	done      bool
	gap, back time.Duration
	// failures are the first failed probe writes, for the log.
	failures []string
}

func (s *suite) startProbe() *writeProbe {
	p := &writeProbe{start: time.Now(), quit: make(chan struct{}), back: -1}
	a := s.nextActor(s.c.lb, 3*time.Second)
	id := newJobID()
	for range 20 {
		if a.do(context.Background(), opSubmit, id).Result == resOK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for range 20 {
		if a.do(context.Background(), opCancel, id).Result != resUnknown {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.start = time.Now()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-tick.C:
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				sent := time.Now()
				out := a.do(context.Background(), opSubmit, id)
				if out.Result == resOK {
					p.record(sent)
				} else {
					p.fail(sent, out.Raw)
				}
			}()
		}
	}()
	return p
}

// mark says when the fault started (t0) and when it was in effect (the
// docker command returned): writes sent from then on show whether writes
// are available again.
func (p *writeProbe) mark(t0 time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.t0.IsZero() {
		p.t0, p.at = t0, time.Now()
	}
}

func (p *writeProbe) record(sent time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ret = append(p.ret, time.Now())
	p.sent = append(p.sent, sent)
}

// fail keeps a failed probe write for the log.
func (p *writeProbe) fail(sent time.Time, raw string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.failures) < 6 {
		if len(raw) > 60 {
			raw = raw[len(raw)-60:]
		}
		p.failures = append(p.failures, fmt.Sprintf("+%.2fs %s after %.2fs", sent.Sub(p.start).Seconds(), raw, time.Since(sent).Seconds()))
	}
}

// waitSuccess waits until a write sent after t has succeeded.
func (p *writeProbe) waitSuccess(t time.Time, timeout time.Duration) bool {
	return waitFor(timeout, 20*time.Millisecond, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, s := range p.sent {
			if s.After(t) {
				return true
			}
		}
		return false
	}) == nil
}

// stop ends the probe. It returns the time from the fault until the first
// successful write sent once the fault was in effect (-1: no mark or
// none), and the longest time without any successful write.
func (p *writeProbe) stop() (back, gap time.Duration) {
	p.mu.Lock()
	if p.done {
		defer p.mu.Unlock()
		return p.back, p.gap
	}
	p.done = true
	p.mu.Unlock()
	close(p.quit)
	end := time.Now()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	times := append([]time.Time{p.start}, p.ret...)
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	times = append(times, end)
	for i := 1; i < len(times); i++ {
		if times[i].After(end) {
			break
		}
		p.gap = max(p.gap, times[i].Sub(times[i-1]))
	}
	if !p.t0.IsZero() {
		for i, s := range p.sent {
			if !s.Before(p.at) {
				if d := p.ret[i].Sub(p.t0); p.back < 0 || d < p.back {
					p.back = d
				}
			}
		}
	}
	return p.back, p.gap
}

func (s *suite) docker(t *testing.T, args ...string) {
	t.Helper()
	if _, err := run(2*time.Minute, nil, "docker", args...); err != nil {
		t.Fatalf("%v", err)
	}
}

// ------------------------------------------------------------ scenarios ---

func (s *suite) killLeader(t *testing.T, r *faultResult, mixed bool) {
	old := s.currentLeader(t)
	r.Target = old
	cid := s.c.container(old)
	t0 := time.Now()
	s.docker(t, "kill", cid)
	s.probe.mark(t0)
	defer s.docker(t, "start", cid)
	r.Leader = s.waitNewLeader(t0, old, s.others(old), 30*time.Second)
	s.probe.waitSuccess(time.Now(), 60*time.Second)
	if r.Leader < 0 {
		r.Problems = append(r.Problems, "no new leader within 30s of killing "+old)
	}
}

func (s *suite) pauseLeader(t *testing.T, r *faultResult, mixed bool) {
	old := s.currentLeader(t)
	r.Target = old
	cid := s.c.container(old)
	t0 := time.Now()
	s.docker(t, "pause", cid)
	s.probe.mark(t0)
	unpaused := false
	defer func() {
		if !unpaused {
			run(time.Minute, nil, "docker", "unpause", cid)
		}
	}()
	r.Leader = s.waitNewLeader(t0, old, s.others(old), 30*time.Second)
	s.probe.waitSuccess(time.Now(), 60*time.Second)
	if d := 4*time.Second - time.Since(t0); d > 0 {
		time.Sleep(d)
	}
	s.docker(t, "unpause", cid)
	unpaused = true
	r.Notes = append(r.Notes, fmt.Sprintf("paused %v", time.Since(t0).Round(100*time.Millisecond)))
	if r.Leader < 0 {
		r.Problems = append(r.Problems, "no new leader within 30s of pausing "+old)
	}
}

// partition disconnects one node (the leader, or a random node in the
// mixed run) from the compose network. The node stays attached to a side
// network of its own so its debug port stays published; through it the
// test checks that the minority side refuses writes and consistent reads.
func (s *suite) partition(t *testing.T, r *faultResult, mixed bool) {
	leader := s.currentLeader(t)
	target := leader
	if mixed {
		target = s.c.nodes[s.rng.Intn(len(s.c.nodes))]
	}
	r.Target = target
	if target != leader {
		r.Target += " (follower)"
	}
	cid := s.c.container(target)
	if _, err := run(30*time.Second, nil, "docker", "network", "inspect", s.c.sideNet); err != nil {
		s.docker(t, "network", "create", "--label", "dispatcher-e2e=1", s.c.sideNet)
	}
	s.docker(t, "network", "connect", s.c.sideNet, cid)
	t0 := time.Now()
	s.docker(t, "network", "disconnect", s.c.network(), cid)
	s.probe.mark(t0)
	healed := false
	heal := func() {
		if healed {
			return
		}
		healed = true
		run(time.Minute, nil, "docker", "network", "connect", "--alias", target, s.c.network(), cid)
		run(time.Minute, nil, "docker", "network", "disconnect", s.c.sideNet, cid)
	}
	defer heal()
	if target == leader {
		r.Leader = s.waitNewLeader(t0, leader, s.others(target), 30*time.Second)
		if r.Leader < 0 {
			r.Problems = append(r.Problems, "no new leader on the majority side within 30s")
		}
	}
	// The minority side: give it a moment to notice, then a write and a
	// consistent read directly on its debug port, both recorded.
	time.Sleep(time.Second)
	var wg sync.WaitGroup
	var wOut, rOut opOutput
	wg.Add(2)
	go func() {
		defer wg.Done()
		wOut = s.nextActor(s.c.debug[target], 15*time.Second).do(context.Background(), opSubmit, newJobID())
	}()
	go func() {
		defer wg.Done()
		job := s.someAckedJob()
		rOut = s.nextActor(s.c.debug[target], 15*time.Second).do(context.Background(), opGet, job)
	}()
	wg.Wait()
	s.probe.waitSuccess(time.Now(), 60*time.Second)
	if wOut.Raw != "503" {
		r.Problems = append(r.Problems, fmt.Sprintf("minority node %s answered a write with %s (want 503)", target, wOut.Raw))
	}
	if rOut.Raw != "503" {
		r.Problems = append(r.Problems, fmt.Sprintf("minority node %s answered a consistent read with %s (want 503)", target, rOut.Raw))
	}
	r.Notes = append(r.Notes, fmt.Sprintf("minority write=%s consistent read=%s", wOut.Raw, rOut.Raw))
	heal()
	r.Recovery = s.waitReady(target, t0)
}

func (s *suite) someAckedJob() string {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	for id := range s.h.acked {
		return id
	}
	return newJobID()
}

// waitReady waits (60s) for a node to be ready and returns the time since t0.
func (s *suite) waitReady(node string, t0 time.Time) time.Duration {
	if waitFor(60*time.Second, 100*time.Millisecond, func() bool { return s.c.ready(node) }) != nil {
		return -1
	}
	return time.Since(t0)
}

func (s *suite) restartFollower(t *testing.T, r *faultResult, mixed bool) {
	leader := s.currentLeader(t)
	followers := s.others(leader)
	target := followers[s.rng.Intn(len(followers))]
	r.Target = target
	cid := s.c.container(target)
	t0 := time.Now()
	s.docker(t, "stop", "-t", "15", cid)
	s.probe.mark(time.Now()) // measured from the node being gone
	s.docker(t, "start", cid)
	r.Recovery = s.waitReady(target, t0)
	s.probe.waitSuccess(time.Now(), 60*time.Second)
	if r.Recovery < 0 {
		r.Problems = append(r.Problems, target+" not ready within 60s of its restart")
	}
	if l := s.currentLeader(t); l != leader {
		r.Notes = append(r.Notes, "leader changed to "+l)
	}
}

// rollingRestart restarts every node in turn, the leader last, each once
// the cluster is healthy again.
func (s *suite) rollingRestart(t *testing.T, r *faultResult, mixed bool) {
	leader := s.currentLeader(t)
	order := append(s.others(leader), leader)
	r.Target = strings.Join(order, ",")
	start := time.Now()
	for _, n := range order {
		if err := s.c.waitHealthy(90 * time.Second); err != nil {
			t.Fatalf("rolling restart, before %s: %v", n, err)
		}
		cid := s.c.container(n)
		t0 := time.Now()
		s.docker(t, "stop", "-t", "15", cid)
		if n == leader {
			s.probe.mark(time.Now()) // measured from the leader being gone
			r.Leader = s.waitNewLeader(t0, leader, s.others(leader), 30*time.Second)
			s.probe.waitSuccess(time.Now(), 60*time.Second)
		}
		s.docker(t, "start", cid)
		if s.waitReady(n, t0) < 0 {
			r.Problems = append(r.Problems, n+" not ready within 60s of its restart")
		}
	}
	r.Recovery = time.Since(start)
	if r.Leader < 0 {
		r.Notes = append(r.Notes, "no leader change seen (a stop hands leadership over fast, or the new leader was missed)")
	}
}

// killSubtaskNode kills the node that runs a job's subtasks; the job has a
// fixed-delay restart strategy and must be RUNNING again on the others.
func (s *suite) killSubtaskNode(t *testing.T, r *faultResult, mixed bool) {
	a := s.nextActor(s.c.lb, 15*time.Second)
	job := newJobID()
	defer a.retire(context.Background(), job)
	if waitFor(30*time.Second, 500*time.Millisecond, func() bool {
		return a.do(context.Background(), opSubmit, job).Result == resOK
	}) != nil {
		t.Fatalf("job %s not accepted within 30s", job)
	}
	var host string
	if waitFor(60*time.Second, 250*time.Millisecond, func() bool {
		st, nodes, err := s.c.jobPlacement(job, "src")
		if err != nil || st != "RUNNING" || nodes[0] == "" {
			return false
		}
		host = nodes[0]
		return true
	}) != nil {
		t.Fatalf("job %s not RUNNING within 60s (no free slot?)", job)
	}
	leader := s.currentLeader(t)
	r.Target = host
	if host == leader {
		r.Target += " (leader)"
	}
	cid := s.c.container(host)
	t0 := time.Now()
	s.docker(t, "kill", cid)
	s.probe.mark(t0)
	defer s.docker(t, "start", cid)
	if host == leader {
		r.Leader = s.waitNewLeader(t0, leader, s.others(host), 30*time.Second)
	}
	var where string
	if waitFor(90*time.Second, 250*time.Millisecond, func() bool {
		st, src, err := s.c.jobPlacement(job, "src")
		if err != nil || st != "RUNNING" || src[0] == "" || src[0] == host {
			return false
		}
		_, out, err := s.c.jobPlacement(job, "out")
		if err != nil || out[0] == "" || out[0] == host {
			return false
		}
		where = src[0]
		return true
	}) != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("job %s not RUNNING on another node within 90s of killing %s", job, host))
	} else {
		r.Recovery = time.Since(t0)
		r.Notes = append(r.Notes, fmt.Sprintf("job %s moved %s -> %s", job[:8], host, where))
	}
	s.probe.waitSuccess(time.Now(), 60*time.Second)
}

// composeDownUp stops the whole cluster with `compose down` (volumes
// kept) and starts it again: every acknowledged job must still be there.
func (s *suite) composeDownUp(t *testing.T, r *faultResult, mixed bool) {
	env := []string{"DISPATCHER_IMAGE=" + s.c.image("node1"), "DISPATCHER_LB_IMAGE=" + s.c.image("lb")}
	r.Target = "all"
	t0 := time.Now()
	if out, err := s.c.composeCmd(3*time.Minute, env, "down"); err != nil {
		t.Fatalf("compose down: %v\n%s", err, out)
	}
	down := time.Since(t0)
	s.probe.mark(t0)
	upAt := time.Now()
	if out, err := s.c.composeCmd(3*time.Minute, env, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	r.Leader = s.waitNewLeader(t0, "", s.c.nodes, 90*time.Second)
	if r.Leader >= 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("leader %v after up started", (r.Leader-upAt.Sub(t0)).Round(10*time.Millisecond)))
	}
	s.probe.waitSuccess(time.Now(), 60*time.Second)
	if err := s.c.waitHealthy(90 * time.Second); err != nil {
		t.Fatalf("after compose up: %v", err)
	}
	r.Recovery = time.Since(t0)
	r.Notes = append(r.Notes, fmt.Sprintf("down took %v", down.Round(100*time.Millisecond)))
	_, _, acked := s.h.snapshot()
	lost, unsure := s.checkAcked(acked)
	r.Lost = len(lost)
	r.Notes = append(r.Notes, fmt.Sprintf("%d acknowledged jobs checked after the restart", len(acked)))
	if len(lost) > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d acknowledged jobs lost after compose down/up: %v", len(lost), first(lost, 10)))
	}
	if len(unsure) > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d acknowledged jobs could not be read: %v", len(unsure), first(unsure, 10)))
	}
}

func first(ids []string, n int) []string {
	if len(ids) > n {
		return ids[:n]
	}
	return ids
}

// checkAcked reads every acknowledged job with a consistent read through
// the load balancer: a 404 is a lost write.
func (s *suite) checkAcked(acked map[string]int64) (lost, unsure []string) {
	ids := make(chan string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				code := 0
				for i := 0; i < 10; i++ {
					c, err := s.c.getJSON(s.c.lb, "/v1/jobs/"+id+"?consistent=true", nil)
					if err == nil && (c == 200 || c == 404) {
						code = c
						break
					}
					time.Sleep(time.Second)
				}
				mu.Lock()
				switch code {
				case 404:
					lost = append(lost, id)
				case 0:
					unsure = append(unsure, id)
				}
				mu.Unlock()
			}
		}()
	}
	for id := range acked {
		ids <- id
	}
	close(ids)
	wg.Wait()
	return lost, unsure
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

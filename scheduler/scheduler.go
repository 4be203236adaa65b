// Package scheduler runs on the leader only: it places jobs' slots on alive
// nodes, restarts failed jobs by their restart strategy, and reacts to the
// loss of a node. It decides; the FSM records; the nodes act.
package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// NodeSlots is a node that can run tasks.
type NodeSlots struct {
	ID    string
	Slots int
}

// Cluster is what the scheduler needs from the node it runs on.
type Cluster interface {
	Apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error)
	// AliveNodes are the nodes gossip sees alive (or merely suspect).
	AliveNodes() []NodeSlots
}

// Config tunes the scheduler.
type Config struct {
	// SlotTimeout fails a job that waited this long for slots (Flink's
	// slot.request.timeout, 5 minutes).
	SlotTimeout time.Duration
	// Interval is the period of a pass when nothing changes.
	Interval time.Duration
	Logger   *slog.Logger
}

// Scheduler is the leader's job scheduler.
type Scheduler struct {
	cfg   Config
	fsm   *fsm.FSM
	c     Cluster
	log   *slog.Logger
	graph map[string]parsedSpec
}

// parsedSpec caches a job's parsed spec with the bytes it came from: a
// rescale replaces the spec under the same job id.
type parsedSpec struct {
	raw   string
	graph *jobgraph.JobGraph
}

// New returns a scheduler over the replicated state.
func New(state *fsm.FSM, c Cluster, cfg Config) *Scheduler {
	if cfg.SlotTimeout == 0 {
		cfg.SlotTimeout = 5 * time.Minute
	}
	if cfg.Interval == 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Scheduler{cfg: cfg, fsm: state, c: c, log: cfg.Logger, graph: map[string]parsedSpec{}}
}

// Run schedules until ctx ends (leadership lost).
func (s *Scheduler) Run(ctx context.Context) {
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		changed := s.fsm.Changed()
		s.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

func (s *Scheduler) spec(j *fsm.Job) (*jobgraph.JobGraph, error) {
	if p, ok := s.graph[j.ID]; ok && p.raw == string(j.Spec) {
		return p.graph, nil
	}
	var g jobgraph.JobGraph
	if err := json.Unmarshal(j.Spec, &g); err != nil {
		return nil, err
	}
	s.graph[j.ID] = parsedSpec{raw: string(j.Spec), graph: &g}
	return &g, nil
}

// pass looks at every job once and commits at most one decision per job.
func (s *Scheduler) pass(ctx context.Context) {
	jobs := s.fsm.Jobs()
	alive := map[string]int{}
	for _, n := range s.c.AliveNodes() {
		alive[n.ID] = n.Slots
	}
	free := map[string]int{}
	for id, slots := range alive {
		free[id] = slots
	}
	for _, j := range jobs {
		if holdsSlots(j.State) {
			for _, n := range slotNodes(j.Placement) {
				free[n]--
			}
		}
	}
	now := time.Now()
	// Oldest first, so a job that waited longest gets freed slots first.
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].StartTime < jobs[b].StartTime })
	for _, j := range jobs {
		if ctx.Err() != nil {
			return
		}
		if fsm.TerminalJobState(j.State) {
			delete(s.graph, j.ID)
			continue
		}
		g, err := s.spec(j)
		if err != nil {
			s.decide(ctx, &fsm.JobTransition{JobID: j.ID, Attempt: j.Attempt, State: fsm.JobFailed, Reason: "cannot read the stored spec: " + err.Error(), At: now.UnixMilli()})
			continue
		}
		switch j.State {
		case fsm.JobCreated:
			s.place(ctx, j, g, free, now)
		case fsm.JobRestarting:
			if now.UnixMilli() >= j.RestartAt {
				s.place(ctx, j, g, free, now)
			}
		case fsm.JobRunning, fsm.JobFailing, fsm.JobCancelling:
			if lost := lostNodes(j, alive); len(lost) > 0 && j.State == fsm.JobRunning {
				s.decide(ctx, &fsm.JobTransition{JobID: j.ID, Attempt: j.Attempt, State: fsm.JobFailing, At: now.UnixMilli(),
					Failure: &fsm.Failure{Timestamp: now.UnixMilli(), Node: lost[0], Attempt: j.Attempt, Subtask: -1,
						Message: fmt.Sprintf("node %s was lost (it left the cluster or stopped answering gossip)", lost[0])}})
				continue
			}
			if j.State == fsm.JobFailing {
				s.restartOrFail(ctx, j, g, now)
			}
			if j.State == fsm.JobCancelling && len(lostNodes(j, alive)) > 0 && allRemainingOn(j, alive) {
				s.decide(ctx, &fsm.JobTransition{JobID: j.ID, Attempt: j.Attempt, State: fsm.JobCanceled, At: now.UnixMilli()})
			}
		}
	}
}

func holdsSlots(state string) bool {
	return state == fsm.JobRunning || state == fsm.JobFailing || state == fsm.JobCancelling
}

// slotNodes returns the node of each slot of a placement: with slot
// sharing, slot i hosts subtask i of every vertex.
func slotNodes(placement map[string][]string) []string {
	var slots []string
	for _, nodes := range placement {
		if len(nodes) > len(slots) {
			slots = append([]string(nil), nodes...)
		}
	}
	return slots
}

func lostNodes(j *fsm.Job, alive map[string]int) []string {
	var lost []string
	for _, n := range fsm.NodesOf(j.Placement) {
		if _, ok := alive[n]; ok {
			continue
		}
		// Only a node still running something of this attempt matters.
		for _, st := range j.Subtasks {
			if st.Node == n && !fsm.TerminalTaskState(st.State) {
				lost = append(lost, n)
				break
			}
		}
	}
	return lost
}

// allRemainingOn tells whether every unfinished subtask sits on a lost
// node, so nobody is left to report its end.
func allRemainingOn(j *fsm.Job, alive map[string]int) bool {
	for _, st := range j.Subtasks {
		if _, ok := alive[st.Node]; ok && !fsm.TerminalTaskState(st.State) {
			return false
		}
	}
	return true
}

// place assigns max(parallelism) slots, spreading them over the nodes with
// the most free slots, and commits the placement; or records why it waits.
func (s *Scheduler) place(ctx context.Context, j *fsm.Job, g *jobgraph.JobGraph, free map[string]int, now time.Time) {
	need := g.MaxVertexParallelism()
	total := 0
	for _, n := range free {
		if n > 0 {
			total += n
		}
	}
	if total < need {
		reason := fmt.Sprintf("waiting for %d task slots; %d free on %d nodes", need, total, len(free))
		if j.State == fsm.JobCreated && now.Sub(time.UnixMilli(j.StartTime)) > s.cfg.SlotTimeout {
			s.decide(ctx, &fsm.JobTransition{JobID: j.ID, Attempt: j.Attempt, State: fsm.JobFailed, At: now.UnixMilli(),
				Reason:  "could not acquire the required slots within " + s.cfg.SlotTimeout.String() + ": " + reason,
				Failure: &fsm.Failure{Timestamp: now.UnixMilli(), Subtask: -1, Attempt: j.Attempt, Message: "NoResourceAvailableException: " + reason}})
			return
		}
		if j.Reason != reason {
			s.decide(ctx, &fsm.JobTransition{JobID: j.ID, Attempt: j.Attempt, State: j.State, Reason: reason, RestartAt: j.RestartAt, At: now.UnixMilli()})
		}
		return
	}
	slots := make([]string, 0, need)
	for len(slots) < need {
		best := ""
		for id, n := range free {
			if n > 0 && (best == "" || n > free[best] || (n == free[best] && id < best)) {
				best = id
			}
		}
		slots = append(slots, best)
		free[best]--
	}
	placement := map[string][]string{}
	for _, v := range g.Vertices {
		placement[v.ID] = append([]string(nil), slots[:v.Parallelism]...)
	}
	s.decide(ctx, &fsm.JobSchedule{JobID: j.ID, Attempt: j.Attempt + 1, Placement: placement, At: now.UnixMilli(), Restore: restoreFor(j)})
}

// restoreFor picks what an attempt starts from: the newest completed
// checkpoint or savepoint of the job, else the savepoint it was submitted
// with, else nothing.
func restoreFor(j *fsm.Job) *fsm.RestoreRef {
	if cp := j.LatestRestorable(); cp != nil {
		ref := &fsm.RestoreRef{CheckpointID: cp.ID, Dir: cp.Dir, Attempt: cp.Attempt, Savepoint: cp.Savepoint}
		if j.InitialRestore != nil {
			ref.AllowNonRestoredState = j.InitialRestore.AllowNonRestoredState
		}
		return ref
	}
	if j.InitialRestore != nil {
		ref := *j.InitialRestore
		return &ref
	}
	return nil
}

// restartOrFail applies the job's restart strategy to a failing attempt.
func (s *Scheduler) restartOrFail(ctx context.Context, j *fsm.Job, g *jobgraph.JobGraph, now time.Time) {
	delay, ok := restartDelay(g.RestartStrategy, j, now)
	last := ""
	if n := len(j.Failures); n > 0 {
		last = j.Failures[n-1].Message
	}
	if !ok {
		s.decide(ctx, &fsm.JobTransition{JobID: j.ID, Attempt: j.Attempt, State: fsm.JobFailed, At: now.UnixMilli(),
			Reason: "the restart strategy allows no more restarts; last failure: " + last})
		return
	}
	s.decide(ctx, &fsm.JobTransition{JobID: j.ID, Attempt: j.Attempt, State: fsm.JobRestarting, RestartAt: now.Add(delay).UnixMilli(), At: now.UnixMilli(), Reason: last})
}

func (s *Scheduler) decide(ctx context.Context, cmd fsm.Command) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := s.c.Apply(actx, cmd)
	if err == nil {
		err = res.Err
	}
	if err != nil && ctx.Err() == nil {
		s.log.Warn("scheduler decision not recorded", "command", fmt.Sprintf("%T", cmd), "err", err)
	}
}

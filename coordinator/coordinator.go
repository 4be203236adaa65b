// Package coordinator is the leader's checkpoint coordinator: it triggers
// periodic checkpoints and requested savepoints (stop, cancel-with-savepoint,
// rescale), collects the subtasks' acknowledgements, and commits completed
// checkpoints through Raft. Everything it must not forget (reserved ids,
// triggers, completions) is in the replicated state, so a new leader picks
// up where the old one stopped: an in-flight checkpoint times out and the
// next one starts, and every IN_PROGRESS trigger is driven again.
package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/dispatcher-dev/dispatcher/checkpoint"
	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
	"github.com/dispatcher-dev/dispatcher/runtime"
)

// Cluster is what the coordinator needs from its node.
type Cluster interface {
	Apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error)
	// TriggerOn asks a node to inject barriers at its source subtasks.
	TriggerOn(ctx context.Context, nodeID, jobID string, attempt int, cp runtime.Checkpoint) error
	// Alive tells whether gossip sees a node alive.
	Alive(nodeID string) bool
}

// Config tunes the coordinator.
type Config struct {
	Storage *checkpoint.Roots
	// DefaultTimeout applies when a job sets none (Flink: 10 minutes).
	DefaultTimeout time.Duration
	// SavepointTimeout bounds savepoints, which have no interval.
	SavepointTimeout time.Duration
	Logger           *slog.Logger
}

// Coordinator runs on the leader only.
type Coordinator struct {
	cfg   Config
	state *fsm.FSM
	c     Cluster
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]*pending // by job id
	lastEnd map[string]time.Time
	// tries counts failed checkpoints per savepoint trigger.
	tries map[string]int
}

// maxTriggerTries bounds how often a savepoint is retried after its
// checkpoint failed (a source ended under it, a node died).
const maxTriggerTries = 3

type pending struct {
	jobID     string
	attempt   int
	id        int64
	savepoint bool
	trigger   *fsm.Trigger
	dir       string
	started   time.Time
	timeout   time.Duration
	total     int
	acks      map[string]fsm.SubtaskCheckpoint
	size      int64
	done      bool
}

// New returns a coordinator over the replicated state.
func New(state *fsm.FSM, c Cluster, cfg Config) *Coordinator {
	if cfg.DefaultTimeout == 0 {
		cfg.DefaultTimeout = 10 * time.Minute
	}
	if cfg.SavepointTimeout == 0 {
		cfg.SavepointTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Coordinator{cfg: cfg, state: state, c: c, log: cfg.Logger, pending: map[string]*pending{}, lastEnd: map[string]time.Time{}, tries: map[string]int{}}
}

// Run coordinates until leadership is lost.
func (co *Coordinator) Run(ctx context.Context) {
	defer func() {
		co.mu.Lock()
		co.pending = map[string]*pending{}
		co.mu.Unlock()
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		co.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func spec(j *fsm.Job) (*jobgraph.JobGraph, error) {
	var g jobgraph.JobGraph
	err := json.Unmarshal(j.Spec, &g)
	return &g, err
}

func (co *Coordinator) pass(ctx context.Context) {
	now := time.Now()
	triggers := map[string][]*fsm.Trigger{}
	for _, t := range co.state.Triggers() {
		if t.Status == fsm.TriggerInProgress {
			triggers[t.JobID] = append(triggers[t.JobID], t)
		}
	}
	for _, j := range co.state.Jobs() {
		if ctx.Err() != nil {
			return
		}
		co.mu.Lock()
		p := co.pending[j.ID]
		co.mu.Unlock()
		if p != nil && !p.done && p.attempt != j.Attempt {
			// The attempt failed under the checkpoint; a savepoint trigger
			// stays IN_PROGRESS and runs again on the next one. (A job that
			// merely ended, as a stop-with-savepoint makes it, keeps its
			// pending checkpoint: its acks may still complete it.)
			co.abort(ctx, p, fmt.Sprintf("the job moved on to attempt %d", j.Attempt), false)
			p = nil
		}
		if p != nil && now.Sub(p.started) > p.timeout {
			co.fail(ctx, p, fmt.Sprintf("checkpoint %d expired before completing (timeout %v)", p.id, p.timeout))
			p = nil
		}
		if j.State != fsm.JobRunning {
			// A job that is restarting gets its savepoint once it runs
			// again; one that ended, or a trigger that waited too long, fails.
			for _, t := range triggers[j.ID] {
				if p != nil && p.trigger != nil && p.trigger.ID == t.ID {
					continue
				}
				if fsm.TerminalJobState(j.State) {
					co.finishTrigger(ctx, t, fsm.TriggerFailed, "", fmt.Sprintf("job %s is %s", j.ID, j.State))
				} else if now.Sub(time.UnixMilli(t.CreatedAt)) > co.cfg.SavepointTimeout {
					co.finishTrigger(ctx, t, fsm.TriggerFailed, "", fmt.Sprintf("job %s did not run again within %v", j.ID, co.cfg.SavepointTimeout))
				}
			}
			continue
		}
		if p != nil {
			continue
		}
		g, err := spec(j)
		if err != nil {
			continue
		}
		// Barriers go out only when every subtask runs (Flink declines
		// otherwise): a source that is not deployed yet would never send
		// its barrier, and the subtasks aligning on it would wait forever.
		if !allRunning(j) || !co.placementAlive(j) {
			continue
		}
		co.mu.Lock()
		last, seen := co.lastEnd[j.ID]
		co.mu.Unlock()
		if ts := triggers[j.ID]; len(ts) > 0 {
			// A savepoint retried after a failure waits a moment, so a
			// node that just died is noticed before the next try.
			if !seen || now.Sub(last) >= triggerRetryPause {
				co.start(ctx, j, g, ts[0])
			}
			continue
		}
		cp := g.Checkpointing
		if cp == nil || cp.Interval.D() <= 0 {
			continue
		}
		if !seen {
			last = time.UnixMilli(j.Timestamps[fsm.JobRunning])
		}
		if now.Sub(last) < cp.Interval.D() || now.Sub(last) < cp.MinPause.D() {
			continue
		}
		co.start(ctx, j, g, nil)
	}
}

// triggerRetryPause separates the tries of a savepoint.
const triggerRetryPause = 500 * time.Millisecond

// placementAlive tells whether every node running the attempt is alive.
func (co *Coordinator) placementAlive(j *fsm.Job) bool {
	for _, n := range fsm.NodesOf(j.Placement) {
		if !co.c.Alive(n) {
			return false
		}
	}
	return true
}

func allRunning(j *fsm.Job) bool {
	if len(j.Subtasks) == 0 {
		return false
	}
	for _, st := range j.Subtasks {
		if st.State != fsm.TaskRunning {
			return false
		}
	}
	return true
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// start reserves an id, then sends the barriers.
func (co *Coordinator) start(ctx context.Context, j *fsm.Job, g *jobgraph.JobGraph, t *fsm.Trigger) {
	id := j.Checkpoints.LastID + 1
	p := &pending{jobID: j.ID, attempt: j.Attempt, id: id, trigger: t, started: time.Now(), acks: map[string]fsm.SubtaskCheckpoint{}}
	p.timeout = co.cfg.DefaultTimeout
	if g.Checkpointing != nil && g.Checkpointing.Timeout.D() > 0 {
		p.timeout = g.Checkpointing.Timeout.D()
	}
	rcp := runtime.Checkpoint{ID: id, Mode: jobgraph.ExactlyOnce}
	if g.Checkpointing != nil && g.Checkpointing.Mode != "" {
		rcp.Mode = g.Checkpointing.Mode
	}
	if t != nil && t.Kind != "checkpoint" {
		p.savepoint = true
		p.timeout = co.cfg.SavepointTimeout
		root, ok := co.cfg.Storage.Locate(t.TargetDir)
		if !ok {
			co.finishTrigger(ctx, t, fsm.TriggerFailed, "", "target directory "+t.TargetDir+" is not under a configured savepoint root")
			return
		}
		p.dir = root + "/savepoint-" + j.ID[:6] + "-" + randomSuffix()
		rcp.Savepoint = true
		rcp.Stop = t.Kind == "stop"
		rcp.Drain = t.Drain
	} else {
		p.dir = fmt.Sprintf("checkpoints/%s/chk-%d", j.ID, id)
	}
	rcp.Dir = p.dir
	for _, v := range g.Vertices {
		p.total += v.Parallelism
	}
	tid := ""
	if t != nil {
		tid = t.ID
	}
	res, err := co.c.Apply(ctx, &fsm.CheckpointStarted{JobID: j.ID, Attempt: j.Attempt, ID: id, Savepoint: p.savepoint, TriggerID: tid, At: p.started.UnixMilli()})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		co.log.Debug("checkpoint not started", "job", j.ID, "id", id, "err", err)
		return
	}
	co.mu.Lock()
	co.pending[j.ID] = p
	co.mu.Unlock()
	// Barriers start at the sources; every other subtask gets them in-band.
	sources := map[string]bool{}
	for _, v := range g.Vertices {
		if len(v.Inputs) == 0 {
			for _, n := range j.Placement[v.ID] {
				sources[n] = true
			}
		}
	}
	for node := range sources {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := co.c.TriggerOn(tctx, node, j.ID, j.Attempt, rcp)
		cancel()
		if err != nil {
			// An unreachable node is not the savepoint's fault: the
			// attempt is about to fail over, and the trigger waits for it.
			co.abort(ctx, p, fmt.Sprintf("node %s could not start checkpoint %d: %v", node, id, err), false)
			return
		}
	}
}

// Ack records subtask acknowledgements; the REST layer calls it on the
// leader with what the nodes report.
func (co *Coordinator) Ack(ctx context.Context, acks []runtime.CheckpointAck) {
	for _, a := range acks {
		co.mu.Lock()
		p := co.pending[a.JobID]
		if p == nil || p.done || p.id != a.CheckpointID || p.attempt != a.Attempt {
			co.mu.Unlock()
			continue
		}
		if a.Declined != "" {
			co.mu.Unlock()
			co.fail(ctx, p, fmt.Sprintf("subtask %d of %s declined checkpoint %d: %s", a.Subtask, a.VertexID, a.CheckpointID, a.Declined))
			continue
		}
		p.acks[fsm.SubtaskKey(a.VertexID, a.Subtask)] = fsm.SubtaskCheckpoint{
			AckAt: time.Now().UnixMilli(), StateFile: a.StateFile, StateSize: a.StateSize,
			AlignmentMs: a.AlignmentMs, SyncMs: a.SyncMs, AsyncMs: a.AsyncMs,
		}
		p.size += a.StateSize
		complete := len(p.acks) == p.total
		if complete {
			p.done = true
		}
		co.mu.Unlock()
		if complete {
			co.complete(ctx, p)
		}
	}
}

func (co *Coordinator) complete(ctx context.Context, p *pending) {
	now := time.Now()
	cp := fsm.Checkpoint{
		ID: p.id, Attempt: p.attempt, Status: fsm.TriggerCompleted, Savepoint: p.savepoint,
		TriggeredAt: p.started.UnixMilli(), CompletedAt: now.UnixMilli(), Dir: p.dir, StateSize: p.size,
		Acknowledged: len(p.acks), Total: p.total, Subtasks: p.acks,
	}
	var prune []int64
	var pruneDirs []string
	if j, ok := co.state.Job(p.jobID); ok && !p.savepoint {
		retained := 1
		if g, err := spec(j); err == nil && g.Checkpointing != nil && g.Checkpointing.Retained > 0 {
			retained = g.Checkpointing.Retained
		}
		kept := append(append([]fsm.Checkpoint(nil), j.Checkpoints.Retained...), cp)
		sort.Slice(kept, func(a, b int) bool { return kept[a].ID < kept[b].ID })
		for len(kept) > retained {
			prune = append(prune, kept[0].ID)
			pruneDirs = append(pruneDirs, kept[0].Dir)
			kept = kept[1:]
		}
	}
	res, err := co.c.Apply(ctx, &fsm.CheckpointCompleted{JobID: p.jobID, Checkpoint: cp, Prune: prune})
	if err == nil {
		err = res.Err
	}
	co.mu.Lock()
	if co.pending[p.jobID] == p {
		delete(co.pending, p.jobID)
	}
	co.lastEnd[p.jobID] = now
	co.mu.Unlock()
	if err != nil {
		co.log.Warn("completed checkpoint not recorded", "job", p.jobID, "id", p.id, "err", err)
		if p.trigger != nil {
			co.finishTrigger(ctx, p.trigger, fsm.TriggerFailed, "", "the savepoint completed but could not be recorded: "+err.Error())
		}
		return
	}
	// Only recorded checkpoints are pruned, and only after the record, so
	// a crash in between leaves an unused directory, never a missing one.
	for _, d := range pruneDirs {
		if err := co.cfg.Storage.DeleteDir(ctx, d); err != nil {
			co.log.Warn("cannot delete an old checkpoint", "dir", d, "err", err)
		}
	}
	if p.trigger != nil {
		co.finishTrigger(ctx, p.trigger, fsm.TriggerCompleted, co.cfg.Storage.Path(p.dir), "")
		co.afterTrigger(ctx, p)
	}
}

// afterTrigger finishes what a savepoint was taken for.
func (co *Coordinator) afterTrigger(ctx context.Context, p *pending) {
	t := p.trigger
	switch {
	case t.Kind == "savepoint" && t.CancelJob:
		co.apply(ctx, &fsm.JobCancel{JobID: p.jobID, At: time.Now().UnixMilli()})
	case t.Kind == "rescale":
		j, ok := co.state.Job(p.jobID)
		if !ok {
			return
		}
		g, err := spec(j)
		if err != nil {
			return
		}
		for _, v := range g.Vertices {
			if n, ok := t.Rescale[v.ID]; ok {
				v.Parallelism = n
			}
		}
		data, err := json.Marshal(g)
		if err != nil {
			return
		}
		co.apply(ctx, &fsm.JobRescale{JobID: p.jobID, Attempt: p.attempt, Spec: data, TriggerID: t.ID, At: time.Now().UnixMilli()})
	}
}

func (co *Coordinator) fail(ctx context.Context, p *pending, reason string) {
	failTrigger := true
	if p.trigger != nil {
		co.mu.Lock()
		co.tries[p.trigger.ID]++
		failTrigger = co.tries[p.trigger.ID] >= maxTriggerTries
		co.mu.Unlock()
	}
	co.abort(ctx, p, reason, failTrigger)
}

// abort records a failed checkpoint; its trigger fails too unless it is to
// be driven again.
func (co *Coordinator) abort(ctx context.Context, p *pending, reason string, failTrigger bool) {
	co.mu.Lock()
	if co.pending[p.jobID] == p {
		delete(co.pending, p.jobID)
	}
	co.lastEnd[p.jobID] = time.Now()
	p.done = true
	co.mu.Unlock()
	co.log.Info("checkpoint failed", "job", p.jobID, "id", p.id, "reason", reason)
	co.apply(ctx, &fsm.CheckpointFailed{JobID: p.jobID, Attempt: p.attempt, ID: p.id, Savepoint: p.savepoint, Reason: reason, At: time.Now().UnixMilli()})
	if p.trigger != nil && failTrigger {
		co.finishTrigger(ctx, p.trigger, fsm.TriggerFailed, "", reason)
	}
}

func (co *Coordinator) finishTrigger(ctx context.Context, t *fsm.Trigger, status, location, cause string) {
	co.apply(ctx, &fsm.TriggerDone{TriggerID: t.ID, Status: status, Location: location, FailureCause: cause, At: time.Now().UnixMilli()})
}

func (co *Coordinator) apply(ctx context.Context, cmd fsm.Command) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := co.c.Apply(actx, cmd)
	if err == nil {
		err = res.Err
	}
	if err != nil && ctx.Err() == nil {
		co.log.Warn("coordinator decision not recorded", "command", fmt.Sprintf("%T", cmd), "err", err)
	}
}

// Package runtime is the per-node task executor: it deploys the subtasks a
// placement puts on this node, runs their operators, moves records between
// subtasks over local queues and TCP with credit-based flow control, and
// measures metrics and back pressure. See DESIGN.md.
package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dispatcher-dev/dispatcher/checkpoint"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// Config configures an Executor.
type Config struct {
	// NodeID is this node's id, as used in Deployment.Placement.
	NodeID string
	// InputDir and OutputDir hold file-source and file-sink paths.
	InputDir, OutputDir string
	// AllowExec permits the exec operator for commands inside ExecPaths.
	AllowExec bool
	ExecPaths []string
	Logger    *slog.Logger
	// Dial opens an authenticated byte stream to another node's executor,
	// whose side of it must be passed to that executor's HandleConn.
	Dial func(ctx context.Context, nodeID string) (net.Conn, error)
	// Reporter receives every subtask state transition, in order, from one
	// goroutine. It may be nil.
	Reporter Reporter
	// BufferSize is the number of records per network buffer (default 512).
	BufferSize int
	// Credits is the number of buffers a receiver grants per channel
	// (default 4): the bound on in-flight buffers per channel.
	Credits int
	// Storage holds checkpoint and savepoint snapshots (required for
	// TriggerCheckpoint and Deployment.Restore).
	Storage checkpoint.Storage
}

// Reporter is told about subtask state transitions.
type Reporter interface {
	SubtaskStateChanged(SubtaskEvent)
}

// SubtaskEvent is one state transition of a subtask.
type SubtaskEvent struct {
	JobID    string
	Attempt  int
	VertexID string
	Subtask  int
	State    string
	At       time.Time
	// Failure is the error message (for FAILED).
	Failure string
}

// Deployment asks an executor to run its share of one attempt of a job.
type Deployment struct {
	JobID   string
	Attempt int
	Graph   *jobgraph.JobGraph
	// Placement maps a vertex id to the node id of each of its subtasks.
	Placement map[string][]string
	// Restore, when set, starts every subtask from a completed checkpoint
	// or savepoint (at any parallelism: state is redistributed by key group).
	Restore *Restore
}

// JobInfo is a job attempt known to this executor.
type JobInfo struct {
	JobID    string `json:"jobId"`
	Attempt  int    `json:"attempt"`
	Subtasks int    `json:"subtasks"`
	Done     bool   `json:"done"`
}

// Executor runs subtasks on one node.
type Executor struct {
	cfg     Config
	log     *slog.Logger
	buffers bufferPool
	ctx     context.Context
	stop    context.CancelFunc

	mu             sync.Mutex
	jobs           map[string]*job
	sendChans      map[chanKey]*outChannel
	recvChans      map[chanKey]*inChannel
	pendingCredits map[chanKey]pendingCredit
	peers          map[string]*peer
	inbound        map[net.Conn]struct{}
	closed         bool

	events     eventQueue
	eventsStop chan struct{}
	acks       CheckpointReporter
	// subWG counts subtasks and connection goroutines; wg the executor's own.
	subWG sync.WaitGroup
	wg    sync.WaitGroup
}

type pendingCredit struct {
	n, window int
	at        time.Time
}

// maxRetainedJobs bounds how many ended job attempts Jobs/Subtasks report.
const maxRetainedJobs = 256

// New creates an executor. Call Close to stop it.
func New(cfg Config) (*Executor, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("runtime: Config.NodeID is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = 512
	}
	if cfg.Credits <= 0 {
		cfg.Credits = 4
	}
	ctx, stop := context.WithCancel(context.Background())
	e := &Executor{
		cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), ctx: ctx, stop: stop,
		buffers:        bufferPool{size: cfg.BufferSize},
		jobs:           map[string]*job{},
		sendChans:      map[chanKey]*outChannel{},
		recvChans:      map[chanKey]*inChannel{},
		pendingCredits: map[chanKey]pendingCredit{},
		peers:          map[string]*peer{},
		inbound:        map[net.Conn]struct{}{},
	}
	e.acks, _ = cfg.Reporter.(CheckpointReporter)
	e.events.wake = make(chan struct{}, 1)
	e.eventsStop = make(chan struct{})
	e.wg.Add(2)
	go e.deliverEvents()
	go e.tick()
	return e, nil
}

func (e *Executor) options() jobgraph.Options {
	return jobgraph.Options{InputDir: e.cfg.InputDir, OutputDir: e.cfg.OutputDir, AllowExec: e.cfg.AllowExec, ExecPaths: e.cfg.ExecPaths}
}

// job is one attempt of a job on this node.
type job struct {
	id       string
	attempt  int
	graph    *jobgraph.JobGraph
	ctx      context.Context
	cancel   context.CancelFunc
	subtasks []*subtask
	keys     []chanKey // remote channels registered for this attempt
	canceled atomic.Bool
	running  atomic.Int32
	ended    atomic.Bool
	done     chan struct{} // closed when every local subtask has ended
	deployed time.Time
	restore  *Restore
}

func (j *job) subtaskEnded(s *subtask) {
	if j.running.Add(-1) == 0 {
		s.e.jobEnded(j)
	}
}

// Deploy starts the subtasks of d placed on this node. It is idempotent per
// (JobID, Attempt); a newer attempt cancels the older one on this node.
// The graph is validated again against this node's directories and exec
// permissions.
func (e *Executor) Deploy(d Deployment) error {
	if d.Graph == nil {
		return errors.New("deploy: no job graph")
	}
	spec, err := json.Marshal(d.Graph)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	g, err := jobgraph.Parse(spec, e.options())
	if err != nil {
		return fmt.Errorf("deploy %s: %w", d.JobID, err)
	}
	if d.JobID == "" {
		return errors.New("deploy: no job id")
	}
	for _, v := range g.Vertices {
		if n := len(d.Placement[v.ID]); n != v.Parallelism {
			return fmt.Errorf("deploy %s: placement of vertex %q has %d subtasks, want %d", d.JobID, v.ID, n, v.Parallelism)
		}
	}
	if d.Restore != nil && e.cfg.Storage == nil {
		return fmt.Errorf("deploy %s: restore from %s: no checkpoint storage configured", d.JobID, d.Restore.Dir)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errors.New("deploy: executor is closed")
	}
	old := e.jobs[d.JobID]
	if old != nil {
		if old.attempt == d.Attempt {
			e.mu.Unlock()
			return nil
		}
		if old.attempt > d.Attempt {
			e.mu.Unlock()
			return fmt.Errorf("deploy %s: attempt %d is older than the deployed attempt %d", d.JobID, d.Attempt, old.attempt)
		}
		e.cancelLocked(old)
	}
	e.mu.Unlock()
	if d.Restore != nil {
		// The older attempt's sinks must be gone before their files are
		// committed or deleted.
		if old != nil {
			old.waitEnded(10 * time.Second)
		}
		if err := recoverSinks(g, e.cfg.OutputDir, d.Restore); err != nil {
			return fmt.Errorf("deploy %s: recovering sink output: %w", d.JobID, err)
		}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errors.New("deploy: executor is closed")
	}
	if cur := e.jobs[d.JobID]; cur != nil && cur != old {
		// A concurrent Deploy of this job won.
		e.mu.Unlock()
		if cur.attempt == d.Attempt {
			return nil
		}
		return fmt.Errorf("deploy %s: attempt %d was deployed concurrently with attempt %d", d.JobID, cur.attempt, d.Attempt)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	j := &job{id: d.JobID, attempt: d.Attempt, graph: g, ctx: ctx, cancel: cancel, deployed: time.Now(),
		done: make(chan struct{}), restore: d.Restore}
	e.wire(j, d.Placement)
	e.jobs[d.JobID] = j
	e.pruneLocked()
	e.mu.Unlock()

	j.running.Store(int32(len(j.subtasks)))
	if len(j.subtasks) == 0 {
		e.jobEnded(j)
	}
	for _, s := range j.subtasks {
		s.setState(StateScheduled, "")
		s.setState(StateDeploying, "")
	}
	e.subWG.Add(len(j.subtasks))
	for _, s := range j.subtasks {
		go s.run()
	}
	return nil
}

// wire creates the local subtasks of a job with their gates, outputs and
// channels (e.mu held).
func (e *Executor) wire(j *job, placement map[string][]string) {
	g := j.graph
	self := e.cfg.NodeID
	credits := e.cfg.Credits
	local := map[string][]*subtask{} // vertex -> subtask by index (nil if remote)
	for _, v := range g.Topological() {
		subs := make([]*subtask, v.Parallelism)
		for i, node := range placement[v.ID] {
			if node != self {
				continue
			}
			s := &subtask{e: e, job: j, vertex: v, index: i, state: StateCreated,
				timestamps: map[string]int64{StateCreated: time.Now().UnixMilli()}}
			s.ctx, s.cancel = context.WithCancelCause(j.ctx)
			s.opctx = &OpContext{Ctx: s.ctx, JobID: j.id, Attempt: j.attempt, Vertex: v, Subtask: i,
				Parallelism: v.Parallelism, MaxParallelism: g.MaxParallelism, Inputs: g.InEdges(v.ID),
				KeyGroups:     jobgraph.KeyGroupRangeForOperator(g.MaxParallelism, v.Parallelism, i),
				Checkpointing: g.Checkpointing != nil,
				InputDir:      e.cfg.InputDir, OutputDir: e.cfg.OutputDir,
				Logger: e.log.With("job", j.id, "vertex", v.ID, "subtask", i)}
			s.op, s.src, s.setupErr = newOperator(v.Operator, v.Params)
			if s.src == nil {
				s.gate = &inputGate{}
			}
			s.out = &Output{s: s, bufSize: e.cfg.BufferSize, countdown: checkEvery}
			s.cp.trigWake = make(chan struct{}, 1)
			if s.src != nil {
				s.out.trigger = &s.cp.pending
			}
			for _, oe := range g.OutEdges(v.ID) {
				down := g.Vertex(oe.To)
				edge := &outEdge{ship: oe.Ship, maxP: g.MaxParallelism, p: down.Parallelism}
				if oe.Ship == jobgraph.ShipHash {
					var err error
					if edge.key, err = newKeyFunc(oe.Key); err != nil && s.setupErr == nil {
						s.setupErr = err
					}
				}
				n := down.Parallelism
				if oe.Ship == jobgraph.ShipForward {
					n = 1
				}
				edge.chans = make([]*outChannel, n)
				s.out.edges = append(s.out.edges, edge)
			}
			subs[i] = s
			j.subtasks = append(j.subtasks, s)
		}
		local[v.ID] = subs
	}
	for _, ed := range g.Edges() {
		up, down := g.Vertex(ed.From), g.Vertex(ed.To)
		outIdx := 0
		for k, oe := range g.OutEdges(up.ID) {
			if oe.Index == ed.Index {
				outIdx = k
			}
		}
		for src := 0; src < up.Parallelism; src++ {
			for dst := 0; dst < down.Parallelism; dst++ {
				if ed.Ship == jobgraph.ShipForward && dst != src {
					continue
				}
				srcSub, dstSub := local[up.ID][src], local[down.ID][dst]
				if srcSub == nil && dstSub == nil {
					continue
				}
				key := chanKey{job: j.id, attempt: int32(j.attempt), edge: int32(ed.Index), src: int32(src), dst: int32(dst)}
				var oc *outChannel
				if srcSub != nil {
					oc = newOutChannel(key, srcSub)
					slot := dst
					if ed.Ship == jobgraph.ShipForward {
						slot = 0
					}
					srcSub.out.edges[outIdx].chans[slot] = oc
				}
				var ic *inChannel
				if dstSub != nil {
					ic = &inChannel{key: key, owner: dstSub, gate: dstSub.gate, input: ed.Input}
					dstSub.gate.channels = append(dstSub.gate.channels, ic)
				}
				switch {
				case oc != nil && ic != nil:
					oc.local, ic.local = ic, oc
					oc.addCredit(credits, credits)
				case oc != nil:
					oc.peer = placement[down.ID][dst]
					e.sendChans[key] = oc
					j.keys = append(j.keys, key)
					if pc, ok := e.pendingCredits[key]; ok {
						delete(e.pendingCredits, key)
						oc.addCredit(pc.n, pc.window)
					}
				default:
					ic.peer = placement[up.ID][src]
					e.recvChans[key] = ic
					j.keys = append(j.keys, key)
				}
			}
		}
	}
	for _, s := range j.subtasks {
		if s.gate != nil {
			s.gate.open = len(s.gate.channels)
			s.gate.q = make(chan *buffer, len(s.gate.channels)*credits)
		}
	}
}

// jobEnded unregisters the channels of an attempt whose local subtasks have
// all ended.
func (e *Executor) jobEnded(j *job) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !j.ended.Swap(true) {
		close(j.done)
	}
	for _, k := range j.keys {
		delete(e.sendChans, k)
		delete(e.recvChans, k)
	}
	j.keys = nil
	j.cancel()
}

func (e *Executor) pruneLocked() {
	if len(e.jobs) <= maxRetainedJobs {
		return
	}
	var ended []*job
	for _, j := range e.jobs {
		if j.ended.Load() {
			ended = append(ended, j)
		}
	}
	sort.Slice(ended, func(a, b int) bool { return ended[a].deployed.Before(ended[b].deployed) })
	for _, j := range ended[:max(0, min(len(ended), len(e.jobs)-maxRetainedJobs))] {
		delete(e.jobs, j.id)
	}
}

// Cancel stops all local subtasks of the job (any attempt). It returns at
// once; the subtasks pass CANCELING and end CANCELED shortly after.
func (e *Executor) Cancel(jobID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j := e.jobs[jobID]
	if j == nil {
		// Nothing deployed here: credits waiting for this job may belong to
		// an attempt this node is about to deploy.
		return
	}
	e.cancelLocked(j)
	// Only credits of this attempt or older die with it: a peer that
	// already runs the next attempt may have granted credits for it before
	// this node saw the cancel, and dropping them stalls those channels
	// for good (found by the rescale test).
	for k := range e.pendingCredits {
		if k.job == jobID && int(k.attempt) <= j.attempt {
			delete(e.pendingCredits, k)
		}
	}
}

func (e *Executor) cancelLocked(j *job) {
	if j.ended.Load() {
		return
	}
	j.canceled.Store(true)
	for _, s := range j.subtasks {
		s.setState(StateCanceling, "")
	}
	j.cancel()
}

// Jobs lists the job attempts known to this executor (running and recently
// ended).
func (e *Executor) Jobs() []JobInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]JobInfo, 0, len(e.jobs))
	for _, j := range e.jobs {
		out = append(out, JobInfo{JobID: j.id, Attempt: j.attempt, Subtasks: len(j.subtasks), Done: j.ended.Load()})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].JobID < out[b].JobID })
	return out
}

// Subtasks returns the status and metrics of the job's local subtasks, in
// topological vertex order and subtask index.
func (e *Executor) Subtasks(jobID string) []SubtaskStatus {
	e.mu.Lock()
	j := e.jobs[jobID]
	e.mu.Unlock()
	if j == nil {
		return nil
	}
	out := make([]SubtaskStatus, 0, len(j.subtasks))
	for _, s := range j.subtasks {
		out = append(out, s.status())
	}
	return out
}

// SampleBackPressure samples the local subtasks of a vertex `samples`
// times, `delay` apart, and returns per subtask index the fraction of
// samples that found it blocked waiting for an output buffer credit
// (Flink's sampled back-pressure ratio: OK <= 0.1 < LOW <= 0.5 < HIGH).
func (e *Executor) SampleBackPressure(ctx context.Context, jobID, vertexID string, samples int, delay time.Duration) (map[int]float64, error) {
	e.mu.Lock()
	j := e.jobs[jobID]
	e.mu.Unlock()
	if j == nil {
		return nil, fmt.Errorf("job %s is not on this node", jobID)
	}
	var subs []*subtask
	for _, s := range j.subtasks {
		if s.vertex.ID == vertexID {
			subs = append(subs, s)
		}
	}
	if len(subs) == 0 {
		return nil, fmt.Errorf("no local subtask of vertex %q", vertexID)
	}
	samples = max(samples, 1)
	hits := make([]int, len(subs))
	t := time.NewTicker(max(delay, time.Millisecond))
	defer t.Stop()
	for n := 0; n < samples; n++ {
		if n > 0 {
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		for i, s := range subs {
			if s.act.state.Load() == stateBackPressured && s.getState() == StateRunning {
				hits[i]++
			}
		}
	}
	out := make(map[int]float64, len(subs))
	for i, s := range subs {
		out[s.index] = float64(hits[i]) / float64(samples)
	}
	return out, nil
}

// Close cancels every job, closes all data connections and waits for the
// executor's goroutines to end.
func (e *Executor) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	for _, j := range e.jobs {
		e.cancelLocked(j)
	}
	for c := range e.inbound {
		c.Close()
	}
	peers := e.peers
	e.peers = map[string]*peer{}
	e.mu.Unlock()
	e.stop()
	for _, p := range peers {
		p.close(errors.New("executor closed"))
	}
	e.subWG.Wait()
	close(e.eventsStop)
	e.wg.Wait()
}

// tick samples per-second metrics and expires stray credits once a second.
func (e *Executor) tick() {
	defer e.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		now := nanotime()
		e.mu.Lock()
		var subs []*subtask
		for _, j := range e.jobs {
			if !j.ended.Load() {
				subs = append(subs, j.subtasks...)
			}
		}
		for k, pc := range e.pendingCredits {
			if time.Since(pc.at) > 2*time.Minute {
				delete(e.pendingCredits, k)
			}
		}
		e.mu.Unlock()
		for _, s := range subs {
			if s.getState() == StateRunning {
				s.samples.add(s.sample(now))
			}
		}
	}
}

// eventQueue delivers reports in order without blocking subtasks.
type eventQueue struct {
	mu   sync.Mutex
	q    []any // SubtaskEvent or CheckpointAck
	wake chan struct{}
}

func (e *Executor) report(ev SubtaskEvent) {
	if ev.State == StateFailed {
		e.log.Warn("subtask failed", "job", ev.JobID, "vertex", ev.VertexID, "subtask", ev.Subtask, "error", ev.Failure)
	}
	if e.cfg.Reporter == nil {
		return
	}
	e.enqueue(ev)
}

// reportAck queues a checkpoint acknowledgement, in order with the state
// transitions.
func (e *Executor) reportAck(a CheckpointAck) {
	if e.acks != nil {
		e.enqueue(a)
	}
}

func (e *Executor) enqueue(ev any) {
	e.events.mu.Lock()
	e.events.q = append(e.events.q, ev)
	e.events.mu.Unlock()
	select {
	case e.events.wake <- struct{}{}:
	default:
	}
}

func (e *Executor) deliver(q []any) {
	for _, ev := range q {
		switch ev := ev.(type) {
		case SubtaskEvent:
			e.cfg.Reporter.SubtaskStateChanged(ev)
		case CheckpointAck:
			e.acks.CheckpointAcked(ev)
		}
	}
}

func (e *Executor) deliverEvents() {
	defer e.wg.Done()
	for {
		e.events.mu.Lock()
		q := e.events.q
		e.events.q = nil
		e.events.mu.Unlock()
		e.deliver(q)
		if len(q) > 0 {
			continue
		}
		select {
		case <-e.events.wake:
		case <-e.eventsStop:
			e.events.mu.Lock()
			q = e.events.q
			e.events.q = nil
			e.events.mu.Unlock()
			e.deliver(q)
			return
		}
	}
}

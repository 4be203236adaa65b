// Package taskmanager is a node's worker side: it watches the replicated
// state for the subtasks placed on this node, deploys and cancels them on
// the local executor, and reports their transitions to the leader.
package taskmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
	"github.com/dispatcher-dev/dispatcher/runtime"
)

// EventsPath is the API route that records subtask transitions; like any
// write it is forwarded to the leader by whichever node receives it.
const EventsPath = "/v1/internal/subtask-events"

// Config wires a task manager.
type Config struct {
	NodeID string
	State  *fsm.FSM
	// APIURL is this node's own API; reports go through it so forwarding
	// to the leader happens in one place.
	APIURL string
	Token  string
	Logger *slog.Logger
	// OutputDir is where this node's file sinks write; committing their
	// pending output is the node's job.
	OutputDir string
}

// TaskManager deploys what the state places here.
type TaskManager struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client

	mu      sync.Mutex
	pending []fsm.SubtaskEvent
	acks    []runtime.CheckpointAck
	wake    chan struct{}

	exec     *runtime.Executor
	deployed map[string]int // job id -> attempt deployed here
	settled  map[string]int // job id -> attempt reported without deploying
	// notified is the newest checkpoint told to the local executor, per job.
	notified map[string]int64
	// committed remembers sink commits done, per job: "attempt/id".
	committed map[string]map[string]bool
}

// New returns a task manager; call Run to start it.
func New(cfg Config) *TaskManager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &TaskManager{cfg: cfg, log: cfg.Logger, client: &http.Client{Timeout: 10 * time.Second},
		wake: make(chan struct{}, 1), deployed: map[string]int{}, settled: map[string]int{}, notified: map[string]int64{}, committed: map[string]map[string]bool{}}
}

// SubtaskStateChanged implements runtime.Reporter: queue and wake the sender.
func (tm *TaskManager) SubtaskStateChanged(ev runtime.SubtaskEvent) {
	tm.mu.Lock()
	tm.pending = append(tm.pending, fsm.SubtaskEvent{JobID: ev.JobID, Attempt: ev.Attempt, VertexID: ev.VertexID, Subtask: ev.Subtask, State: ev.State, At: ev.At.UnixMilli(), Failure: ev.Failure})
	tm.mu.Unlock()
	select {
	case tm.wake <- struct{}{}:
	default:
	}
}

// CheckpointAcked implements runtime.CheckpointReporter: acks travel to the
// leader's coordinator like subtask events do.
func (tm *TaskManager) CheckpointAcked(a runtime.CheckpointAck) {
	tm.mu.Lock()
	tm.acks = append(tm.acks, a)
	tm.mu.Unlock()
	select {
	case tm.wake <- struct{}{}:
	default:
	}
}

// Run drives exec from the state and reports its events until ctx ends.
// The executor reports to tm, so it is built after tm and handed in here.
func (tm *TaskManager) Run(ctx context.Context, exec *runtime.Executor) {
	tm.exec = exec
	go tm.sendLoop(ctx)
	for {
		changed := tm.cfg.State.Changed()
		tm.sync()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// sync makes the executor match the state for this node.
func (tm *TaskManager) sync() {
	for _, j := range tm.cfg.State.Jobs() {
		if fsm.TerminalJobState(j.State) {
			delete(tm.settled, j.ID)
		}
		attempt, here := tm.deployed[j.ID]
		placedHere := false
		for _, n := range fsm.NodesOf(j.Placement) {
			placedHere = placedHere || n == tm.cfg.NodeID
		}
		switch {
		case j.State == fsm.JobRunning && placedHere && (!here || attempt != j.Attempt):
			if !here && tm.startedBefore(j) {
				// This process never deployed the attempt, yet its subtasks
				// here had started: the node restarted under them and their
				// state is gone. Report it; the restart strategy decides.
				tm.failAll(j, fmt.Errorf("node %s restarted while the attempt ran", tm.cfg.NodeID))
				tm.deployed[j.ID] = j.Attempt
				continue
			}
			if err := tm.deploy(j); err != nil {
				tm.log.Error("deploy failed", "job", j.ID, "attempt", j.Attempt, "err", err)
				tm.failAll(j, err)
			}
			tm.deployed[j.ID] = j.Attempt
		case !here && placedHere && (j.State == fsm.JobCancelling || j.State == fsm.JobFailing) && tm.settled[j.ID] != j.Attempt:
			// The attempt stopped before this node deployed it: its
			// subtasks here never ran, so they end CANCELED right away.
			tm.settled[j.ID] = j.Attempt
			tm.reportNeverStarted(j)
		case here && (j.State != fsm.JobRunning || !placedHere):
			// Failing, restarting, cancelling or over: stop what runs here.
			// A FINISHED job's subtasks have ended already; Cancel is a no-op.
			tm.exec.Cancel(j.ID)
			delete(tm.deployed, j.ID)
		}
		tm.checkpointDuties(j)
	}
}

// checkpointDuties tells the executor about completed checkpoints and
// commits this node's sink output that completed checkpoints (or a
// finished job) cover, even for attempts that no longer run here: the
// notification may have been missed while this node was away.
func (tm *TaskManager) checkpointDuties(j *fsm.Job) {
	var done []fsm.Checkpoint
	done = append(done, j.Checkpoints.Retained...)
	if sp := j.Checkpoints.LatestSavepoint; sp != nil {
		done = append(done, *sp)
	}
	if tm.deployed[j.ID] == j.Attempt && j.State == fsm.JobRunning {
		for _, cp := range done {
			if cp.Attempt == j.Attempt && cp.ID > tm.notified[j.ID] {
				tm.notified[j.ID] = cp.ID
				tm.exec.CheckpointComplete(j.ID, j.Attempt, cp.ID)
			}
		}
	}
	if tm.cfg.OutputDir == "" || len(done) == 0 && j.State != fsm.JobFinished {
		return
	}
	var g *jobgraph.JobGraph
	commit := func(attempt int, upTo int64) {
		key := fmt.Sprintf("%d/%d", attempt, upTo)
		if tm.committed[j.ID][key] {
			return
		}
		if g == nil {
			g = &jobgraph.JobGraph{}
			if err := json.Unmarshal(j.Spec, g); err != nil {
				return
			}
		}
		if err := runtime.CommitSinks(g, tm.cfg.OutputDir, attempt, upTo); err != nil {
			tm.log.Warn("cannot commit sink output", "job", j.ID, "attempt", attempt, "upTo", upTo, "err", err)
			return
		}
		if tm.committed[j.ID] == nil {
			tm.committed[j.ID] = map[string]bool{}
		}
		tm.committed[j.ID][key] = true
	}
	for _, cp := range done {
		commit(cp.Attempt, cp.ID)
	}
	if j.State == fsm.JobFinished {
		commit(j.Attempt, runtime.FinalCheckpointID)
	}
}

func (tm *TaskManager) reportNeverStarted(j *fsm.Job) {
	now := time.Now()
	for _, st := range j.Subtasks {
		if st.Node == tm.cfg.NodeID && !fsm.TerminalTaskState(st.State) {
			tm.SubtaskStateChanged(runtime.SubtaskEvent{JobID: j.ID, Attempt: j.Attempt, VertexID: st.VertexID, Subtask: st.Index, State: fsm.TaskCanceled, At: now})
		}
	}
}

// startedBefore tells whether any subtask placed here got past SCHEDULED.
func (tm *TaskManager) startedBefore(j *fsm.Job) bool {
	for _, st := range j.Subtasks {
		if st.Node == tm.cfg.NodeID && st.State != fsm.TaskScheduled && st.State != fsm.TaskCreated {
			return true
		}
	}
	return false
}

func (tm *TaskManager) deploy(j *fsm.Job) error {
	var g jobgraph.JobGraph
	if err := json.Unmarshal(j.Spec, &g); err != nil {
		return fmt.Errorf("stored spec: %w", err)
	}
	d := runtime.Deployment{JobID: j.ID, Attempt: j.Attempt, Graph: &g, Placement: j.Placement}
	if r := j.Restore; r != nil {
		d.Restore = &runtime.Restore{CheckpointID: r.CheckpointID, Dir: r.Dir, Attempt: r.Attempt, AllowNonRestoredState: r.AllowNonRestoredState}
	}
	return tm.exec.Deploy(d)
}

// failAll reports every subtask placed here as failed, so the leader's
// restart strategy sees a deployment this node could not make.
func (tm *TaskManager) failAll(j *fsm.Job, err error) {
	now := time.Now()
	for v, nodes := range j.Placement {
		for i, n := range nodes {
			if n == tm.cfg.NodeID {
				tm.SubtaskStateChanged(runtime.SubtaskEvent{JobID: j.ID, Attempt: j.Attempt, VertexID: v, Subtask: i, State: fsm.TaskFailed, At: now, Failure: "deployment failed: " + err.Error()})
			}
		}
	}
}

// sendLoop ships queued events in order, in batches, retrying a batch until
// the leader has recorded it.
func (tm *TaskManager) sendLoop(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-tm.wake:
		case <-time.After(time.Second):
		}
		// Let a burst of transitions gather into one Raft entry.
		time.Sleep(10 * time.Millisecond)
		tm.sendAcks(ctx)
		for {
			tm.mu.Lock()
			batch := tm.pending
			if len(batch) > 512 {
				batch = batch[:512]
			}
			tm.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			if err := tm.send(ctx, batch); err != nil {
				if ctx.Err() != nil {
					return
				}
				tm.log.Warn("subtask events not recorded yet; retrying", "events", len(batch), "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				continue
			}
			tm.mu.Lock()
			tm.pending = tm.pending[len(batch):]
			tm.mu.Unlock()
		}
	}
}

// AcksPath takes checkpoint acknowledgements to the leader's coordinator.
const AcksPath = "/v1/internal/checkpoint-acks"

// sendAcks ships checkpoint acks; a lost batch only makes a checkpoint time
// out, so they are tried a few times, not forever.
func (tm *TaskManager) sendAcks(ctx context.Context) {
	tm.mu.Lock()
	acks := tm.acks
	tm.acks = nil
	tm.mu.Unlock()
	if len(acks) == 0 {
		return
	}
	for try := 0; try < 3; try++ {
		if err := tm.post(ctx, AcksPath, acks); err == nil || ctx.Err() != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (tm *TaskManager) send(ctx context.Context, events []fsm.SubtaskEvent) error {
	return tm.post(ctx, EventsPath, fsm.SubtaskEvents{Node: tm.cfg.NodeID, Events: events})
}

func (tm *TaskManager) post(ctx context.Context, path string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tm.cfg.APIURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if tm.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+tm.cfg.Token)
	}
	resp, err := tm.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("leader answered %s", resp.Status)
	}
	return nil
}

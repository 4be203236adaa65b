// Package fsm is the replicated state machine: typed commands applied in log
// order, snapshots of the whole state, and read-only queries over it.
package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"
)

// Result is what Apply returns to the proposer through raft's future.
type Result struct {
	Err   error
	Value any
}

// Conflict errors are client mistakes the API maps to 409.
type Conflict struct{ Msg string }

func (c *Conflict) Error() string { return c.Msg }

// NotFound errors map to 404.
type NotFound struct{ Msg string }

func (n *NotFound) Error() string { return n.Msg }

// FSM implements raft.FSM.
type FSM struct {
	log *slog.Logger

	mu           sync.RWMutex
	st           *state
	appliedIndex uint64
	changed      chan struct{}
}

// New returns an empty state machine.
func New(log *slog.Logger) *FSM {
	return &FSM{log: log, st: newState(), changed: make(chan struct{})}
}

// Apply is called by raft, in log order, on every node.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := Decode(l.Data)
	if err != nil {
		if errors.Is(err, ErrUnknownCommand) && len(l.Data) > 0 && CommandType(l.Data[0])&IgnoreUnknownFlag != 0 {
			f.log.Warn("skipping unknown command marked ignorable", "type", l.Data[0], "index", l.Index)
			f.advance(l.Index)
			return nil
		}
		// A command this build cannot read would make this replica diverge
		// from the others; stopping is the only safe answer (Nomad does the
		// same). Upgrade the binary to go on.
		f.log.Error("cannot apply replicated command: this node is older than the cluster", "index", l.Index, "err", err)
		panic(fmt.Sprintf("fsm: cannot apply log entry %d: %v", l.Index, err))
	}
	f.mu.Lock()
	res := f.apply(l.Index, cmd)
	f.appliedIndex = l.Index
	ch := f.changed
	f.changed = make(chan struct{})
	f.mu.Unlock()
	close(ch)
	return res
}

func (f *FSM) advance(index uint64) {
	f.mu.Lock()
	f.appliedIndex = index
	ch := f.changed
	f.changed = make(chan struct{})
	f.mu.Unlock()
	close(ch)
}

// apply is the one switch over command types; each case is a small function
// named after its command.
func (f *FSM) apply(index uint64, cmd Command) Result {
	switch c := cmd.(type) {
	case *Noop:
		return Result{}
	case *JobSubmit:
		return f.applyJobSubmit(index, c)
	case *JobCancel:
		return f.applyJobCancel(index, c)
	case *JobSchedule:
		return f.applyJobSchedule(index, c)
	case *SubtaskEvents:
		return f.applySubtaskEvents(index, c)
	case *JobTransition:
		return f.applyJobTransition(index, c)
	case *BundleAdd:
		return f.applyBundleAdd(c)
	case *BundleDelete:
		return f.applyBundleDelete(c)
	case *CheckpointStarted:
		return f.applyCheckpointStarted(index, c)
	case *CheckpointCompleted:
		return f.applyCheckpointCompleted(index, c)
	case *CheckpointFailed:
		return f.applyCheckpointFailed(index, c)
	case *TriggerCreated:
		return f.applyTriggerCreated(c)
	case *TriggerDone:
		return f.applyTriggerDone(c)
	case *JobRescale:
		return f.applyJobRescale(index, c)
	default:
		panic(fmt.Sprintf("fsm: command type %T decoded but not applied", cmd))
	}
}

func (f *FSM) applyJobSubmit(index uint64, c *JobSubmit) Result {
	if j, ok := f.st.Jobs[c.JobID]; ok {
		if string(j.Spec) != string(c.Spec) {
			return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s already exists with a different spec", c.JobID)}}
		}
		return Result{Value: j.clone()}
	}
	j := &Job{ID: c.JobID, Name: c.Name, Spec: c.Spec, Timestamps: map[string]int64{}, StartTime: c.At, EndTime: -1, InitialRestore: c.Restore}
	j.setState(JobInitializing, c.At, index)
	j.setState(JobCreated, c.At, index)
	f.st.Jobs[c.JobID] = j
	return Result{Value: j.clone()}
}

func (f *FSM) applyJobCancel(index uint64, c *JobCancel) Result {
	j, ok := f.st.Jobs[c.JobID]
	if !ok {
		return Result{Err: &NotFound{Msg: fmt.Sprintf("Job %s not found", c.JobID)}}
	}
	if TerminalJobState(j.State) {
		return Result{Err: &Conflict{Msg: fmt.Sprintf("Job %s is already %s", c.JobID, j.State)}}
	}
	switch j.State {
	case JobCreated, JobInitializing, JobRestarting:
		// Nothing runs, so there is nothing to wait for.
		j.setState(JobCanceled, c.At, index)
	default:
		// Nodes cancel their subtasks when they see this; the job is
		// CANCELED once every subtask has ended.
		j.setState(JobCancelling, c.At, index)
		j.settle(index)
	}
	return Result{Value: j.clone()}
}

// AppliedIndex is the index of the last entry applied here.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.appliedIndex
}

// Changed returns a channel closed by the next apply: watchers select on it
// and re-read the state.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// Jobs returns copies of every job, newest first.
func (f *FSM) Jobs() []*Job {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.sortedJobs()
}

// JobCounts counts jobs by state without copying them.
func (f *FSM) JobCounts() map[string]int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := map[string]int{}
	for _, j := range f.st.Jobs {
		out[j.State]++
	}
	return out
}

// SlotsUsed counts, per node, the slots held by jobs, without copying them.
func (f *FSM) SlotsUsed() map[string]int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	used := map[string]int{}
	for _, j := range f.st.Jobs {
		if !HoldsSlots(j.State) {
			continue
		}
		for _, n := range SlotNodes(j.Placement) {
			used[n]++
		}
	}
	return used
}

// Job returns a copy of one job.
func (f *FSM) Job(id string) (*Job, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	j, ok := f.st.Jobs[id]
	if !ok {
		return nil, false
	}
	return j.clone(), true
}

// Snapshot captures the state under the read lock; Persist runs later,
// concurrently with further applies, on its own copy.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	data, err := json.Marshal(struct {
		Version int    `json:"version"`
		Index   uint64 `json:"index"`
		State   *state `json:"state"`
	}{snapshotVersion, f.appliedIndex, f.st})
	f.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	return &snapshot{data: data}, nil
}

const snapshotVersion = 1

// Restore replaces the whole state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var snap struct {
		Version int    `json:"version"`
		Index   uint64 `json:"index"`
		State   *state `json:"state"`
	}
	if err := json.NewDecoder(rc).Decode(&snap); err != nil {
		return fmt.Errorf("fsm: decode snapshot: %w", err)
	}
	if snap.Version != snapshotVersion {
		return fmt.Errorf("fsm: snapshot version %d is not supported by this build", snap.Version)
	}
	if snap.State == nil {
		snap.State = newState()
	}
	if snap.State.Jobs == nil {
		snap.State.Jobs = map[string]*Job{}
	}
	if snap.State.Bundles == nil {
		snap.State.Bundles = map[string]*Bundle{}
	}
	if snap.State.Triggers == nil {
		snap.State.Triggers = map[string]*Trigger{}
	}
	f.mu.Lock()
	f.st = snap.State
	f.appliedIndex = snap.Index
	ch := f.changed
	f.changed = make(chan struct{})
	f.mu.Unlock()
	close(ch)
	return nil
}

type snapshot struct{ data []byte }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

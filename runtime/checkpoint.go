package runtime

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// Checkpoint is one checkpoint or savepoint as triggered by the coordinator.
type Checkpoint struct {
	ID int64
	// Dir is the directory (relative to the storage root) for this
	// checkpoint's subtask snapshots, e.g. "<jobid>/chk-7" or a savepoint dir.
	Dir       string
	Savepoint bool
	// Mode is "EXACTLY_ONCE" (aligned barriers, the default) or
	// "AT_LEAST_ONCE" (no alignment).
	Mode string
	// Stop: stop-with-savepoint. Sources emit the barrier and then end; the
	// job then FINISHES.
	Stop bool
	// Drain (with Stop): sources end their input normally after the barrier
	// so that operators flush (windows fire); that output is kept as final.
	Drain bool
}

func (cp *Checkpoint) aligned() bool { return cp.Mode != jobgraph.AtLeastOnce }

// Restore makes a deployment start from a completed checkpoint or savepoint.
type Restore struct {
	CheckpointID int64
	Dir          string
	// Attempt is the attempt that took the checkpoint.
	Attempt int
	// AllowNonRestoredState permits state of vertices the new graph lacks.
	AllowNonRestoredState bool
}

// CheckpointReporter is implemented by a Config.Reporter that wants
// checkpoint acknowledgements.
type CheckpointReporter interface {
	CheckpointAcked(CheckpointAck)
}

// CheckpointAck is one subtask's snapshot of a checkpoint, or its decline.
type CheckpointAck struct {
	JobID        string
	Attempt      int
	CheckpointID int64
	VertexID     string
	Subtask      int
	// StateFile is the snapshot's name relative to the storage root.
	StateFile string
	StateSize int64
	// Flink's timing breakdown: barrier alignment, synchronous part
	// (serialising state, pre-committing sink files), asynchronous part
	// (writing to storage).
	AlignmentMs, SyncMs, AsyncMs int64
	// Declined is non-empty when this subtask could not snapshot: the reason.
	Declined string
}

// FinalCheckpointID marks output a sink wrote after its input ended: it is
// committed (CommitSinks with upTo = FinalCheckpointID) once the job is
// FINISHED in the replicated state.
const FinalCheckpointID = math.MaxInt64

// errStopSource ends a source's Run after a stop-with-savepoint barrier.
var errStopSource = errors.New("stopped with savepoint")

// stateful is implemented by operators and sources with state beyond their
// keyed state (source positions, sink pending files, window clocks).
type stateful interface {
	// snapshotState returns the operator state at a barrier (synchronous
	// part; the bytes must not be modified afterwards).
	snapshotState(cp *Checkpoint) ([]byte, error)
	// restoreState receives the operator state of the old subtasks read
	// (those whose key-group range overlaps this subtask's, or all of them
	// for unionRestore operators).
	restoreState(old []oldSubtask) error
}

// keyedOperator exposes keyed state (aggregations, windows).
type keyedOperator interface{ State() KeyedState }

// unionRestore is implemented by operators whose state is not partitioned
// by key group (file-source splits per file): they get every old subtask.
type unionRestore interface{ unionRestore() bool }

// notCheckpointable is implemented by operators that cannot snapshot (exec:
// records may be inside its process); they decline every checkpoint.
type notCheckpointable interface{ checkpointUnsupported() string }

// oldSubtask is one snapshot file read at restore.
type oldSubtask struct {
	Subtask, Parallelism int
	OpState              []byte
}

// statefulOperators are the operators whose state must be restored: a
// snapshot holding one of them that the new graph lacks needs
// AllowNonRestoredState.
var statefulOperators = map[string]bool{
	"sequence": true, "datagen": true, "file-source": true, "count": true, "sum": true,
	"min": true, "max": true, "window": true, "file-sink": true,
}

// checkpointState is a subtask's checkpoint bookkeeping.
type checkpointState struct {
	// Sources: triggers queued by TriggerCheckpoint, taken by the subtask.
	trigMu   sync.Mutex
	trigQ    []*Checkpoint
	srcDone  bool
	pending  atomic.Bool
	trigWake chan struct{}

	// Other subtasks (owned by the subtask goroutine): the checkpoint
	// being aligned, buffers of blocked channels and buffers to process
	// before reading the gate again.
	last     int64
	cur      *Checkpoint
	curStart time.Time
	stash    []*buffer
	ready    []*buffer
	stopped  bool // an input ended with stop-with-savepoint (no Finish)

	writes sync.WaitGroup
}

// TriggerCheckpoint injects the barrier at this node's source subtasks of
// (jobID, attempt). It fails if the attempt is not deployed here, a local
// source has already finished, or a local source cannot take snapshots
// (exec); the coordinator then declines the checkpoint.
func (e *Executor) TriggerCheckpoint(jobID string, attempt int, cp Checkpoint) error {
	if e.cfg.Storage == nil {
		return errors.New("trigger checkpoint: no checkpoint storage configured")
	}
	if cp.Mode == "" {
		cp.Mode = jobgraph.ExactlyOnce
	}
	if cp.Mode != jobgraph.ExactlyOnce && cp.Mode != jobgraph.AtLeastOnce {
		return fmt.Errorf("trigger checkpoint: unknown mode %q", cp.Mode)
	}
	e.mu.Lock()
	j := e.jobs[jobID]
	e.mu.Unlock()
	if j == nil || j.attempt != attempt || j.ended.Load() || j.canceled.Load() {
		return fmt.Errorf("trigger checkpoint %d: attempt %d of job %s is not running here", cp.ID, attempt, jobID)
	}
	var srcs []*subtask
	for _, s := range j.subtasks {
		if len(s.opctx.Inputs) > 0 {
			continue
		}
		if s.src == nil {
			return fmt.Errorf("trigger checkpoint %d: source %s cannot take snapshots", cp.ID, s)
		}
		srcs = append(srcs, s)
	}
	for _, s := range srcs {
		s.cp.trigMu.Lock()
		done := s.cp.srcDone
		s.cp.trigMu.Unlock()
		if done || terminal(s.getState()) {
			return fmt.Errorf("trigger checkpoint %d: source %s has finished", cp.ID, s)
		}
	}
	for _, s := range srcs {
		c := cp
		s.cp.trigMu.Lock()
		if s.cp.srcDone {
			s.cp.trigMu.Unlock()
			return fmt.Errorf("trigger checkpoint %d: source %s has finished", cp.ID, s)
		}
		s.cp.trigQ = append(s.cp.trigQ, &c)
		s.cp.pending.Store(true)
		s.cp.trigMu.Unlock()
		select {
		case s.cp.trigWake <- struct{}{}:
		default:
		}
	}
	return nil
}

// CheckpointComplete tells the local sinks of (jobID, attempt) that
// checkpoint id is durable cluster-wide: they commit their pending output
// of that attempt up to id.
func (e *Executor) CheckpointComplete(jobID string, attempt int, id int64) {
	e.mu.Lock()
	j := e.jobs[jobID]
	e.mu.Unlock()
	if j == nil || j.attempt != attempt {
		return
	}
	if err := CommitSinks(j.graph, e.cfg.OutputDir, attempt, id); err != nil {
		e.log.Warn("committing sink output failed", "job", jobID, "attempt", attempt, "checkpoint", id, "error", err)
	}
}

// sourceCheckpoint takes the queued checkpoints of a source subtask (called
// between records from Emit or while rate limited). After a Stop barrier it
// returns errStopSource.
func (s *subtask) sourceCheckpoint() error {
	s.cp.trigMu.Lock()
	q := s.cp.trigQ
	s.cp.trigQ = nil
	s.cp.pending.Store(false)
	s.cp.trigMu.Unlock()
	for i, cp := range q {
		if cp.ID <= s.cp.last {
			s.ack(cp, CheckpointAck{Declined: fmt.Sprintf("checkpoint %d is older than checkpoint %d", cp.ID, s.cp.last)})
			continue
		}
		s.cp.last = cp.ID
		s.snapshot(cp, 0)
		if err := s.out.broadcastBarrier(cp); err != nil {
			return err
		}
		if cp.Stop {
			for _, later := range q[i+1:] {
				s.ack(later, CheckpointAck{Declined: "the source stopped with savepoint " + fmt.Sprint(cp.ID)})
			}
			s.cp.stopped = !cp.Drain
			return errStopSource
		}
	}
	return nil
}

// sourceDone declines checkpoints still queued when a source ends.
func (s *subtask) sourceDone() {
	s.cp.trigMu.Lock()
	s.cp.srcDone = true
	q := s.cp.trigQ
	s.cp.trigQ = nil
	s.cp.trigMu.Unlock()
	for _, cp := range q {
		s.ack(cp, CheckpointAck{Declined: "the source has finished"})
	}
}

// onBarrier handles a barrier from channel ic (subtask goroutine).
func (s *subtask) onBarrier(ic *inChannel, cp *Checkpoint) error {
	ic.barrier = max(ic.barrier, cp.ID)
	if cp.ID <= s.cp.last || (s.cp.cur != nil && cp.ID < s.cp.cur.ID) {
		return nil // an older checkpoint: ignored
	}
	if s.cp.cur != nil && cp.ID > s.cp.cur.ID {
		s.abortAlignment(fmt.Sprintf("checkpoint %d was superseded by checkpoint %d before its barriers aligned", s.cp.cur.ID, cp.ID))
	}
	if s.cp.cur == nil {
		s.cp.cur, s.cp.curStart = cp, time.Now()
	}
	if cp.aligned() {
		ic.blocked = true
	}
	return s.checkAligned()
}

func (s *subtask) unblockAll() {
	for _, ic := range s.gate.channels {
		ic.blocked = false
	}
	if len(s.cp.stash) > 0 {
		s.cp.ready = append(s.cp.stash, s.cp.ready...)
		s.cp.stash = nil
	}
}

func (s *subtask) abortAlignment(reason string) {
	cp := s.cp.cur
	s.cp.cur = nil
	s.cp.last = cp.ID
	s.unblockAll()
	s.ack(cp, CheckpointAck{Declined: reason})
}

// checkAligned completes the current checkpoint once every input channel
// has delivered its barrier or ended: forward the barrier, snapshot, and
// let the blocked channels' buffers through.
func (s *subtask) checkAligned() error {
	cp := s.cp.cur
	if cp == nil {
		return nil
	}
	for _, ic := range s.gate.channels {
		if !ic.ended && ic.barrier < cp.ID {
			return nil
		}
	}
	s.cp.cur = nil
	s.cp.last = cp.ID
	align := time.Since(s.cp.curStart)
	s.unblockAll()
	if err := s.out.broadcastBarrier(cp); err != nil {
		return err
	}
	s.snapshot(cp, align)
	return nil
}

func (s *subtask) operator() any {
	if s.src != nil {
		return s.src
	}
	return s.op
}

func (s *subtask) stateName(cp *Checkpoint) string {
	return path.Join(cp.Dir, fmt.Sprintf("%s-%d.state", s.vertex.ID, s.index))
}

// snapshot takes the subtask's snapshot for cp: the synchronous part here,
// the write to storage and the acknowledgement on another goroutine.
func (s *subtask) snapshot(cp *Checkpoint, align time.Duration) {
	ack := CheckpointAck{AlignmentMs: align.Milliseconds()}
	op := s.operator()
	if nc, ok := op.(notCheckpointable); ok {
		ack.Declined = nc.checkpointUnsupported()
		s.ack(cp, ack)
		return
	}
	if s.e.cfg.Storage == nil {
		ack.Declined = "no checkpoint storage configured"
		s.ack(cp, ack)
		return
	}
	t0 := time.Now()
	data, err := s.encodeSnapshot(cp, op)
	ack.SyncMs = time.Since(t0).Milliseconds()
	if err != nil {
		ack.Declined = "snapshot: " + err.Error()
		s.ack(cp, ack)
		return
	}
	name := s.stateName(cp)
	s.cp.writes.Add(1)
	go func() {
		defer s.cp.writes.Done()
		t1 := time.Now()
		if err := s.e.cfg.Storage.Write(s.job.ctx, name, data); err != nil {
			ack.Declined = "writing " + name + ": " + err.Error()
		} else {
			ack.StateFile, ack.StateSize = name, int64(len(data))
		}
		ack.AsyncMs = time.Since(t1).Milliseconds()
		s.ack(cp, ack)
	}()
}

func (s *subtask) ack(cp *Checkpoint, a CheckpointAck) {
	a.JobID, a.Attempt, a.CheckpointID, a.VertexID, a.Subtask = s.job.id, s.job.attempt, cp.ID, s.vertex.ID, s.index
	if a.Declined != "" {
		s.e.log.Info("checkpoint declined", "job", a.JobID, "checkpoint", a.CheckpointID, "vertex", a.VertexID, "subtask", a.Subtask, "reason", a.Declined)
	}
	s.e.reportAck(a)
}

// Snapshot file: "DSPXSNAP", uvarint version, uvarint length + header JSON,
// uvarint length + operator state, uvarint key-group count and per key
// group uvarint kg, uvarint length, bytes; then CRC-32C (big endian) of
// everything before it.
const (
	snapshotMagic   = "DSPXSNAP"
	snapshotVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type snapshotHeader struct {
	JobID          string                 `json:"jobId"`
	Attempt        int                    `json:"attempt"`
	CheckpointID   int64                  `json:"checkpointId"`
	Savepoint      bool                   `json:"savepoint,omitempty"`
	Vertex         string                 `json:"vertex"`
	Operator       string                 `json:"operator"`
	Subtask        int                    `json:"subtask"`
	Parallelism    int                    `json:"parallelism"`
	MaxParallelism int                    `json:"maxParallelism"`
	KeyGroups      jobgraph.KeyGroupRange `json:"keyGroups"`
	// Vertices of the whole job, to detect state the new graph lacks.
	Vertices []snapshotVertex `json:"vertices"`
}

type snapshotVertex struct {
	ID          string `json:"id"`
	Operator    string `json:"operator"`
	Parallelism int    `json:"parallelism"`
}

func (s *subtask) encodeSnapshot(cp *Checkpoint, op any) ([]byte, error) {
	g := s.job.graph
	h := snapshotHeader{JobID: s.job.id, Attempt: s.job.attempt, CheckpointID: cp.ID, Savepoint: cp.Savepoint,
		Vertex: s.vertex.ID, Operator: s.vertex.Operator, Subtask: s.index, Parallelism: s.vertex.Parallelism,
		MaxParallelism: g.MaxParallelism, KeyGroups: s.opctx.KeyGroups}
	for _, v := range g.Topological() {
		h.Vertices = append(h.Vertices, snapshotVertex{ID: v.ID, Operator: v.Operator, Parallelism: v.Parallelism})
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	var opState []byte
	if st, ok := op.(stateful); ok {
		if opState, err = st.snapshotState(cp); err != nil {
			return nil, err
		}
	}
	type group struct {
		kg   int
		data []byte
	}
	var groups []group
	total := len(snapshotMagic) + 1 + 3*binary.MaxVarintLen64 + len(hj) + len(opState) + 4
	if ko, ok := op.(keyedOperator); ok {
		ks := ko.State()
		kgs := ks.KeyGroups()
		for kg := kgs.Start; kg <= kgs.End; kg++ {
			data, err := ks.SnapshotKeyGroup(kg)
			if err != nil {
				return nil, err
			}
			if len(data) > 1 || (len(data) == 1 && data[0] != 0) { // skip empty key groups
				groups = append(groups, group{kg, data})
				total += 2*binary.MaxVarintLen64 + len(data)
			}
		}
	}
	b := make([]byte, 0, total)
	b = append(b, snapshotMagic...)
	b = append(b, snapshotVersion)
	b = binary.AppendUvarint(b, uint64(len(hj)))
	b = append(b, hj...)
	b = binary.AppendUvarint(b, uint64(len(opState)))
	b = append(b, opState...)
	b = binary.AppendUvarint(b, uint64(len(groups)))
	for _, gr := range groups {
		b = binary.AppendUvarint(b, uint64(gr.kg))
		b = binary.AppendUvarint(b, uint64(len(gr.data)))
		b = append(b, gr.data...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

type decodedSnapshot struct {
	header  snapshotHeader
	opState []byte
	groups  map[int][]byte
}

func decodeSnapshot(data []byte) (*decodedSnapshot, error) {
	if len(data) < len(snapshotMagic)+5 || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return nil, errors.New("not a snapshot file")
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(data[len(data)-4:]) {
		return nil, errors.New("snapshot checksum mismatch")
	}
	b := body[len(snapshotMagic):]
	if b[0] != snapshotVersion {
		return nil, fmt.Errorf("unsupported snapshot version %d", b[0])
	}
	b = b[1:]
	next := func() ([]byte, error) {
		n, m := binary.Uvarint(b)
		if m <= 0 || uint64(len(b)-m) < n {
			return nil, errCorrupt
		}
		out := b[m : m+int(n)]
		b = b[m+int(n):]
		return out, nil
	}
	d := &decodedSnapshot{groups: map[int][]byte{}}
	hj, err := next()
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(hj, &d.header); err != nil {
		return nil, fmt.Errorf("snapshot header: %w", err)
	}
	if d.opState, err = next(); err != nil {
		return nil, err
	}
	n, m := binary.Uvarint(b)
	if m <= 0 {
		return nil, errCorrupt
	}
	b = b[m:]
	for range n {
		kg, m := binary.Uvarint(b)
		if m <= 0 {
			return nil, errCorrupt
		}
		b = b[m:]
		data, err := next()
		if err != nil {
			return nil, err
		}
		d.groups[int(kg)] = data
	}
	if len(b) != 0 {
		return nil, errCorrupt
	}
	return d, nil
}

// restore loads this subtask's state from the snapshot files of its vertex
// in r.Dir, keeping the key groups (and source splits) of its own range.
func (s *subtask) restore(r *Restore) error {
	st := s.e.cfg.Storage
	if st == nil {
		return errors.New("restore: no checkpoint storage configured")
	}
	ctx := s.ctx
	read := func(i int) (*decodedSnapshot, error) {
		name := path.Join(r.Dir, fmt.Sprintf("%s-%d.state", s.vertex.ID, i))
		data, err := st.Read(ctx, name)
		if err != nil {
			return nil, err
		}
		d, err := decodeSnapshot(data)
		if err != nil {
			return nil, fmt.Errorf("restore %s: %w", name, err)
		}
		return d, nil
	}
	first, err := read(0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a vertex new in this graph: it starts empty
	}
	if err != nil {
		return fmt.Errorf("restore from %s: %w", r.Dir, err)
	}
	h := first.header
	g := s.job.graph
	if h.MaxParallelism != g.MaxParallelism {
		return fmt.Errorf("restore from %s: maxParallelism %d of the snapshot differs from the job's %d (it cannot change)", r.Dir, h.MaxParallelism, g.MaxParallelism)
	}
	if h.Operator != s.vertex.Operator {
		return fmt.Errorf("restore from %s: vertex %q was a %s, is a %s now", r.Dir, s.vertex.ID, h.Operator, s.vertex.Operator)
	}
	if !r.AllowNonRestoredState {
		for _, v := range h.Vertices {
			if g.Vertex(v.ID) == nil && statefulOperators[v.Operator] {
				return fmt.Errorf("restore from %s: the snapshot has state of vertex %q (%s) that the job no longer has (allowNonRestoredState permits that)", r.Dir, v.ID, v.Operator)
			}
		}
	}
	op := s.operator()
	union := false
	if u, ok := op.(unionRestore); ok {
		union = u.unionRestore()
	}
	mine := s.opctx.KeyGroups
	ks, _ := op.(keyedOperator)
	var old []oldSubtask
	for i := 0; i < h.Parallelism; i++ {
		kgs := jobgraph.KeyGroupRangeForOperator(h.MaxParallelism, h.Parallelism, i)
		if !union && (kgs.End < mine.Start || kgs.Start > mine.End) {
			continue
		}
		d := first
		if i > 0 {
			if d, err = read(i); err != nil {
				return fmt.Errorf("restore from %s: %w", r.Dir, err)
			}
		}
		if d.header.Parallelism != h.Parallelism || d.header.Subtask != i {
			return fmt.Errorf("restore from %s: snapshot of %s[%d] is inconsistent", r.Dir, s.vertex.ID, i)
		}
		if ks != nil {
			state := ks.State()
			for kg, data := range d.groups {
				if mine.Contains(kg) {
					if err := state.RestoreKeyGroup(kg, data); err != nil {
						return fmt.Errorf("restore key group %d: %w", kg, err)
					}
				}
			}
		}
		old = append(old, oldSubtask{Subtask: i, Parallelism: h.Parallelism, OpState: d.opState})
	}
	if sf, ok := op.(stateful); ok {
		if err := sf.restoreState(old); err != nil {
			return fmt.Errorf("restore from %s: %w", r.Dir, err)
		}
	}
	return nil
}

// waitEnded waits (bounded) for a cancelled attempt's local subtasks.
func (j *job) waitEnded(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-j.done:
	case <-t.C:
	}
}

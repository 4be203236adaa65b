package runtime

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// Subtask states, Flink's names.
const (
	StateCreated      = "CREATED"
	StateScheduled    = "SCHEDULED"
	StateDeploying    = "DEPLOYING"
	StateInitializing = "INITIALIZING"
	StateRunning      = "RUNNING"
	StateFinished     = "FINISHED"
	StateCanceling    = "CANCELING"
	StateCanceled     = "CANCELED"
	StateFailed       = "FAILED"
)

func terminal(state string) bool {
	return state == StateFinished || state == StateCanceled || state == StateFailed
}

// subtask is one parallel instance of a vertex running on this node.
type subtask struct {
	e      *Executor
	job    *job
	vertex *jobgraph.Vertex
	index  int
	opctx  *OpContext

	ctx    context.Context
	cancel context.CancelCauseFunc

	op    Operator
	src   SourceOperator
	gate  *inputGate // nil for sources
	out   *Output
	timer *time.Timer

	act     activity
	io      counters
	samples sampler
	cp      checkpointState

	mu         sync.Mutex
	state      string
	timestamps map[string]int64 // state -> unix ms when entered
	failure    string
	setupErr   error
}

func (s *subtask) String() string {
	return fmt.Sprintf("%s[%d] of job %s#%d", s.vertex.ID, s.index, s.job.id, s.job.attempt)
}

// setState records a transition and reports it. Terminal states are final,
// and CANCELING only moves on to a terminal state.
func (s *subtask) setState(to, failure string) bool {
	s.mu.Lock()
	from := s.state
	if terminal(from) || (from == StateCanceling && !terminal(to)) || from == to {
		s.mu.Unlock()
		return false
	}
	now := time.Now()
	s.state = to
	s.timestamps[to] = now.UnixMilli()
	if failure != "" {
		s.failure = failure
	}
	s.mu.Unlock()
	s.e.report(SubtaskEvent{JobID: s.job.id, Attempt: s.job.attempt, VertexID: s.vertex.ID, Subtask: s.index, State: to, At: now, Failure: failure})
	return true
}

func (s *subtask) getState() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// fail stops the subtask with err (it ends FAILED unless the job was
// cancelled).
func (s *subtask) fail(err error) { s.cancel(err) }

// run is the subtask's goroutine.
func (s *subtask) run() {
	defer s.e.subWG.Done()
	defer s.job.subtaskEnded(s)
	s.timer = time.NewTimer(time.Hour)
	s.timer.Stop()
	err := s.execute()
	if s.src != nil {
		s.sourceDone()
	}
	if s.op != nil {
		err = errors.Join(err, s.op.Close())
	} else if s.src != nil {
		err = errors.Join(err, s.src.Close())
	}
	// Acknowledge snapshots still being written before the final state.
	s.cp.writes.Wait()
	switch {
	case err == nil:
		s.setState(StateFinished, "")
	case s.job.canceled.Load():
		s.setState(StateCanceled, "")
	default:
		s.setState(StateFailed, err.Error())
	}
	s.cancel(context.Canceled)
}

func (s *subtask) execute() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in %s: %v\n%s", s, r, debug.Stack())
		}
	}()
	if !s.setState(StateInitializing, "") {
		return context.Canceled
	}
	if s.setupErr != nil {
		return s.setupErr
	}
	s.act.start(stateBusy)
	if s.gate != nil {
		for _, ic := range s.gate.channels {
			if ic.peer != "" {
				if err := s.e.sendCredit(s.ctx, ic.peer, ic.key, s.e.cfg.Credits, s.e.cfg.Credits); err != nil {
					return err
				}
			}
		}
	}
	if s.src != nil {
		err = s.src.Open(s.opctx)
	} else {
		err = s.op.Open(s.opctx)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", s.vertex.Operator, err)
	}
	if r := s.job.restore; r != nil {
		if err := s.restore(r); err != nil {
			return err
		}
	}
	if !s.setState(StateRunning, "") {
		return context.Canceled
	}
	s.samples.add(s.sample(nanotime()))
	if s.src != nil {
		err = s.src.Run(s.out)
		if errors.Is(err, errStopSource) {
			err = nil
		}
	} else {
		err = s.loop()
	}
	if err == nil {
		end := eventEndOfPartition
		if s.cp.stopped {
			end = eventEndOfPartitionStop
		}
		err = s.out.finish(end)
	}
	if err != nil {
		if cause := context.Cause(s.ctx); cause != nil {
			return cause
		}
	}
	return err
}

// loop reads the input gate until every input channel has ended.
func (s *subtask) loop() error {
	var scratch []Record
	var dec decoder
	timerOp, _ := s.op.(timerOperator)
	asyncOp, _ := s.op.(asyncOperator)
	var asyncC <-chan []Record
	if asyncOp != nil {
		asyncC = asyncOp.Async()
	}
	handle := func(b *buffer) error {
		ic := b.ch
		if ic.blocked {
			// Aligning a checkpoint: this channel delivered its barrier;
			// keep its buffers (and credits) until the others did.
			s.cp.stash = append(s.cp.stash, b)
			return nil
		}
		switch {
		case isEndOfPartition(b.event):
			ic.ended = true
			s.gate.open--
			if b.event == eventEndOfPartitionStop {
				s.cp.stopped = true
			}
			s.e.buffers.put(b)
			return s.checkAligned()
		case b.event == eventBarrier:
			cp := b.cp
			s.e.buffers.put(b)
			if err := s.returnCredit(ic); err != nil {
				return err
			}
			return s.onBarrier(ic, cp)
		case b.event != 0:
			s.e.buffers.put(b)
			return s.returnCredit(ic)
		}
		recs := b.recs
		if b.raw != nil {
			var err error
			scratch, err = dec.decodeBatch(scratch[:0], (*b.raw)[b.off:])
			s.io.bytesIn.Add(int64(len(*b.raw) + frameHeaderSize))
			putFrame(b.raw)
			b.raw = nil
			if err != nil {
				return fmt.Errorf("input from %s: %w", ic.key, err)
			}
			recs = scratch
		}
		s.io.recordsIn.Add(int64(len(recs)))
		err := s.op.Process(ic.input, recs, s.out)
		clear(scratch)
		s.e.buffers.put(b)
		if err != nil {
			return err
		}
		return s.returnCredit(ic)
	}
	inputDone := false
	for s.gate.open > 0 || asyncC != nil {
		if timerOp != nil {
			if t, now := timerOp.NextTimer(), time.Now(); !t.IsZero() && !now.Before(t) {
				if err := timerOp.OnTimer(now, s.out); err != nil {
					return err
				}
			}
		}
		if err := s.out.flushIfDue(nanotime()); err != nil {
			return err
		}
		if len(s.cp.ready) > 0 {
			// Buffers held back during an alignment go first.
			b := s.cp.ready[0]
			s.cp.ready[0] = nil
			s.cp.ready = s.cp.ready[1:]
			if err := handle(b); err != nil {
				return err
			}
			continue
		}
		if s.gate.open > 0 {
			select {
			case b := <-s.gate.q:
				if err := handle(b); err != nil {
					return err
				}
				continue
			default:
			}
		} else if !inputDone {
			// Inputs ended: let the operator finish its input side (exec
			// closes stdin), then drain its async output below.
			inputDone = true
			if err := s.op.Finish(s.out); err != nil {
				return err
			}
		}
		// Nothing to do now: wait (idle) for input, a timer or the flush.
		wait := time.Duration(-1)
		if dl := s.out.flushDeadline(); dl != 0 {
			wait = time.Duration(dl - nanotime())
		}
		if timerOp != nil {
			if t := timerOp.NextTimer(); !t.IsZero() {
				if d := time.Until(t); wait < 0 || d < wait {
					wait = d
				}
			}
		}
		var timerC <-chan time.Time
		if wait >= 0 {
			s.timer.Reset(max(wait, 0))
			timerC = s.timer.C
		}
		var q chan *buffer
		if s.gate.open > 0 {
			q = s.gate.q
		}
		s.act.set(stateIdle)
		select {
		case b := <-q:
			s.act.set(stateBusy)
			if err := handle(b); err != nil {
				return err
			}
		case recs, ok := <-asyncC:
			s.act.set(stateBusy)
			if !ok {
				asyncC = nil
				if err := asyncOp.AsyncDone(); err != nil {
					return err
				}
				break
			}
			for _, r := range recs {
				if err := s.out.Emit(r); err != nil {
					return err
				}
			}
		case <-timerC:
			s.act.set(stateBusy)
		case <-s.ctx.Done():
			s.act.set(stateBusy)
			return context.Cause(s.ctx)
		}
		if timerC != nil {
			s.timer.Stop()
		}
	}
	if inputDone || s.cp.stopped {
		// Stopped with a savepoint (without drain): the input did not end,
		// so nothing flushes; output after the barrier is dropped.
		return nil
	}
	return s.op.Finish(s.out)
}

func (s *subtask) returnCredit(ic *inChannel) error {
	if ic.local != nil {
		ic.local.addCredit(1, 0)
		return nil
	}
	return s.e.sendCredit(s.ctx, ic.peer, ic.key, 1, 0)
}

func (s *subtask) sample(now int64) sample {
	return sample{at: now, times: s.act.totals(now), recordsIn: s.io.recordsIn.Load(), recordsOut: s.io.recordsOut.Load()}
}

// SubtaskStatus is a local subtask's state, timestamps and metrics.
type SubtaskStatus struct {
	JobID       string `json:"jobId"`
	Attempt     int    `json:"attempt"`
	VertexID    string `json:"vertexId"`
	VertexName  string `json:"vertexName"`
	Subtask     int    `json:"subtask"`
	Parallelism int    `json:"parallelism"`
	NodeID      string `json:"nodeId"`
	State       string `json:"state"`
	// Timestamps holds, per state entered, the unix time in ms.
	Timestamps map[string]int64 `json:"timestamps"`
	Failure    string           `json:"failure,omitempty"`
	Metrics    SubtaskMetrics   `json:"metrics"`
}

func (s *subtask) status() SubtaskStatus {
	s.mu.Lock()
	st := SubtaskStatus{
		JobID: s.job.id, Attempt: s.job.attempt, VertexID: s.vertex.ID, VertexName: s.vertex.Name,
		Subtask: s.index, Parallelism: s.vertex.Parallelism, NodeID: s.e.cfg.NodeID,
		State: s.state, Failure: s.failure, Timestamps: make(map[string]int64, len(s.timestamps)),
	}
	for k, v := range s.timestamps {
		st.Timestamps[k] = v
	}
	s.mu.Unlock()
	m := &st.Metrics
	m.NumRecordsIn = s.io.recordsIn.Load()
	m.NumRecordsOut = s.io.recordsOut.Load()
	m.NumBytesIn = s.io.bytesIn.Load()
	m.NumBytesOut = s.io.bytesOut.Load()
	m.Accumulators = s.opctx.accumulators()
	if terminal(st.State) {
		return st
	}
	now := nanotime()
	if old, ok := s.samples.oldest(); ok && now > old.at {
		cur := s.sample(now)
		secs := float64(now-old.at) / 1e9
		m.NumRecordsInPerSecond = float64(cur.recordsIn-old.recordsIn) / secs
		m.NumRecordsOutPerSecond = float64(cur.recordsOut-old.recordsOut) / secs
		perSec := func(i int) float64 { return min(1000, max(0, float64(cur.times[i]-old.times[i])/1e6/secs)) }
		m.BusyTimeMsPerSecond = perSec(int(stateBusy))
		m.IdleTimeMsPerSecond = perSec(int(stateIdle))
		m.BackPressuredTimeMsPerSecond = perSec(int(stateBackPressured))
	}
	m.IsBackPressured = s.act.state.Load() == stateBackPressured
	if s.gate != nil && cap(s.gate.q) > 0 {
		m.InputQueueLength = len(s.gate.q)
		m.InPoolUsage = float64(len(s.gate.q)) / float64(cap(s.gate.q))
	}
	used, window := s.out.usage()
	m.OutputQueueLength = used
	if window > 0 {
		m.OutPoolUsage = float64(used) / float64(window)
	}
	return st
}

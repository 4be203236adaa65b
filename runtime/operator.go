package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// Operator processes the records of a non-source subtask. All methods are
// called from the subtask's goroutine.
type Operator interface {
	// Open prepares the operator (compile expressions, open files, start
	// processes). An error fails the subtask.
	Open(ctx *OpContext) error
	// Process handles a batch from input #input (the vertex's input order).
	// It must not keep the slice after returning (it may keep records).
	Process(input int, recs []Record, out *Output) error
	// Finish is called once all inputs have ended (bounded input), before
	// end-of-partition goes downstream: flush windows, commit files.
	Finish(out *Output) error
	// Close releases resources. It is always called, also after a failure
	// or cancellation (then without Finish).
	Close() error
}

// SourceOperator produces records until it is done or ctx is cancelled.
type SourceOperator interface {
	Open(ctx *OpContext) error
	Run(out *Output) error
	Close() error
}

// timerOperator is implemented by operators with processing-time timers.
type timerOperator interface {
	// NextTimer is when OnTimer must next be called (zero: no timer).
	NextTimer() time.Time
	OnTimer(now time.Time, out *Output) error
}

// asyncOperator is implemented by operators that produce records outside
// Process (exec reads its process's stdout in another goroutine).
type asyncOperator interface {
	// Async delivers produced batches; it is closed when production ends.
	Async() <-chan []Record
	// AsyncDone is called once Async is closed; an error fails the subtask.
	AsyncDone() error
}

// OpContext is what an operator knows about the subtask it runs in.
type OpContext struct {
	Ctx            context.Context
	JobID          string
	Attempt        int
	Vertex         *jobgraph.Vertex
	Subtask        int
	Parallelism    int
	MaxParallelism int
	// Inputs are the vertex's input edges, in input order.
	Inputs []jobgraph.Edge
	// KeyGroups is the range of key groups this subtask owns.
	KeyGroups jobgraph.KeyGroupRange
	// Checkpointing is set when the job has checkpointing configured (the
	// file sink then commits in two phases).
	Checkpointing bool
	InputDir      string
	OutputDir     string
	Logger        *slog.Logger

	accMu sync.Mutex
	acc   map[string]*atomic.Int64
}

// Accumulator returns a named per-subtask counter, reported in metrics.
func (c *OpContext) Accumulator(name string) *atomic.Int64 {
	c.accMu.Lock()
	defer c.accMu.Unlock()
	if c.acc == nil {
		c.acc = map[string]*atomic.Int64{}
	}
	a := c.acc[name]
	if a == nil {
		a = new(atomic.Int64)
		c.acc[name] = a
	}
	return a
}

func (c *OpContext) accumulators() map[string]int64 {
	c.accMu.Lock()
	defer c.accMu.Unlock()
	if len(c.acc) == 0 {
		return nil
	}
	m := make(map[string]int64, len(c.acc))
	for k, v := range c.acc {
		m[k] = v.Load()
	}
	return m
}

// operators maps every jobgraph operator name to its implementation; one
// of the two results of a constructor is non-nil.
var operators = map[string]func(p jobgraph.Params) (Operator, SourceOperator){
	"sequence":    func(p jobgraph.Params) (Operator, SourceOperator) { return nil, newSequence(p) },
	"datagen":     func(p jobgraph.Params) (Operator, SourceOperator) { return nil, newDatagen(p) },
	"file-source": func(p jobgraph.Params) (Operator, SourceOperator) { return nil, newFileSource(p) },
	"map":         func(p jobgraph.Params) (Operator, SourceOperator) { return newExprOp(exprMap, p), nil },
	"filter":      func(p jobgraph.Params) (Operator, SourceOperator) { return newExprOp(exprFilter, p), nil },
	"flat-map":    func(p jobgraph.Params) (Operator, SourceOperator) { return newExprOp(exprFlatMap, p), nil },
	"throttle":    func(p jobgraph.Params) (Operator, SourceOperator) { return newThrottle(p), nil },
	"sleep":       func(p jobgraph.Params) (Operator, SourceOperator) { return newSleep(p), nil },
	"count":       func(p jobgraph.Params) (Operator, SourceOperator) { return newAggregate(aggCount, p), nil },
	"sum":         func(p jobgraph.Params) (Operator, SourceOperator) { return newAggregate(aggSum, p), nil },
	"min":         func(p jobgraph.Params) (Operator, SourceOperator) { return newAggregate(aggMin, p), nil },
	"max":         func(p jobgraph.Params) (Operator, SourceOperator) { return newAggregate(aggMax, p), nil },
	"window":      func(p jobgraph.Params) (Operator, SourceOperator) { return newWindow(p), nil },
	"file-sink":   func(p jobgraph.Params) (Operator, SourceOperator) { return newFileSink(p), nil },
	"log-sink":    func(p jobgraph.Params) (Operator, SourceOperator) { return &logSink{}, nil },
	"discard":     func(p jobgraph.Params) (Operator, SourceOperator) { return discard{}, nil },
	"exec":        func(p jobgraph.Params) (Operator, SourceOperator) { return newExec(p), nil },
}

func newOperator(name string, p jobgraph.Params) (Operator, SourceOperator, error) {
	f, ok := operators[name]
	if !ok {
		return nil, nil, fmt.Errorf("operator %q is not implemented by this executor", name)
	}
	op, src := f(p)
	return op, src, nil
}

// sinkBase gives sinks the Finish/Close they need not write.
type sinkBase struct{}

func (sinkBase) Finish(*Output) error { return nil }
func (sinkBase) Close() error         { return nil }

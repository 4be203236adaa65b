package runtime

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

type exprKind int

const (
	exprMap     exprKind = iota // result: an object
	exprFilter                  // result: a boolean
	exprFlatMap                 // result: an array of objects
)

// exprOp implements map, filter and flat-map with an expression compiled
// once per subtask.
type exprOp struct {
	kind     exprKind
	src      string
	prog     *program
	filtered *atomic.Int64
}

func newExprOp(kind exprKind, p jobgraph.Params) Operator {
	return &exprOp{kind: kind, src: p.StringOr("expr", "")}
}

func (o *exprOp) Open(ctx *OpContext) error {
	var err error
	o.prog, err = compileProgram(o.src)
	if o.kind == exprFilter {
		o.filtered = ctx.Accumulator("numRecordsFiltered")
	}
	return err
}

func (o *exprOp) Process(_ int, recs []Record, out *Output) error {
	var dropped int64
	for _, r := range recs {
		if o.kind == exprMap {
			m, err := o.prog.runRecord(r)
			if err != nil {
				return err
			}
			if err := out.Emit(m); err != nil {
				return err
			}
			continue
		}
		v, err := o.prog.run(r)
		if err != nil {
			return err
		}
		switch o.kind {
		case exprFilter:
			keep, ok := v.(bool)
			if !ok {
				return fmt.Errorf("filter expression %q must return a boolean, got %s", o.src, describe(v))
			}
			if !keep {
				dropped++
				continue
			}
			if err := out.Emit(r); err != nil {
				return err
			}
		case exprFlatMap:
			arr, ok := v.([]any)
			if !ok && v != nil {
				return fmt.Errorf("flat-map expression %q must return an array, got %s", o.src, describe(v))
			}
			for _, x := range arr {
				m, err := toRecord(x)
				if err != nil {
					return fmt.Errorf("flat-map expression %q: element: %w", o.src, err)
				}
				if err := out.Emit(m); err != nil {
					return err
				}
			}
		}
	}
	if dropped > 0 {
		o.filtered.Add(dropped)
	}
	return nil
}

func (o *exprOp) Finish(*Output) error { return nil }
func (o *exprOp) Close() error         { return nil }

// throttle passes records on at most ratePerSecond per subtask; the waiting
// is the operator's work (busy time), so upstream sees back pressure.
type throttle struct {
	rate  float64
	start time.Time
	n     int64
	ctx   context.Context
	timer *time.Timer
}

func newThrottle(p jobgraph.Params) Operator { return &throttle{rate: p.FloatOr("ratePerSecond", 1)} }

func (t *throttle) Open(ctx *OpContext) error {
	t.ctx = ctx.Ctx
	t.timer = time.NewTimer(time.Hour)
	t.timer.Stop()
	return nil
}

func (t *throttle) Process(_ int, recs []Record, out *Output) error {
	if t.start.IsZero() {
		t.start = time.Now()
	}
	for _, r := range recs {
		t.n++
		due := t.start.Add(time.Duration(float64(t.n-1) / t.rate * float64(time.Second)))
		if err := sleepCtx(t.ctx, t.timer, time.Until(due)); err != nil {
			return err
		}
		if err := out.Emit(r); err != nil {
			return err
		}
	}
	return nil
}

func (t *throttle) Finish(*Output) error { return nil }
func (t *throttle) Close() error         { return nil }

// sleep waits perRecord before passing each record on (busy time): a slow
// operator for back-pressure demos.
type sleep struct {
	per   time.Duration
	ctx   context.Context
	timer *time.Timer
}

func newSleep(p jobgraph.Params) Operator { return &sleep{per: p.DurationOr("perRecord", 0)} }

func (s *sleep) Open(ctx *OpContext) error {
	s.ctx = ctx.Ctx
	s.timer = time.NewTimer(time.Hour)
	s.timer.Stop()
	return nil
}

func (s *sleep) Process(_ int, recs []Record, out *Output) error {
	for _, r := range recs {
		if err := sleepCtx(s.ctx, s.timer, s.per); err != nil {
			return err
		}
		if err := out.Emit(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *sleep) Finish(*Output) error { return nil }
func (s *sleep) Close() error         { return nil }

func sleepCtx(ctx context.Context, t *time.Timer, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	t.Reset(d)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		t.Stop()
		return context.Cause(ctx)
	}
}

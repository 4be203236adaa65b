package runtime

import (
	"math"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// rateLimiter paces a subtask to ratePerSecond (0 = unlimited); waiting is
// idle time.
type rateLimiter struct {
	rate    float64
	start   time.Time
	allowed int64 // records that may go out before looking at the clock again
	n       int64
}

func newRateLimiter(rate float64) rateLimiter { return rateLimiter{rate: rate} }

// wait blocks until one more record may be emitted.
func (l *rateLimiter) wait(out *Output) error {
	if l.rate <= 0 {
		return nil
	}
	if l.start.IsZero() {
		l.start = time.Now()
	}
	l.n++
	if l.n <= l.allowed {
		return nil
	}
	elapsed := time.Since(l.start).Seconds()
	l.allowed = int64(elapsed * l.rate)
	if l.n <= l.allowed {
		// Look at the clock again after ~1 ms worth of records.
		l.allowed = min(l.allowed, l.n+int64(math.Max(l.rate/1000, 0)))
		return nil
	}
	due := l.start.Add(time.Duration(float64(l.n) / l.rate * float64(time.Second)))
	return out.sleepUntil(due)
}

// sequence emits {"n": i} for i in [from, to], subtask k taking from+k,
// from+k+p, ... (unbounded without "to").
type sequence struct {
	from, to int64
	bounded  bool
	limit    rateLimiter
	ctx      *OpContext
}

func newSequence(p jobgraph.Params) SourceOperator {
	s := &sequence{from: p.IntOr("from", 0), limit: newRateLimiter(p.FloatOr("ratePerSecond", 0))}
	s.to, s.bounded, _ = p.Int("to")
	return s
}

func (s *sequence) Open(ctx *OpContext) error { s.ctx = ctx; return nil }
func (s *sequence) Close() error              { return nil }

func (s *sequence) Run(out *Output) error {
	step := int64(s.ctx.Parallelism)
	for n := s.from + int64(s.ctx.Subtask); !s.bounded || n <= s.to; n += step {
		if err := s.limit.wait(out); err != nil {
			return err
		}
		if err := out.Emit(Record{"n": n}); err != nil {
			return err
		}
		if n > math.MaxInt64-step {
			break
		}
	}
	return nil
}

package runtime

import (
	"encoding/json"
	"fmt"
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

// splits is the per-split position of a source whose records are divided
// into S = maxParallelism splits like key groups: split k holds the records
// with index i ≡ k (mod S), and subtask i owns the splits in
// KeyGroupRangeForOperator(S, p, i). next[k-start] is how many records of
// split k were emitted, so a restore at another parallelism hands whole
// splits with their positions to the new owners.
type splits struct {
	Start int     `json:"start"`
	Next  []int64 `json:"next"`
}

func newSplits(kgs jobgraph.KeyGroupRange) splits {
	return splits{Start: kgs.Start, Next: make([]int64, kgs.Len())}
}

func (sp *splits) snapshot() ([]byte, error) { return json.Marshal(sp) }

// restore keeps the positions of the splits in this subtask's range.
func (sp *splits) restore(old []oldSubtask) error {
	for _, o := range old {
		if len(o.OpState) == 0 {
			continue
		}
		var prev splits
		if err := json.Unmarshal(o.OpState, &prev); err != nil {
			return fmt.Errorf("source state of subtask %d: %w", o.Subtask, err)
		}
		for i, n := range prev.Next {
			if k := prev.Start + i - sp.Start; k >= 0 && k < len(sp.Next) {
				sp.Next[k] = n
			}
		}
	}
	return nil
}

// run emits the records of the owned splits round robin (one record of each
// split in turn), where index(k, j) is the index of record j of split k and
// ok reports whether it exists. The position is advanced before the record
// is emitted, so that a checkpoint taken inside Emit covers it.
func (sp *splits) run(out *Output, limit *rateLimiter, index func(k int, j int64) (int64, bool), emit func(i int64) error) error {
	for {
		any := false
		for x := range sp.Next {
			i, ok := index(sp.Start+x, sp.Next[x])
			if !ok {
				continue
			}
			any = true
			if err := limit.wait(out); err != nil {
				return err
			}
			sp.Next[x]++
			if err := emit(i); err != nil {
				return err
			}
		}
		if !any {
			return nil
		}
	}
}

// sequence emits {"n": i} for i in [from, to] (unbounded without "to").
// Its S = maxParallelism splits: split k holds from+k, from+k+S, ...
type sequence struct {
	from, to int64
	bounded  bool
	limit    rateLimiter
	ctx      *OpContext
	splits   splits
}

func newSequence(p jobgraph.Params) SourceOperator {
	s := &sequence{from: p.IntOr("from", 0), limit: newRateLimiter(p.FloatOr("ratePerSecond", 0))}
	s.to, s.bounded, _ = p.Int("to")
	return s
}

func (s *sequence) Open(ctx *OpContext) error {
	s.ctx = ctx
	s.splits = newSplits(ctx.KeyGroups)
	return nil
}
func (s *sequence) Close() error { return nil }

func (s *sequence) snapshotState(*Checkpoint) ([]byte, error) { return s.splits.snapshot() }
func (s *sequence) restoreState(old []oldSubtask) error       { return s.splits.restore(old) }

func (s *sequence) Run(out *Output) error {
	S := int64(s.ctx.MaxParallelism)
	index := func(k int, j int64) (int64, bool) {
		// n = from + k + j*S, without overflow
		if j > (math.MaxInt64-s.from-int64(k))/S {
			return 0, false
		}
		n := s.from + int64(k) + j*S
		return n, !s.bounded || n <= s.to
	}
	return s.splits.run(out, &s.limit, index, func(n int64) error { return out.Emit(Record{"n": n}) })
}

package runtime

import (
	"sync"
	"sync/atomic"
	"time"
)

// Activity states of a subtask at any instant (Flink's busy / idle /
// back-pressured time accounting).
const (
	stateBusy          int32 = 0 // processing
	stateIdle          int32 = 1 // waiting for input (or a source's rate limit)
	stateBackPressured int32 = 2 // waiting for an output credit
)

var clockBase = time.Now()

// nanotime is a monotonic clock in nanoseconds.
func nanotime() int64 { return int64(time.Since(clockBase)) }

// activity accumulates the time spent in each state. It is written by the
// subtask's goroutine only and read by metrics and back-pressure sampling.
type activity struct {
	state atomic.Int32
	since atomic.Int64
	total [3]atomic.Int64
}

func (a *activity) start(st int32) {
	a.since.Store(nanotime())
	a.state.Store(st)
}

// set switches to st and returns the previous state.
func (a *activity) set(st int32) int32 {
	prev := a.state.Load()
	if prev == st {
		return prev
	}
	now := nanotime()
	a.total[prev].Add(now - a.since.Load())
	a.since.Store(now)
	a.state.Store(st)
	return prev
}

// totals returns the accumulated nanoseconds per state up to now.
func (a *activity) totals(now int64) [3]int64 {
	var t [3]int64
	for i := range t {
		t[i] = a.total[i].Load()
	}
	st := a.state.Load()
	if d := now - a.since.Load(); d > 0 {
		t[st] += d
	}
	return t
}

// counters are a subtask's I/O counters.
type counters struct {
	recordsIn, recordsOut, bytesIn, bytesOut atomic.Int64
}

// sample is a point in time of a subtask's cumulative counters, kept in a
// small ring so that per-second metrics average over the last few seconds.
type sample struct {
	at                    int64
	times                 [3]int64
	recordsIn, recordsOut int64
}

const rateWindow = 5 // seconds of samples for per-second metrics

type sampler struct {
	mu   sync.Mutex
	ring []sample
}

func (s *sampler) add(x sample) {
	s.mu.Lock()
	if len(s.ring) > rateWindow {
		copy(s.ring, s.ring[1:])
		s.ring = s.ring[:rateWindow]
	}
	s.ring = append(s.ring, x)
	s.mu.Unlock()
}

func (s *sampler) oldest() (sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring) == 0 {
		return sample{}, false
	}
	return s.ring[0], true
}

// SubtaskMetrics are measured where the subtask runs. Names follow Flink's
// metric names. Per-second values average over the last ~5 seconds and are
// 0 once the subtask has ended. Bytes count serialised bytes: records on
// local channels are handed over without serialisation and count 0 bytes.
type SubtaskMetrics struct {
	NumRecordsIn                 int64            `json:"numRecordsIn"`
	NumRecordsOut                int64            `json:"numRecordsOut"`
	NumBytesIn                   int64            `json:"numBytesIn"`
	NumBytesOut                  int64            `json:"numBytesOut"`
	NumRecordsInPerSecond        float64          `json:"numRecordsInPerSecond"`
	NumRecordsOutPerSecond       float64          `json:"numRecordsOutPerSecond"`
	BusyTimeMsPerSecond          float64          `json:"busyTimeMsPerSecond"`
	IdleTimeMsPerSecond          float64          `json:"idleTimeMsPerSecond"`
	BackPressuredTimeMsPerSecond float64          `json:"backPressuredTimeMsPerSecond"`
	IsBackPressured              bool             `json:"isBackPressured"`
	InPoolUsage                  float64          `json:"inPoolUsage"`
	OutPoolUsage                 float64          `json:"outPoolUsage"`
	InputQueueLength             int              `json:"inputQueueLength"`
	OutputQueueLength            int              `json:"outputQueueLength"`
	Accumulators                 map[string]int64 `json:"accumulators,omitempty"`
}

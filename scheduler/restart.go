package scheduler

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// restartDelay returns how long to wait before the next attempt, or false
// when the strategy allows no more restarts (Flink's strategies).
func restartDelay(r *jobgraph.RestartStrategy, j *fsm.Job, now time.Time) (time.Duration, bool) {
	if r == nil {
		return 0, false
	}
	switch r.Type {
	case jobgraph.RestartFixedDelay:
		if j.Restarts >= r.Attempts {
			return 0, false
		}
		return r.Delay.D(), true
	case jobgraph.RestartExponentialDelay:
		if j.Restarts >= r.Attempts {
			return 0, false
		}
		// A job that ran long enough without failing starts over from the
		// initial backoff.
		n := j.Restarts
		if running, ok := j.Timestamps[fsm.JobRunning]; ok && now.Sub(time.UnixMilli(running)) >= r.ResetBackoffThreshold.D() {
			n = 0
		}
		d := float64(r.InitialBackoff.D()) * math.Pow(r.BackoffMultiplier, float64(n))
		if max := float64(r.MaxBackoff.D()); d > max {
			d = max
		}
		if r.JitterFactor > 0 {
			d += d * r.JitterFactor * (2*rand.Float64() - 1)
		}
		return time.Duration(d), true
	default:
		return 0, false
	}
}

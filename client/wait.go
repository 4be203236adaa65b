package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// WaitOptions pace the Wait helpers.
type WaitOptions struct {
	// Interval between polls; 0 means 500 ms.
	Interval time.Duration
	// Progress, when set, is called after every successful poll.
	Progress func(state string, elapsed time.Duration)
	// NotFoundGrace is how long a 404 counts as "not there yet" (a node
	// that has not applied the submission); 0 means 5 s.
	NotFoundGrace time.Duration
}

func (o WaitOptions) interval() time.Duration {
	if o.Interval <= 0 {
		return 500 * time.Millisecond
	}
	return o.Interval
}

func (o WaitOptions) grace() time.Duration {
	if o.NotFoundGrace <= 0 {
		return 5 * time.Second
	}
	return o.NotFoundGrace
}

// transient tells whether a poll failure should just be polled again: no
// node reachable right now, or no leader.
func transient(err error) bool {
	var ce *ConnectionError
	return errors.As(err, &ce) || StatusCode(err) == http.StatusServiceUnavailable
}

// WaitForJobState polls the job until it is in one of states (any
// terminal state when none are given) and returns its details; it stops
// with ctx. Connection errors and 503 are polled through (a failover is
// not the end of the wait).
func (c *Client) WaitForJobState(ctx context.Context, jobID string, opts WaitOptions, states ...string) (*JobDetails, error) {
	if len(states) == 0 {
		states = TerminalStates
	}
	start := time.Now()
	var last error
	for {
		j, err := c.Job(ctx, jobID)
		switch {
		case err == nil:
			if opts.Progress != nil {
				opts.Progress(j.State, time.Since(start))
			}
			for _, s := range states {
				if j.State == s {
					return j, nil
				}
			}
			// A terminal job will not reach the wanted state.
			if IsTerminal(j.State) {
				return j, &StateError{JobID: jobID, State: j.State, Want: states, Reason: j.Reason}
			}
		case IsNotFound(err) && time.Since(start) < opts.grace():
		case transient(err):
			last = err
		default:
			return nil, err
		}
		t := time.NewTimer(opts.interval())
		select {
		case <-ctx.Done():
			t.Stop()
			if last != nil {
				return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// StateError is a job that reached a terminal state other than the one
// waited for.
type StateError struct {
	JobID  string
	State  string
	Want   []string
	Reason string
}

func (e *StateError) Error() string {
	msg := fmt.Sprintf("job %s ended %s, not %s", e.JobID, e.State, strings.Join(e.Want, " or "))
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// WaitForSavepoint polls a savepoint (or stop-with-savepoint) trigger until
// it completes. A completed operation with a failure cause is returned
// with an *OperationError.
func (c *Client) WaitForSavepoint(ctx context.Context, jobID, triggerID string, opts WaitOptions) (*SavepointStatus, error) {
	start := time.Now()
	var last error
	for {
		s, err := c.SavepointStatus(ctx, jobID, triggerID)
		switch {
		case err == nil:
			if opts.Progress != nil {
				opts.Progress(s.Status.ID, time.Since(start))
			}
			if s.Done() {
				return s, s.Err()
			}
		case IsNotFound(err) && time.Since(start) < opts.grace():
		case transient(err):
			last = err
		default:
			return nil, err
		}
		t := time.NewTimer(opts.interval())
		select {
		case <-ctx.Done():
			t.Stop()
			if last != nil {
				return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

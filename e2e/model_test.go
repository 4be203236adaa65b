//go:build e2e

package e2e

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// The model of one job id. A job's state is one of five abstract states;
// the model's state is the SET of abstract states the job may be in (a
// bitmask), which keeps the model deterministic while allowing the move
// the dispatcher makes on its own: CANCELLING becomes CANCELED when the
// subtasks have stopped. Reads narrow the set down. The workload's jobs
// are unbounded and restart up to 100 times, so FAILED or FINISHED is not
// expected at all: the model never enters it, and a job seen in it shows
// up as a violation to look into (its history names the state).
const (
	stAbsent     uint8 = 1 << iota // never submitted (404)
	stActive                       // CREATED, RUNNING, RESTARTING, ...
	stCancelling                   // CANCELLING
	stCanceled                     // CANCELED
	stFailed                       // FAILED or FINISHED: terminal, not cancelled
)

type opKind uint8

const (
	opSubmit opKind = iota
	opGet
	opCancel
)

func (k opKind) String() string {
	return [...]string{"submit", "get", "cancel"}[k]
}

// result is the outcome of an operation as the client saw it.
type result uint8

const (
	resOK       result = iota // submit/cancel 202, get 200
	resConflict               // 409
	resNotFound               // 404
	resUnknown                // timeout, connection broken, 5xx: may or may not have happened
)

type opInput struct {
	Kind opKind
	Job  string
}

type opOutput struct {
	Result result
	// State is the observed state of a get (a single stX bit).
	State uint8
	// Raw is what the server said, for the report.
	Raw string
}

// closure adds the states a job can reach without a client operation.
func closure(s uint8) uint8 {
	if s&stCancelling != 0 {
		s |= stCanceled
	}
	return s
}

func applySubmit(s uint8) uint8 {
	out := s &^ stAbsent
	if s&stAbsent != 0 {
		out |= stActive
	}
	return closure(out)
}

// applyCancel is the state after a cancel accepted with 202.
func applyCancel(s uint8) uint8 {
	if s&(stActive|stCancelling) == 0 {
		return 0
	}
	return closure(stCancelling)
}

// cancelAnyOutcome is every state a cancel may leave, whatever it answered.
func cancelAnyOutcome(s uint8) uint8 {
	out := s
	if s&stActive != 0 {
		out |= stCancelling
	}
	return closure(out)
}

func step(state, input, output interface{}) (bool, interface{}) {
	s := state.(uint8)
	in := input.(opInput)
	out := output.(opOutput)
	var next uint8
	switch in.Kind {
	case opSubmit:
		switch out.Result {
		case resOK:
			next = applySubmit(s)
		case resUnknown:
			next = s | applySubmit(s)
		default: // a 409 for the same spec is never right
			return false, s
		}
	case opGet:
		if out.Result == resUnknown {
			return true, s
		}
		next = closure(s & out.State)
	case opCancel:
		switch out.Result {
		case resOK:
			next = applyCancel(s)
		case resConflict:
			next = s & (stCanceled | stFailed)
		case resNotFound:
			next = s & stAbsent
		case resUnknown:
			next = cancelAnyOutcome(s)
		}
	}
	return next != 0, next
}

func stateNames(s uint8) string {
	var parts []string
	for i, n := range []string{"absent", "active", "cancelling", "canceled", "failed"} {
		if s&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func describeOp(input, output interface{}) string {
	in := input.(opInput)
	out := output.(opOutput)
	return fmt.Sprintf("%s(%s) -> %s", in.Kind, in.Job[:8], out.Raw)
}

// jobModel partitions the history by job id: each job is checked alone.
var jobModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byJob := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(opInput).Job
			if _, ok := byJob[k]; !ok {
				keys = append(keys, k)
			}
			byJob[k] = append(byJob[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byJob[k])
		}
		return out
	},
	Init:              func() interface{} { return stAbsent },
	Step:              step,
	Equal:             func(a, b interface{}) bool { return a.(uint8) == b.(uint8) },
	Hash:              func(s interface{}) uint64 { return uint64(s.(uint8)) },
	DescribeOperation: describeOp,
	DescribeState:     func(s interface{}) string { return stateNames(s.(uint8)) },
}

// observedState maps a job status string to the model's state bit.
func observedState(status string) uint8 {
	switch status {
	case "CANCELLING":
		return stCancelling
	case "CANCELED":
		return stCanceled
	case "FAILED", "FINISHED":
		return stFailed
	default:
		return stActive
	}
}

// checkResult is the verdict over one job id's operations.
type checkResult struct {
	Job     string
	Ops     int
	Verdict porcupine.CheckResult
	Info    porcupine.LinearizationInfo
	First   int64 // call time of the job's first operation
}

// checkHistory checks every job id on its own and returns the ids whose
// history is not linearizable (or could not be decided in time).
func checkHistory(history []porcupine.Operation, perJob time.Duration) (bad []checkResult, checked int) {
	for _, part := range jobModel.Partition(history) {
		single := jobModel
		single.Partition = nil
		res, info := porcupine.CheckOperationsVerbose(single, part, perJob)
		checked += len(part)
		if res != porcupine.Ok {
			first := part[0].Call
			for _, op := range part {
				first = min(first, op.Call)
			}
			bad = append(bad, checkResult{Job: part[0].Input.(opInput).Job, Ops: len(part), Verdict: res, Info: info, First: first})
		}
	}
	return bad, checked
}

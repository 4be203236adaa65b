package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func applyCmd(t *testing.T, f *FSM, index uint64, c Command) Result {
	t.Helper()
	data, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	res, _ := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(Result)
	return res
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestCommandsRoundTripThroughTheCodec(t *testing.T) {
	for _, c := range []Command{
		&Noop{At: 1},
		&JobSubmit{JobID: "a", Name: "n", Spec: json.RawMessage(`{"x":1}`), At: 2},
		&JobCancel{JobID: "a", At: 3},
	} {
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if CommandType(data[0]) != c.Type() || data[1] != formatVersion {
			t.Fatalf("%T framed as %v", c, data[:2])
		}
		back, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := json.Marshal(c)
		b, _ := json.Marshal(back)
		if !bytes.Equal(a, b) {
			t.Errorf("%T: %s != %s", c, a, b)
		}
	}
}

func TestUnknownCommandsStopTheNodeUnlessMarkedIgnorable(t *testing.T) {
	f := New(quiet())
	if _, err := Decode([]byte{99, formatVersion, '{', '}'}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("decode unknown: %v", err)
	}
	// Ignorable: skipped, index still advances.
	f.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: []byte{byte(IgnoreUnknownFlag | 7), formatVersion, '{', '}'}})
	if f.AppliedIndex() != 5 {
		t.Fatalf("applied index %d", f.AppliedIndex())
	}
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(r.(string), "cannot apply log entry 6") {
			t.Fatalf("unknown command did not stop the node: %v", r)
		}
	}()
	f.Apply(&raft.Log{Index: 6, Type: raft.LogCommand, Data: []byte{99, formatVersion, '{', '}'}})
}

func TestJobLifecycleAndIdempotentSubmit(t *testing.T) {
	f := New(quiet())
	spec := json.RawMessage(`{"name":"a"}`)
	if r := applyCmd(t, f, 1, &JobSubmit{JobID: "j", Name: "a", Spec: spec, At: 10}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := applyCmd(t, f, 2, &JobSubmit{JobID: "j", Name: "a", Spec: spec, At: 11}); r.Err != nil {
		t.Fatalf("same spec again: %v", r.Err)
	}
	var conflict *Conflict
	if r := applyCmd(t, f, 3, &JobSubmit{JobID: "j", Name: "b", Spec: json.RawMessage(`{"name":"b"}`), At: 12}); !errors.As(r.Err, &conflict) {
		t.Fatalf("different spec under the same id: %v", r.Err)
	}
	j, _ := f.Job("j")
	if j.State != JobCreated || j.StartTime != 10 || j.EndTime != -1 {
		t.Fatalf("job %+v", j)
	}
	if r := applyCmd(t, f, 4, &JobCancel{JobID: "j", At: 20}); r.Err != nil {
		t.Fatal(r.Err)
	}
	j, _ = f.Job("j")
	if j.State != JobCanceled || j.EndTime != 20 {
		t.Fatalf("cancelled job %+v", j)
	}
	if r := applyCmd(t, f, 5, &JobCancel{JobID: "j", At: 21}); !errors.As(r.Err, &conflict) {
		t.Fatalf("cancel twice: %v", r.Err)
	}
	var nf *NotFound
	if r := applyCmd(t, f, 6, &JobCancel{JobID: "nope", At: 21}); !errors.As(r.Err, &nf) {
		t.Fatalf("cancel unknown: %v", r.Err)
	}
}

type sink struct {
	bytes.Buffer
}

func (s *sink) ID() string    { return "s" }
func (s *sink) Cancel() error { return nil }
func (s *sink) Close() error  { return nil }

func TestSnapshotRestoresTheWholeState(t *testing.T) {
	f := New(quiet())
	for i, id := range []string{"a", "b", "c"} {
		applyCmd(t, f, uint64(i+1), &JobSubmit{JobID: id, Name: id, Spec: json.RawMessage(`{}`), At: int64(i)})
	}
	applyCmd(t, f, 4, &JobCancel{JobID: "b", At: 9})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	g := New(quiet())
	changed := g.Changed()
	if err := g.Restore(io.NopCloser(&s)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("restore did not wake watchers")
	}
	if g.AppliedIndex() != 4 || len(g.Jobs()) != 3 {
		t.Fatalf("restored index %d, %d jobs", g.AppliedIndex(), len(g.Jobs()))
	}
	b, _ := g.Job("b")
	if b.State != JobCanceled {
		t.Errorf("b is %s", b.State)
	}
	if err := New(quiet()).Restore(io.NopCloser(strings.NewReader(`{"version":99}`))); err == nil {
		t.Error("a snapshot from a newer format was accepted")
	}
}

// Regression (found by the compose suite): a lost node's FAILING decision
// overwrote an acknowledged cancel and the job ran again.
func TestAnAcknowledgedCancelWinsOverALaterFailure(t *testing.T) {
	f := New(quiet())
	applyCmd(t, f, 1, &JobSubmit{JobID: "j", Name: "j", Spec: json.RawMessage(`{}`), At: 1})
	applyCmd(t, f, 2, &JobSchedule{JobID: "j", Attempt: 1, Placement: map[string][]string{"v": {"n1"}}, At: 2})
	if r := applyCmd(t, f, 3, &JobCancel{JobID: "j", At: 3}); r.Err != nil {
		t.Fatal(r.Err)
	}
	var conflict *Conflict
	for _, state := range []string{JobFailing, JobRestarting, JobFailed} {
		if r := applyCmd(t, f, 4, &JobTransition{JobID: "j", Attempt: 1, State: state, At: 4}); !errors.As(r.Err, &conflict) {
			t.Errorf("%s over CANCELLING: %v", state, r.Err)
		}
	}
	if r := applyCmd(t, f, 5, &JobTransition{JobID: "j", Attempt: 1, State: JobCanceled, At: 5}); r.Err != nil {
		t.Fatalf("CANCELED over CANCELLING: %v", r.Err)
	}
	if j, _ := f.Job("j"); j.State != JobCanceled {
		t.Fatalf("job is %s", j.State)
	}
}

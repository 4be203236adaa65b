package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
)

// CommandType tags every Raft log entry. Values are part of the log format:
// never renumber or reuse one.
type CommandType uint8

// IgnoreUnknownFlag marks a command that older nodes may skip safely. Any
// other unknown type stops the node (see Apply): skipping it silently would
// let replicas diverge.
const IgnoreUnknownFlag CommandType = 0x80

const (
	// CommandNoop commits nothing but an index; a new leader writes one so
	// that consistent reads see every earlier entry.
	CommandNoop      CommandType = 1
	CommandJobSubmit CommandType = 2
	CommandJobCancel CommandType = 3
	// CommandJobSchedule deploys an attempt of a job on a placement.
	CommandJobSchedule CommandType = 4
	// CommandSubtaskEvents records subtask transitions reported by nodes.
	CommandSubtaskEvents CommandType = 5
	// CommandJobTransition records a scheduler decision (fail, restart,
	// waiting for slots, cancelled).
	CommandJobTransition CommandType = 6
	// CommandBundleAdd records a job bundle stored on a quorum of nodes.
	CommandBundleAdd CommandType = 7
	// CommandBundleDelete forgets a job bundle.
	CommandBundleDelete CommandType = 8
	// CommandCheckpointStarted reserves a checkpoint id for an attempt.
	CommandCheckpointStarted CommandType = 9
	// CommandCheckpointCompleted records a checkpoint every subtask acked.
	CommandCheckpointCompleted CommandType = 10
	// CommandCheckpointFailed records a checkpoint that was declined or
	// timed out.
	CommandCheckpointFailed CommandType = 11
	// CommandTriggerCreated records a savepoint (or checkpoint, stop,
	// rescale) request under its trigger id.
	CommandTriggerCreated CommandType = 12
	// CommandTriggerDone records a trigger's outcome.
	CommandTriggerDone CommandType = 13
	// CommandJobRescale redeploys a job with new parallelism from a
	// checkpoint taken for it.
	CommandJobRescale CommandType = 14
)

// formatVersion is the encoding of a command body. Bump it when a body
// changes shape, and keep decoding the old one.
const formatVersion byte = 1

// Command is one typed state change.
type Command interface {
	Type() CommandType
}

// Encode frames a command as [type][format version][JSON body].
func Encode(c Command) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(body)+2)
	out = append(out, byte(c.Type()), formatVersion)
	return append(out, body...), nil
}

// ErrUnknownCommand is returned for a type this build does not know.
var ErrUnknownCommand = errors.New("unknown command type")

// Decode reverses Encode.
func Decode(data []byte) (Command, error) {
	if len(data) < 2 {
		return nil, fmt.Errorf("command too short (%d bytes)", len(data))
	}
	t, v, body := CommandType(data[0]), data[1], data[2:]
	if v != formatVersion {
		return nil, fmt.Errorf("command type %d: unknown format version %d", t, v)
	}
	var c Command
	switch t {
	case CommandNoop:
		c = &Noop{}
	case CommandJobSubmit:
		c = &JobSubmit{}
	case CommandJobCancel:
		c = &JobCancel{}
	case CommandJobSchedule:
		c = &JobSchedule{}
	case CommandSubtaskEvents:
		c = &SubtaskEvents{}
	case CommandJobTransition:
		c = &JobTransition{}
	case CommandBundleAdd:
		c = &BundleAdd{}
	case CommandBundleDelete:
		c = &BundleDelete{}
	case CommandCheckpointStarted:
		c = &CheckpointStarted{}
	case CommandCheckpointCompleted:
		c = &CheckpointCompleted{}
	case CommandCheckpointFailed:
		c = &CheckpointFailed{}
	case CommandTriggerCreated:
		c = &TriggerCreated{}
	case CommandTriggerDone:
		c = &TriggerDone{}
	case CommandJobRescale:
		c = &JobRescale{}
	default:
		return nil, fmt.Errorf("%w %d", ErrUnknownCommand, t)
	}
	if err := json.Unmarshal(body, c); err != nil {
		return nil, fmt.Errorf("command type %d: %v", t, err)
	}
	return c, nil
}

// Noop carries the time it was proposed, so a barrier entry is never empty.
type Noop struct {
	At int64 `json:"at"`
}

func (*Noop) Type() CommandType { return CommandNoop }

// JobSubmit stores a validated job. The job id doubles as an idempotency key:
// a retried submission of the same spec returns the stored job.
type JobSubmit struct {
	JobID string          `json:"job_id"`
	Name  string          `json:"name"`
	Spec  json.RawMessage `json:"spec"`
	At    int64           `json:"at"`
	// Restore starts the job from a savepoint.
	Restore *RestoreRef `json:"restore,omitempty"`
}

func (*JobSubmit) Type() CommandType { return CommandJobSubmit }

// JobCancel asks for a job to be cancelled.
type JobCancel struct {
	JobID string `json:"job_id"`
	At    int64  `json:"at"`
}

func (*JobCancel) Type() CommandType { return CommandJobCancel }

// JobSchedule starts attempt Attempt of a job with subtask i of every vertex
// on Placement[vertex][i].
type JobSchedule struct {
	JobID     string              `json:"job_id"`
	Attempt   int                 `json:"attempt"`
	Placement map[string][]string `json:"placement"`
	At        int64               `json:"at"`
	// Restore is the checkpoint or savepoint the attempt starts from.
	Restore *RestoreRef `json:"restore,omitempty"`
}

func (*JobSchedule) Type() CommandType { return CommandJobSchedule }

// SubtaskEvent is one subtask transition as a node saw it.
type SubtaskEvent struct {
	JobID    string `json:"job_id"`
	Attempt  int    `json:"attempt"`
	VertexID string `json:"vertex_id"`
	Subtask  int    `json:"subtask"`
	State    string `json:"state"`
	At       int64  `json:"at"`
	Failure  string `json:"failure,omitempty"`
}

// SubtaskEvents is a batch of transitions from one node.
type SubtaskEvents struct {
	Node   string         `json:"node"`
	Events []SubtaskEvent `json:"events"`
}

func (*SubtaskEvents) Type() CommandType { return CommandSubtaskEvents }

// JobTransition is a scheduler decision about one attempt of a job. It is
// refused when the job has moved on to another attempt since, so a decision
// taken by a deposed leader cannot undo a newer one.
type JobTransition struct {
	JobID   string `json:"job_id"`
	Attempt int    `json:"attempt"`
	State   string `json:"state"`
	// Reason explains a job waiting for slots, or why it failed.
	Reason string `json:"reason,omitempty"`
	// RestartAt is when a RESTARTING job may be scheduled again.
	RestartAt int64 `json:"restart_at,omitempty"`
	// Failure is recorded in the job's exception history.
	Failure *Failure `json:"failure,omitempty"`
	At      int64    `json:"at"`
}

func (*JobTransition) Type() CommandType { return CommandJobTransition }

// BundleAdd records an uploaded job bundle (a "jar"). Its bytes were stored
// on Holders, a quorum of the voters, before this was proposed.
type BundleAdd struct {
	Bundle Bundle `json:"bundle"`
}

func (*BundleAdd) Type() CommandType { return CommandBundleAdd }

// BundleDelete forgets a bundle.
type BundleDelete struct {
	ID string `json:"id"`
}

func (*BundleDelete) Type() CommandType { return CommandBundleDelete }

// CheckpointStarted reserves checkpoint id ID for an attempt before its
// barriers go out, so a new leader never reuses an id in flight.
type CheckpointStarted struct {
	JobID     string `json:"job_id"`
	Attempt   int    `json:"attempt"`
	ID        int64  `json:"id"`
	Savepoint bool   `json:"savepoint"`
	TriggerID string `json:"trigger_id,omitempty"`
	At        int64  `json:"at"`
}

func (*CheckpointStarted) Type() CommandType { return CommandCheckpointStarted }

// CheckpointCompleted records a checkpoint that every subtask acknowledged.
type CheckpointCompleted struct {
	JobID      string     `json:"job_id"`
	Checkpoint Checkpoint `json:"checkpoint"`
	// Prune lists older checkpoint ids the coordinator deleted from storage.
	Prune []int64 `json:"prune,omitempty"`
}

func (*CheckpointCompleted) Type() CommandType { return CommandCheckpointCompleted }

// CheckpointFailed records a checkpoint that did not complete.
type CheckpointFailed struct {
	JobID     string `json:"job_id"`
	Attempt   int    `json:"attempt"`
	ID        int64  `json:"id"`
	Savepoint bool   `json:"savepoint"`
	Reason    string `json:"reason"`
	At        int64  `json:"at"`
}

func (*CheckpointFailed) Type() CommandType { return CommandCheckpointFailed }

// TriggerCreated records an asynchronous operation under its trigger id.
// A client-chosen id makes a retried request idempotent.
type TriggerCreated struct {
	Trigger Trigger `json:"trigger"`
}

func (*TriggerCreated) Type() CommandType { return CommandTriggerCreated }

// TriggerDone records the outcome of an asynchronous operation.
type TriggerDone struct {
	TriggerID    string `json:"trigger_id"`
	Status       string `json:"status"`
	Location     string `json:"location,omitempty"`
	FailureCause string `json:"failure_cause,omitempty"`
	At           int64  `json:"at"`
}

func (*TriggerDone) Type() CommandType { return CommandTriggerDone }

// JobRescale replaces a running job's spec (new parallelism) and restarts
// it from the checkpoint just taken for the rescale.
type JobRescale struct {
	JobID     string          `json:"job_id"`
	Attempt   int             `json:"attempt"`
	Spec      json.RawMessage `json:"spec"`
	TriggerID string          `json:"trigger_id"`
	At        int64           `json:"at"`
}

func (*JobRescale) Type() CommandType { return CommandJobRescale }

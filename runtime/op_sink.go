package runtime

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// fileSink writes JSON lines, one part file at a time per subtask, under
// OutputDir/path.
//
// Without checkpointing a part is written as
// .part-<subtask>-<n>.jsonl.inprogress and renamed to part-<subtask>-<n>.jsonl
// when it is committed: on roll (rollSize bytes) and when the input ends.
//
// With checkpointing it is a two-phase-commit sink (see sink_commit.go for
// the names): parts are written in progress (rolled parts stay in progress),
// at each barrier they are fsync'd and renamed to a pending name carrying the
// attempt and checkpoint id, and CheckpointComplete / CommitSinks rename the
// pending parts of a completed checkpoint to their committed name. At the end
// of input the last parts become pending with FinalCheckpointID.
//
// A cancelled or failed subtask removes its in-progress files.
type fileSink struct {
	dir      string
	rollSize int64
	ctx      *OpContext
	root     *os.Root
	part     *partFile
	rolled   []*partFile // 2PC: closed parts waiting for the next barrier
	next     int64
	twoPhase bool
	enc      jsonWriter
	line     []byte
}

type partFile struct {
	name, tmp string
	seq       int64
	f         *os.File
	w         *bufio.Writer
	size      int64
}

func newFileSink(p jobgraph.Params) Operator {
	return &fileSink{dir: p.StringOr("path", ""), rollSize: p.IntOr("rollSize", 0)}
}

func (s *fileSink) Open(ctx *OpContext) error {
	s.ctx = ctx
	s.twoPhase = ctx.Checkpointing
	base, err := os.OpenRoot(ctx.OutputDir)
	if err != nil {
		return err
	}
	defer base.Close()
	if err := base.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	if s.root, err = base.OpenRoot(s.dir); err != nil {
		return err
	}
	if s.twoPhase {
		// Continue after the highest part number of this subtask and
		// attempt present in any form (another job may have used the path).
		entries, err := fs.ReadDir(s.root.FS(), ".")
		if err != nil {
			return err
		}
		for _, e := range entries {
			m := partNumRe.FindStringSubmatch(e.Name())
			if m == nil || m[1] != strconv.Itoa(ctx.Subtask) || m[2] != strconv.Itoa(ctx.Attempt) {
				continue
			}
			if n, err := strconv.ParseInt(m[3], 10, 64); err == nil && n >= s.next {
				s.next = n + 1
			}
		}
	}
	return nil
}

// open starts the next part file, skipping numbers already used (by an
// earlier attempt).
func (s *fileSink) open() error {
	for {
		var name string
		if s.twoPhase {
			name = fmt.Sprintf("part-%d-%d-%d.jsonl", s.ctx.Subtask, s.ctx.Attempt, s.next)
		} else {
			name = fmt.Sprintf("part-%d-%d.jsonl", s.ctx.Subtask, s.next)
		}
		tmp := "." + name + ".inprogress"
		seq := s.next
		s.next++
		if _, err := s.root.Stat(name); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		f, err := s.root.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		s.part = &partFile{name: name, tmp: tmp, seq: seq, f: f, w: bufio.NewWriterSize(f, 64<<10)}
		return nil
	}
}

func (s *fileSink) Process(_ int, recs []Record, _ *Output) error {
	for _, r := range recs {
		if s.part == nil {
			if err := s.open(); err != nil {
				return err
			}
		}
		s.line = s.enc.appendRecord(s.line[:0], r)
		n, err := s.part.w.Write(s.line)
		s.part.size += int64(n)
		if err != nil {
			return err
		}
		if s.rollSize > 0 && s.part.size >= s.rollSize {
			if s.twoPhase {
				err = s.roll()
			} else {
				err = s.commit()
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// closePart flushes, fsyncs and closes a part.
func closePart(p *partFile) error {
	err := p.w.Flush()
	if err == nil {
		err = p.f.Sync()
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	p.f = nil
	return err
}

// commit makes the current part durable and visible under its final name
// (without checkpointing).
func (s *fileSink) commit() error {
	p := s.part
	if p == nil {
		return nil
	}
	s.part = nil
	err := closePart(p)
	if err == nil {
		err = s.root.Rename(p.tmp, p.name)
	}
	return err
}

// roll closes the current part; it stays in progress until the next barrier.
func (s *fileSink) roll() error {
	p := s.part
	s.part = nil
	s.rolled = append(s.rolled, p)
	return closePart(p)
}

// preCommit turns every part written since the last barrier into a pending
// part of checkpoint id (durable, hidden) and returns their names.
func (s *fileSink) preCommit(id int64) ([]string, error) {
	if s.part != nil {
		if err := s.roll(); err != nil {
			return nil, err
		}
	}
	var names []string
	for len(s.rolled) > 0 {
		p := s.rolled[0]
		pn := pendingName(s.ctx.Subtask, s.ctx.Attempt, p.seq, id)
		if err := s.root.Rename(p.tmp, pn); err != nil {
			return nil, err
		}
		s.rolled = s.rolled[1:]
		names = append(names, pn)
	}
	if len(names) > 0 {
		if err := syncRoot(s.root); err != nil {
			return nil, err
		}
	}
	return names, nil
}

type sinkState struct {
	Pending []string `json:"pending,omitempty"`
}

func (s *fileSink) snapshotState(cp *Checkpoint) ([]byte, error) {
	if !s.twoPhase {
		return nil, nil
	}
	names, err := s.preCommit(cp.ID)
	if err != nil {
		return nil, err
	}
	return json.Marshal(sinkState{Pending: names})
}

// restoreState: nothing to do; the node's sink directories were recovered
// (recoverSinks) before the subtasks started.
func (s *fileSink) restoreState([]oldSubtask) error { return nil }

func (s *fileSink) Finish(*Output) error {
	if s.twoPhase {
		_, err := s.preCommit(FinalCheckpointID)
		return err
	}
	return s.commit()
}

func (s *fileSink) Close() error {
	parts := s.rolled
	if s.part != nil { // not committed: cancelled or failed
		parts = append(parts, s.part)
	}
	for _, p := range parts {
		if p.f != nil {
			p.f.Close()
		}
		s.root.Remove(p.tmp)
	}
	s.part, s.rolled = nil, nil
	if s.root != nil {
		return s.root.Close()
	}
	return nil
}

// logSink logs every record at Info level.
type logSink struct {
	sinkBase
	log *slog.Logger
}

func (l *logSink) Open(ctx *OpContext) error { l.log = ctx.Logger; return nil }

func (l *logSink) Process(_ int, recs []Record, _ *Output) error {
	for _, r := range recs {
		l.log.Info("record", "record", r)
	}
	return nil
}

// discard drops records (they are still counted in numRecordsIn).
type discard struct{ sinkBase }

func (discard) Open(*OpContext) error                { return nil }
func (discard) Process(int, []Record, *Output) error { return nil }

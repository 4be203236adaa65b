package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// fileSink writes JSON lines, one part file at a time per subtask, under
// OutputDir/path. A part is written as .part-<subtask>-<n>.jsonl.inprogress
// and renamed to part-<subtask>-<n>.jsonl when it is committed: on roll
// (rollSize bytes) and when the input ends. A cancelled or failed subtask
// removes its in-progress file. The split into write / commit is where a
// later change hooks checkpoints (pre-commit on barrier, commit on
// checkpoint completion).
type fileSink struct {
	dir      string
	rollSize int64
	ctx      *OpContext
	root     *os.Root
	part     *partFile
	next     int
	enc      jsonWriter
	line     []byte
}

type partFile struct {
	name, tmp string
	f         *os.File
	w         *bufio.Writer
	size      int64
}

func newFileSink(p jobgraph.Params) Operator {
	return &fileSink{dir: p.StringOr("path", ""), rollSize: p.IntOr("rollSize", 0)}
}

func (s *fileSink) Open(ctx *OpContext) error {
	s.ctx = ctx
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
	return nil
}

// open starts the next part file, skipping numbers already used (by an
// earlier attempt).
func (s *fileSink) open() error {
	for {
		name := fmt.Sprintf("part-%d-%d.jsonl", s.ctx.Subtask, s.next)
		tmp := "." + name + ".inprogress"
		s.next++
		if _, err := s.root.Stat(name); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		f, err := s.root.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		s.part = &partFile{name: name, tmp: tmp, f: f, w: bufio.NewWriterSize(f, 64<<10)}
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
			if err := s.commit(); err != nil {
				return err
			}
		}
	}
	return nil
}

// commit makes the current part durable and visible under its final name.
func (s *fileSink) commit() error {
	p := s.part
	if p == nil {
		return nil
	}
	s.part = nil
	err := p.w.Flush()
	if err == nil {
		err = p.f.Sync()
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.root.Rename(p.tmp, p.name)
	}
	return err
}

func (s *fileSink) Finish(*Output) error { return s.commit() }

func (s *fileSink) Close() error {
	if s.part != nil { // not committed: cancelled or failed
		s.part.f.Close()
		s.root.Remove(s.part.tmp)
		s.part = nil
	}
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

func (discard) Open(*OpContext) error                  { return nil }
func (discard) Process(int, []Record, *Output) error { return nil }

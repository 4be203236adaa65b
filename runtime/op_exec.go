package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// execOp runs a program once per subtask. Input records go to its stdin as
// JSON lines; every JSON object line it writes to stdout is emitted; its
// stderr goes to the log. Without inputs it is a source (stdin is closed at
// once). The subtask fails if the program exits non-zero, stops reading its
// input early, or writes a line that is not a JSON object.
type execOp struct {
	command string
	args    []string

	log    *slog.Logger
	cmd    *exec.Cmd
	stderr *tailWriter
	in     chan []Record
	inOpen bool
	out    chan []Record
	done   chan struct{} // closed by Close: goroutines stop sending
	wdone  chan struct{} // writer ended
	werr   error         // writer error (read after wdone)
	rerr   error         // reader error (read after out is closed)
	wg     sync.WaitGroup
	waited bool
}

func newExec(p jobgraph.Params) Operator {
	e := &execOp{command: p.StringOr("command", "")}
	e.args, _, _ = p.Strings("args")
	return e
}

func (e *execOp) Open(ctx *OpContext) error {
	e.log = ctx.Logger.With("command", e.command)
	e.cmd = exec.Command(e.command, e.args...)
	e.cmd.WaitDelay = 2 * time.Second
	e.stderr = &tailWriter{log: e.log}
	e.cmd.Stderr = e.stderr
	stdin, err := e.cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := e.cmd.Start(); err != nil {
		return err
	}
	e.in, e.inOpen = make(chan []Record, 2), true
	e.out = make(chan []Record, 4)
	e.done = make(chan struct{})
	e.wdone = make(chan struct{})
	e.wg.Add(2)
	go e.write(stdin)
	go e.read(stdout)
	return nil
}

func (e *execOp) write(stdin io.WriteCloser) {
	defer e.wg.Done()
	defer close(e.wdone)
	w := bufio.NewWriterSize(stdin, 64<<10)
	var enc jsonWriter
	var line []byte
	for batch := range e.in {
		if e.werr != nil {
			continue // drain until closed
		}
		for _, r := range batch {
			line = enc.appendRecord(line[:0], r)
			if _, e.werr = w.Write(line); e.werr != nil {
				break
			}
		}
		if e.werr == nil && len(e.in) == 0 {
			e.werr = w.Flush()
		}
	}
	if e.werr == nil {
		e.werr = w.Flush()
	}
	if err := stdin.Close(); e.werr == nil {
		e.werr = err
	}
}

func (e *execOp) read(stdout io.Reader) {
	defer e.wg.Done()
	defer close(e.out)
	r := bufio.NewReaderSize(stdout, 64<<10)
	var batch []Record
	send := func() bool {
		if len(batch) == 0 {
			return true
		}
		select {
		case e.out <- batch:
			batch = nil
			return true
		case <-e.done:
			return false
		}
	}
	for n := 1; ; n++ {
		b, _, err := readLine(r)
		if b = bytes.TrimSpace(b); len(b) > 0 {
			rec, perr := parseJSONRecord(b)
			if perr != nil {
				e.rerr = fmt.Errorf("exec %s: stdout line %d is not a JSON object: %w", e.command, n, perr)
				io.Copy(io.Discard, r)
				return
			}
			batch = append(batch, rec)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				e.rerr = err
			}
			send()
			return
		}
		if (len(batch) >= 256 || r.Buffered() == 0) && !send() {
			return
		}
	}
}

func (e *execOp) Async() <-chan []Record { return e.out }

// checkpointUnsupported: records written to the program may not have
// produced their output yet at a barrier, so exec cannot snapshot.
func (e *execOp) checkpointUnsupported() string {
	return "exec " + e.command + " cannot take snapshots (records may be inside the process)"
}

func (e *execOp) Process(_ int, recs []Record, out *Output) error {
	batch := slices.Clone(recs)
	for {
		select {
		case e.in <- batch:
			return nil
		case produced, ok := <-e.out:
			if !ok {
				e.out = nil // the loop will see AsyncDone via its own select
				return e.exitError("stopped while input was still coming")
			}
			for _, r := range produced {
				if err := out.Emit(r); err != nil {
					return err
				}
			}
		case <-e.wdone:
			return e.exitError(fmt.Sprintf("stopped reading its input (%v)", e.werr))
		}
	}
}

// Finish closes the program's stdin; the loop then drains its stdout.
func (e *execOp) Finish(*Output) error {
	if e.inOpen {
		e.inOpen = false
		close(e.in)
	}
	return nil
}

// AsyncDone runs when stdout is closed: the program must exit with 0.
func (e *execOp) AsyncDone() error {
	if e.rerr != nil {
		return e.rerr
	}
	if e.inOpen {
		return e.exitError("closed its output while input was still coming")
	}
	<-e.wdone
	if err := e.wait(); err != nil {
		return e.exitError(err.Error())
	}
	if e.werr != nil && !errors.Is(e.werr, io.ErrClosedPipe) {
		return fmt.Errorf("exec %s: writing its input: %w", e.command, e.werr)
	}
	return nil
}

func (e *execOp) wait() error {
	if e.waited {
		return nil
	}
	e.waited = true
	return e.cmd.Wait()
}

func (e *execOp) exitError(what string) error {
	msg := fmt.Sprintf("exec %s %s", e.command, what)
	if !e.waited && e.cmd.ProcessState == nil {
		e.cmd.Process.Kill()
		if err := e.wait(); err != nil {
			msg += ": " + err.Error()
		}
	}
	if tail := e.stderr.tail(); tail != "" {
		msg += "; stderr: " + tail
	}
	return errors.New(msg)
}

// Close kills the program if it still runs and waits for its goroutines.
func (e *execOp) Close() error {
	if e.cmd == nil || e.cmd.Process == nil {
		return nil
	}
	close(e.done)
	if e.inOpen {
		e.inOpen = false
		close(e.in)
	}
	if !e.waited {
		e.cmd.Process.Kill()
		e.wait()
	}
	e.wg.Wait()
	return nil
}

// tailWriter logs a program's stderr line by line and keeps its last bytes
// for failure messages.
type tailWriter struct {
	log  *slog.Logger
	mu   sync.Mutex
	part []byte
	last []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, p...)
	for {
		i := bytes.IndexByte(t.part, '\n')
		if i < 0 {
			break
		}
		t.log.Warn("exec stderr", "line", string(t.part[:i]))
		t.part = t.part[i+1:]
	}
	t.last = append(t.last, p...)
	if len(t.last) > 512 {
		t.last = t.last[len(t.last)-512:]
	}
	return len(p), nil
}

func (t *tailWriter) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.last))
}

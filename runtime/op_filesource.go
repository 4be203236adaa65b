package runtime

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// fileSource reads JSON lines (one object per line) from a file or from the
// files of a directory under the input directory.
//
// A directory: every file (sorted by name, hidden files skipped) is a split
// with a byte offset; file j belongs to subtask j mod p. Its state is the
// offset per file name (-1 once read), restored by union: after a restore
// at any parallelism each file continues where its old owner stopped.
//
// A single file: its lines are divided into S = maxParallelism splits like
// key groups (line L is in split L mod S; subtask i owns the splits in
// KeyGroupRangeForOperator). The state per split is the line (and its byte
// offset) from which its lines have not been emitted yet.
type fileSource struct {
	path string
	ctx  *OpContext
	root *os.Root

	dir   bool
	files map[string]int64 // directory: owned file -> next byte offset (-1: done)
	lines fileSplits       // single file
	// reader position in the single file: next line and its offset (-1:
	// not started).
	posLine, posOff int64
}

type fileSplits struct {
	Start int     `json:"start"`
	Line  []int64 `json:"line"`
	Off   []int64 `json:"off"`
}

type fileSourceState struct {
	Files map[string]int64 `json:"files,omitempty"`
	Lines *fileSplits      `json:"lines,omitempty"`
}

func newFileSource(p jobgraph.Params) SourceOperator {
	return &fileSource{path: p.StringOr("path", "")}
}

func (f *fileSource) Open(ctx *OpContext) error {
	f.ctx = ctx
	root, err := os.OpenRoot(ctx.InputDir)
	if err != nil {
		return err
	}
	f.root = root
	st, err := f.root.Stat(f.path)
	if err != nil {
		return err
	}
	f.posLine = -1
	if f.dir = st.IsDir(); f.dir {
		files, err := f.listFiles()
		if err != nil {
			return err
		}
		f.files = map[string]int64{}
		for j := ctx.Subtask; j < len(files); j += ctx.Parallelism {
			f.files[files[j]] = 0
		}
		return nil
	}
	kgs := ctx.KeyGroups
	f.lines = fileSplits{Start: kgs.Start, Line: make([]int64, kgs.Len()), Off: make([]int64, kgs.Len())}
	return nil // every split from line 0, byte 0
}

func (f *fileSource) listFiles() ([]string, error) {
	entries, err := fs.ReadDir(f.root.FS(), f.path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			files = append(files, path.Join(f.path, e.Name()))
		}
	}
	sort.Strings(files)
	return files, nil
}

func (f *fileSource) Close() error {
	if f.root != nil {
		return f.root.Close()
	}
	return nil
}

func (f *fileSource) unionRestore() bool { return f.dir }

func (f *fileSource) snapshotState(*Checkpoint) ([]byte, error) {
	if f.dir {
		return json.Marshal(fileSourceState{Files: f.files})
	}
	if f.posLine >= 0 {
		for x := range f.lines.Line {
			if f.lines.Line[x] < f.posLine {
				f.lines.Line[x], f.lines.Off[x] = f.posLine, f.posOff
			}
		}
	}
	return json.Marshal(fileSourceState{Lines: &f.lines})
}

func (f *fileSource) restoreState(old []oldSubtask) error {
	for _, o := range old {
		var st fileSourceState
		if err := json.Unmarshal(o.OpState, &st); err != nil {
			return fmt.Errorf("file-source state of subtask %d: %w", o.Subtask, err)
		}
		if f.dir {
			for name, off := range st.Files {
				if _, mine := f.files[name]; mine {
					f.files[name] = off
				}
			}
			continue
		}
		if st.Lines == nil {
			return errors.New("file-source: the snapshot read a directory, the path is a file now")
		}
		for i := range st.Lines.Line {
			if x := st.Lines.Start + i - f.lines.Start; x >= 0 && x < len(f.lines.Line) {
				f.lines.Line[x], f.lines.Off[x] = st.Lines.Line[i], st.Lines.Off[i]
			}
		}
	}
	return nil
}

func (f *fileSource) Run(out *Output) error {
	if !f.dir {
		return f.readSplits(out)
	}
	names := make([]string, 0, len(f.files))
	for name := range f.files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := f.readFile(name, out); err != nil {
			return err
		}
	}
	return nil
}

// readFile emits the lines of one file of a directory from its offset.
func (f *fileSource) readFile(name string, out *Output) error {
	off := f.files[name]
	if off < 0 {
		return nil
	}
	file, err := f.root.Open(name)
	if err != nil {
		return err
	}
	defer file.Close()
	if _, err := file.Seek(off, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(file, 64<<10)
	for {
		b, n, err := readLine(r)
		off += int64(n)
		if b = bytes.TrimSpace(b); len(b) > 0 {
			rec, perr := parseJSONRecord(b)
			if perr != nil {
				return fmt.Errorf("%s at byte %d: %w", name, off-int64(n), perr)
			}
			f.files[name] = off
			if err := out.Emit(rec); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			f.files[name] = -1
			return nil
		}
		if err != nil {
			return err
		}
		f.files[name] = off
	}
}

// readSplits reads the single file from the earliest split position and
// emits the lines of the owned splits not emitted yet.
func (f *fileSource) readSplits(out *Output) error {
	sp := &f.lines
	if len(sp.Line) == 0 {
		return nil
	}
	first := 0
	for x := range sp.Line {
		if sp.Line[x] < sp.Line[first] {
			first = x
		}
	}
	line, off := sp.Line[first], sp.Off[first]
	file, err := f.root.Open(f.path)
	if err != nil {
		return err
	}
	defer file.Close()
	if _, err := file.Seek(off, io.SeekStart); err != nil {
		return err
	}
	// Split k's lines before its anchor line were emitted earlier (anchors
	// differ after a restore at another parallelism).
	S := int64(f.ctx.MaxParallelism)
	r := bufio.NewReaderSize(file, 64<<10)
	f.posLine, f.posOff = line, off
	for ; ; line++ {
		b, n, err := readLine(r)
		off += int64(n)
		k := int(line % S)
		x := k - sp.Start
		if x >= 0 && x < len(sp.Line) && line >= sp.Line[x] {
			if b = bytes.TrimSpace(b); len(b) > 0 {
				rec, perr := parseJSONRecord(b)
				if perr != nil {
					return fmt.Errorf("%s line %d: %w", f.path, line+1, perr)
				}
				f.posLine, f.posOff = line+1, off
				if err := out.Emit(rec); err != nil {
					return err
				}
			}
		}
		f.posLine, f.posOff = line+1, off
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readLine returns the next line without its newline (any length) and the
// number of bytes consumed.
func readLine(r *bufio.Reader) ([]byte, int, error) {
	b, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append([]byte(nil), b...)
		for errors.Is(err, bufio.ErrBufferFull) {
			b, err = r.ReadSlice('\n')
			long = append(long, b...)
		}
		b = long
	}
	return bytes.TrimSuffix(b, []byte("\n")), len(b), err
}

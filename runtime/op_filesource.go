package runtime

import (
	"bufio"
	"bytes"
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
// files of a directory under the input directory. With a directory, subtask
// k reads files k, k+p, ... (sorted by name, hidden files skipped); with a
// single file, subtask k reads lines k, k+p, ...
type fileSource struct {
	path string
	ctx  *OpContext
	root *os.Root
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
	return nil
}

func (f *fileSource) Close() error {
	if f.root != nil {
		return f.root.Close()
	}
	return nil
}

func (f *fileSource) Run(out *Output) error {
	p, k := f.ctx.Parallelism, f.ctx.Subtask
	st, err := f.root.Stat(f.path)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return f.readFile(f.path, p, k, out)
	}
	entries, err := fs.ReadDir(f.root.FS(), f.path)
	if err != nil {
		return err
	}
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			files = append(files, path.Join(f.path, e.Name()))
		}
	}
	sort.Strings(files)
	for i := k; i < len(files); i += p {
		if err := f.readFile(files[i], 1, 0, out); err != nil {
			return err
		}
	}
	return nil
}

// readFile emits lines i of the file with i % every == mine.
func (f *fileSource) readFile(name string, every, mine int, out *Output) error {
	file, err := f.root.Open(name)
	if err != nil {
		return err
	}
	defer file.Close()
	r := bufio.NewReaderSize(file, 64<<10)
	for line := 0; ; line++ {
		b, err := readLine(r)
		if len(b) > 0 && line%every == mine {
			if b = bytes.TrimSpace(b); len(b) > 0 {
				rec, perr := parseJSONRecord(b)
				if perr != nil {
					return fmt.Errorf("%s line %d: %w", name, line+1, perr)
				}
				if err := out.Emit(rec); err != nil {
					return err
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readLine returns the next line without its newline (any length).
func readLine(r *bufio.Reader) ([]byte, error) {
	b, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append([]byte(nil), b...)
		for errors.Is(err, bufio.ErrBufferFull) {
			b, err = r.ReadSlice('\n')
			long = append(long, b...)
		}
		b = long
	}
	return bytes.TrimSuffix(b, []byte("\n")), err
}

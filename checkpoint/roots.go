package checkpoint

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// Roots is a Storage over several directories: checkpoints under one,
// savepoints under the operator's allowed savepoint roots. A name's first
// element picks the directory ("checkpoints/<job>/chk-7/src-0.state"), so
// a name can never reach outside the configured roots.
type Roots struct {
	dirs map[string]*DirStorage
}

// NewRoots maps root names onto absolute directories.
func NewRoots(named map[string]string) *Roots {
	r := &Roots{dirs: map[string]*DirStorage{}}
	for name, dir := range named {
		r.dirs[name] = NewDirStorage(filepath.Clean(dir))
	}
	return r
}

func (r *Roots) split(name string) (*DirStorage, string, error) {
	clean, err := CleanName(name)
	if err != nil {
		return nil, "", err
	}
	root, rest, _ := strings.Cut(clean, "/")
	d, ok := r.dirs[root]
	if !ok || rest == "" {
		return nil, "", fmt.Errorf("%q is not under a configured storage root", name)
	}
	return d, rest, nil
}

// Write implements Storage.
func (r *Roots) Write(ctx context.Context, name string, data []byte) error {
	d, rest, err := r.split(name)
	if err != nil {
		return err
	}
	return d.Write(ctx, rest, data)
}

// Read implements Storage.
func (r *Roots) Read(ctx context.Context, name string) ([]byte, error) {
	d, rest, err := r.split(name)
	if err != nil {
		return nil, err
	}
	return d.Read(ctx, rest)
}

// DeleteDir implements Storage.
func (r *Roots) DeleteDir(ctx context.Context, dir string) error {
	d, rest, err := r.split(dir)
	if err != nil {
		return err
	}
	return d.DeleteDir(ctx, rest)
}

// Path turns a storage name into the absolute path users see.
func (r *Roots) Path(name string) string {
	d, rest, err := r.split(name)
	if err != nil {
		return ""
	}
	return filepath.Join(d.Root(), filepath.FromSlash(rest))
}

// Locate turns an absolute directory into a storage name, if it lies under
// one of the roots (the longest matching root wins).
func (r *Roots) Locate(abs string) (string, bool) {
	abs = filepath.Clean(strings.TrimPrefix(abs, "file://"))
	if !filepath.IsAbs(abs) {
		return "", false
	}
	names := make([]string, 0, len(r.dirs))
	for n := range r.dirs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return len(r.dirs[names[i]].Root()) > len(r.dirs[names[j]].Root()) })
	for _, n := range names {
		root := r.dirs[n].Root()
		rel, err := filepath.Rel(root, abs)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			continue
		}
		if rel == "." {
			return n, true
		}
		name, err := CleanName(n + "/" + filepath.ToSlash(rel))
		if err != nil {
			continue
		}
		return name, true
	}
	return "", false
}

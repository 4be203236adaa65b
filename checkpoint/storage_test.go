package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func listAll(t *testing.T, root string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			names = append(names, rel)
		}
		return nil
	})
	return names
}

func TestWriteReadDelete(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "chk")
	s := NewDirStorage(root)
	data := bytes.Repeat([]byte("abc"), 1<<20) // 3 MB: several chunks
	if err := s.Write(ctx, "job1/chk-1/src-0.state", data); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, "job1/./chk-1/src-0.state")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	// Overwrite: the new content replaces the old one as a whole.
	if err := s.Write(ctx, "job1/chk-1/src-0.state", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Read(ctx, "job1/chk-1/src-0.state"); string(got) != "new" {
		t.Fatalf("got %q", got)
	}
	if names := listAll(t, root); len(names) != 1 {
		t.Fatalf("files %v, want just the state file (no temp files)", names)
	}
	if err := s.DeleteDir(ctx, "job1/chk-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(ctx, "job1/chk-1/src-0.state"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read after delete: %v", err)
	}
	if err := s.DeleteDir(ctx, "job1/chk-99"); err != nil {
		t.Fatalf("deleting a missing dir: %v", err)
	}
}

// A write that fails midway leaves nothing behind: no partial file under
// the name, no temp file, and an earlier version stays intact.
func TestWriteFailureLeavesNothing(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := NewDirStorage(root)
	if err := s.Write(ctx, "j/chk-1/a-0.state", []byte("old")); err != nil {
		t.Fatal(err)
	}
	s.failAfter = 3 << 20
	data := bytes.Repeat([]byte("x"), 8<<20)
	if err := s.Write(ctx, "j/chk-1/a-0.state", data); err == nil {
		t.Fatal("injected failure not reported")
	}
	if err := s.Write(ctx, "j/chk-2/a-0.state", data); err == nil {
		t.Fatal("injected failure not reported")
	}
	if got, _ := s.Read(ctx, "j/chk-1/a-0.state"); string(got) != "old" {
		t.Fatalf("earlier version damaged: %q", got[:min(len(got), 10)])
	}
	if _, err := s.Read(ctx, "j/chk-2/a-0.state"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("partial file visible: %v", err)
	}
	if names := listAll(t, root); len(names) != 1 {
		t.Fatalf("files %v, want only the first version", names)
	}
	// A cancelled context also aborts without a trace.
	s.failAfter = 0
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Write(cctx, "j/chk-3/a-0.state", data); err == nil {
		t.Fatal("write with a cancelled context succeeded")
	}
	if names := listAll(t, root); len(names) != 1 {
		t.Fatalf("files %v after a cancelled write", names)
	}
}

func TestNamesStayInRoot(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	root := filepath.Join(base, "root")
	os.MkdirAll(root, 0o755)
	s := NewDirStorage(root)
	for _, name := range []string{"", ".", "..", "../x", "a/../../x", "/etc/passwd", "a/../..", `a\..\..\x`} {
		if err := s.Write(ctx, name, []byte("x")); err == nil {
			t.Errorf("Write(%q) accepted", name)
		}
		if _, err := s.Read(ctx, name); err == nil {
			t.Errorf("Read(%q) accepted", name)
		}
		if err := s.DeleteDir(ctx, name); err == nil {
			t.Errorf("DeleteDir(%q) accepted", name)
		}
	}
	// A symlink inside the root that points out of it is not followed.
	os.WriteFile(filepath.Join(base, "secret"), []byte("s"), 0o644)
	os.Symlink(base, filepath.Join(root, "link"))
	if _, err := s.Read(ctx, "link/secret"); err == nil {
		t.Error("read through a symlink out of the root")
	}
	if err := s.Write(ctx, "link/evil", []byte("x")); err == nil {
		t.Error("wrote through a symlink out of the root")
	}
	// Cleaned names inside the root are fine.
	if err := s.Write(ctx, "a/../b/./c.state", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(ctx, "b/c.state"); err != nil || string(got) != "ok" {
		t.Fatalf("got %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(base, "evil")); err == nil || !strings.Contains(err.Error(), "no such") {
		t.Errorf("file escaped the root: %v", err)
	}
}

// Package checkpoint stores checkpoint and savepoint snapshots. Storage is
// deliberately small (write a whole object atomically, read it, delete a
// checkpoint's directory) so that an object store can implement it later;
// DirStorage keeps them in a local (or mounted shared) directory.
package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Storage is where snapshots live. Names are slash-separated and relative
// to the storage root.
type Storage interface {
	// Write stores data at name atomically: temp file, fsync, rename, fsync
	// dir. A torn or partial file is never visible under name.
	Write(ctx context.Context, name string, data []byte) error
	// Read returns the data stored at name (an error wrapping
	// fs.ErrNotExist when there is none).
	Read(ctx context.Context, name string) ([]byte, error)
	// DeleteDir removes a checkpoint's directory (pruning). A missing
	// directory is not an error.
	DeleteDir(ctx context.Context, dir string) error
}

// DirStorage is a Storage in a local directory. Every name is cleaned and
// must stay inside the root: absolute names, names that leave the root
// (..) and symbolic links leading out of it are rejected.
type DirStorage struct {
	root string
	// failAfter, when > 0, makes Write fail after writing that many bytes
	// of the temp file (tests of atomicity).
	failAfter int
}

// NewDirStorage returns a storage rooted at root (created on first write).
func NewDirStorage(root string) *DirStorage { return &DirStorage{root: root} }

// Root is the storage's directory.
func (s *DirStorage) Root() string { return s.root }

// CleanName validates a storage name and returns its cleaned form.
func CleanName(name string) (string, error) {
	if name == "" {
		return "", errors.New("checkpoint storage: empty name")
	}
	if strings.Contains(name, "\\") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("checkpoint storage: invalid name %q", name)
	}
	if path.IsAbs(name) || filepath.IsAbs(name) {
		return "", fmt.Errorf("checkpoint storage: name %q is absolute", name)
	}
	c := path.Clean(name)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") || !filepath.IsLocal(filepath.FromSlash(c)) {
		return "", fmt.Errorf("checkpoint storage: name %q leaves the storage root", name)
	}
	return c, nil
}

func (s *DirStorage) open(create bool) (*os.Root, error) {
	if s.root == "" {
		return nil, errors.New("checkpoint storage: no root directory")
	}
	if create {
		if err := os.MkdirAll(s.root, 0o755); err != nil {
			return nil, err
		}
	}
	return os.OpenRoot(s.root)
}

const writeChunk = 1 << 20

// Write implements Storage.
func (s *DirStorage) Write(ctx context.Context, name string, data []byte) (err error) {
	name, err = CleanName(name)
	if err != nil {
		return err
	}
	root, err := s.open(true)
	if err != nil {
		return err
	}
	defer root.Close()
	dir := path.Dir(name)
	if dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := path.Join(dir, "."+path.Base(name)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			root.Remove(tmp)
		}
	}()
	for off := 0; off < len(data); off += writeChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := data[off:min(off+writeChunk, len(data))]
		if s.failAfter > 0 && off+len(chunk) > s.failAfter {
			f.Write(chunk[:max(0, s.failAfter-off)])
			return errors.New("checkpoint storage: injected write failure")
		}
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := root.Rename(tmp, name); err != nil {
		return err
	}
	return syncDir(root, dir)
}

func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Read implements Storage.
func (s *DirStorage) Read(ctx context.Context, name string) ([]byte, error) {
	name, err := CleanName(name)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	root, err := s.open(false)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.ReadFile(name)
}

// DeleteDir implements Storage.
func (s *DirStorage) DeleteDir(ctx context.Context, dir string) error {
	dir, err := CleanName(dir)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	root, err := s.open(false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.RemoveAll(dir); err != nil {
		return err
	}
	return syncDir(root, path.Dir(dir))
}

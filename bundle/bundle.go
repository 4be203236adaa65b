// Package bundle reads and stores job bundles: zip archives (as a Java jar
// is) holding job.json, or several *.job.json entries, and any files the job
// uses. Bundles are stored by the sha256 of their bytes; the cluster keeps
// their metadata in Raft and their bytes on a quorum of nodes.
package bundle

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Entry is a job spec inside a bundle, Flink's "entry class".
type Entry struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// Limits bound what a bundle may hold, against zip bombs.
type Limits struct {
	// MaxUncompressed caps the sum of all entries' uncompressed sizes.
	MaxUncompressed int64
	// MaxEntries caps the number of entries.
	MaxEntries int
}

// DefaultLimits allow 1 GiB uncompressed in 10,000 entries.
var DefaultLimits = Limits{MaxUncompressed: 1 << 30, MaxEntries: 10000}

// Error is a problem with a bundle the uploader can fix (a 400).
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func bad(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// Inspect checks a bundle's structure and returns its job entries. It
// reads only the job specs; nothing is extracted.
func Inspect(data []byte, lim Limits) ([]Entry, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, bad("the upload is not a zip archive (a jar): %v", err)
	}
	if len(zr.File) > lim.MaxEntries {
		return nil, bad("the bundle has %d entries; at most %d are allowed", len(zr.File), lim.MaxEntries)
	}
	var total uint64
	var entries []Entry
	for _, f := range zr.File {
		if err := checkEntryName(f.Name); err != nil {
			return nil, err
		}
		total += f.UncompressedSize64
		if total > uint64(lim.MaxUncompressed) {
			return nil, bad("the bundle expands to more than %d bytes", lim.MaxUncompressed)
		}
		if isSpec(f.Name) {
			entries = append(entries, Entry{Name: f.Name, Description: describe(f)})
		}
	}
	if len(entries) == 0 {
		return nil, bad("the bundle holds no job.json (nor any *.job.json)")
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	return entries, nil
}

var safeSegment = regexp.MustCompile(`^[A-Za-z0-9._+@=-]+$`)

// checkEntryName refuses names that could leave a directory if the bundle
// were ever extracted (Flink's CVE-2020-17518 was such a write).
func checkEntryName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, `\`) || strings.Contains(name, "\x00") {
		return bad("bundle entry %q has an absolute or malformed name", name)
	}
	for _, seg := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if seg == ".." || seg == "." || seg == "" {
			return bad("bundle entry %q leaves the bundle's directory", name)
		}
		if !safeSegment.MatchString(seg) {
			return bad("bundle entry %q has characters outside [A-Za-z0-9._+@=-]", name)
		}
	}
	if path.Clean(name) != strings.TrimSuffix(name, "/") {
		return bad("bundle entry %q is not a clean path", name)
	}
	return nil
}

func isSpec(name string) bool {
	return name == "job.json" || strings.HasSuffix(name, ".job.json")
}

func describe(f *zip.File) string {
	if f.Comment != "" {
		return f.Comment
	}
	return "job spec " + f.Name
}

// Spec returns the bytes of one job entry, read with a size cap that does
// not trust the archive's own header.
func Spec(data []byte, entry string, lim Limits) ([]byte, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, bad("not a zip archive: %v", err)
	}
	for _, f := range zr.File {
		if f.Name != entry {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return nil, bad("cannot open %s: %v", entry, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, lim.MaxUncompressed+1))
		if err != nil {
			return nil, bad("cannot read %s: %v", entry, err)
		}
		if int64(len(b)) > lim.MaxUncompressed {
			return nil, bad("%s expands to more than %d bytes", entry, lim.MaxUncompressed)
		}
		if !json.Valid(b) {
			return nil, bad("%s is not valid JSON", entry)
		}
		return b, nil
	}
	return nil, bad("the bundle has no entry %q", entry)
}

// DefaultEntry picks job.json, else the only *.job.json.
func DefaultEntry(entries []Entry) (string, error) {
	for _, e := range entries {
		if e.Name == "job.json" {
			return e.Name, nil
		}
	}
	if len(entries) == 1 {
		return entries[0].Name, nil
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name
	}
	return "", bad("the bundle holds several jobs (%s): choose one with entry-class", strings.Join(names, ", "))
}

// Sum is the hex sha256 of data, a bundle's storage key.
func Sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

var validUploadName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// CheckUploadName refuses file names with path separators or anything that
// is not a plain name ending in .jar or .zip.
func CheckUploadName(name string) error {
	if strings.ContainsAny(name, `/\`) || name == ".." || !validUploadName.MatchString(name) {
		return bad("file name %q must be a plain name (letters, digits, '.', '_', '+', '-') without path separators", name)
	}
	if ext := strings.ToLower(filepath.Ext(name)); ext != ".jar" && ext != ".zip" {
		return bad("file name %q must end in .jar or .zip", name)
	}
	return nil
}

// Store keeps bundle bytes on this node's disk, by sha256.
type Store struct{ dir string }

// NewStore uses dir, creating it.
func NewStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	return &Store{dir: dir}, nil
}

var shaPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidSum tells whether s is a lowercase hex sha256.
func ValidSum(s string) bool { return shaPattern.MatchString(s) }

func (s *Store) path(sum string) string { return filepath.Join(s.dir, sum+".zip") }

// Put writes data atomically (temp file, fsync, rename, fsync of the
// directory) after checking it matches sum; a torn write is never visible.
func (s *Store) Put(sum string, data []byte) error {
	if !ValidSum(sum) {
		return bad("%q is not a sha256", sum)
	}
	if got := Sum(data); got != sum {
		return bad("content hashes to %s, not %s", got, sum)
	}
	if _, err := os.Stat(s.path(sum)); err == nil {
		return nil
	}
	tmp, err := os.CreateTemp(s.dir, ".upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.path(sum)); err != nil {
		return err
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ErrMissing means this node does not hold the bundle.
var ErrMissing = errors.New("bundle not stored on this node")

// Get reads a bundle and verifies its hash.
func (s *Store) Get(sum string) ([]byte, error) {
	if !ValidSum(sum) {
		return nil, bad("%q is not a sha256", sum)
	}
	data, err := os.ReadFile(s.path(sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrMissing
	}
	if err != nil {
		return nil, err
	}
	if Sum(data) != sum {
		return nil, fmt.Errorf("stored bundle %s is corrupt", sum)
	}
	return data, nil
}

// Has tells whether the bundle is stored here.
func (s *Store) Has(sum string) bool {
	_, err := os.Stat(s.path(sum))
	return err == nil
}

// Delete removes a bundle's bytes.
func (s *Store) Delete(sum string) error {
	if !ValidSum(sum) {
		return bad("%q is not a sha256", sum)
	}
	err := os.Remove(s.path(sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// Two-phase-commit file names of a file sink (jobs with checkpointing):
//
//	in progress  .part-<subtask>-<attempt>-<seq>.jsonl.inprogress
//	pending      .part-<subtask>-<attempt>-<seq>.c<checkpoint>.pending
//	committed    part-<subtask>-<attempt>-<seq>.jsonl
//
// A part becomes pending at the barrier of checkpoint <checkpoint> (or with
// FinalCheckpointID when the input ends) and is committed by renaming once
// that checkpoint is complete. <attempt>-<seq> is the part number: unique
// across attempts, and <seq> skips numbers present in the directory.
var (
	pendingRe = regexp.MustCompile(`^\.part-(\d+)-(\d+)-(\d+)\.c(\d+)\.pending$`)
	partNumRe = regexp.MustCompile(`^\.?part-(\d+)-(\d+)-(\d+)\.`)
)

func pendingName(subtask, attempt int, seq int64, id int64) string {
	return fmt.Sprintf(".part-%d-%d-%d.c%d.pending", subtask, attempt, seq, id)
}

type pendingFile struct {
	name, committed string
	attempt         int
	id              int64
}

func parsePending(name string) (pendingFile, bool) {
	m := pendingRe.FindStringSubmatch(name)
	if m == nil {
		return pendingFile{}, false
	}
	att, err1 := strconv.Atoi(m[2])
	id, err2 := strconv.ParseInt(m[4], 10, 64)
	if err1 != nil || err2 != nil {
		return pendingFile{}, false
	}
	return pendingFile{name: name, committed: fmt.Sprintf("part-%s-%s-%s.jsonl", m[1], m[2], m[3]), attempt: att, id: id}, true
}

// sinkDirs opens the directory of every file-sink vertex of g under
// outputDir (those that exist).
func sinkDirs(g *jobgraph.JobGraph, outputDir string) ([]*os.Root, error) {
	if g == nil || outputDir == "" {
		return nil, nil
	}
	base, err := os.OpenRoot(outputDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	defer base.Close()
	var roots []*os.Root
	seen := map[string]bool{}
	for _, v := range g.Vertices {
		if v.Operator != "file-sink" {
			continue
		}
		p := v.Params.StringOr("path", "")
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		r, err := base.OpenRoot(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			for _, r := range roots {
				r.Close()
			}
			return nil, err
		}
		roots = append(roots, r)
	}
	return roots, nil
}

// CommitSinks renames the pending output of the job's file sinks written by
// attempt with checkpoint id <= upTo into committed part files, in this
// node's output directory. It is idempotent.
func CommitSinks(g *jobgraph.JobGraph, outputDir string, attempt int, upTo int64) error {
	roots, err := sinkDirs(g, outputDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range roots {
		errs = append(errs, commitDir(r, attempt, upTo))
		r.Close()
	}
	return errors.Join(errs...)
}

func commitDir(r *os.Root, attempt int, upTo int64) error {
	entries, err := fs.ReadDir(r.FS(), ".")
	if err != nil {
		return err
	}
	renamed := false
	for _, e := range entries {
		p, ok := parsePending(e.Name())
		if !ok || p.attempt != attempt || p.id > upTo {
			continue
		}
		if err := r.Rename(p.name, p.committed); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		renamed = true
	}
	if renamed {
		return syncRoot(r)
	}
	return nil
}

// recoverSinks prepares the job's sink directories on this node for a
// restore from (r.Attempt, r.CheckpointID): pending output of r.Attempt up
// to the checkpoint is committed (the checkpoint completed; its
// notification may have been lost); every in-progress file, and pending
// output of other attempts or of later checkpoints, is deleted (it is
// recomputed after the restore).
func recoverSinks(g *jobgraph.JobGraph, outputDir string, r *Restore) error {
	roots, err := sinkDirs(g, outputDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, root := range roots {
		errs = append(errs, recoverDir(root, r))
		root.Close()
	}
	return errors.Join(errs...)
}

func recoverDir(root *os.Root, r *Restore) error {
	if err := commitDir(root, r.Attempt, r.CheckpointID); err != nil {
		return err
	}
	entries, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		name := e.Name()
		drop := false
		if p, ok := parsePending(name); ok {
			drop = p.attempt != r.Attempt || p.id > r.CheckpointID
		} else if len(name) > 0 && name[0] == '.' && len(name) > len(".inprogress") && name[len(name)-len(".inprogress"):] == ".inprogress" {
			drop = true
		}
		if drop {
			if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			removed = true
		}
	}
	if removed {
		return syncRoot(root)
	}
	return nil
}

func syncRoot(r *os.Root) error {
	d, err := r.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

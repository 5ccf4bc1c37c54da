package interchange

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gvdb/db"
	"gvdb/ingest"
)

// FollowPoll is how often a followed run directory is looked at.
const FollowPoll = 300 * time.Millisecond

// maxWarnings bounds the NaN/Inf warnings an import reports one by one.
const maxWarnings = 20

// WaitRunConfig reads dir's run.json; when it does not exist yet, it calls
// waiting once and polls until it appears or ctx ends (a training script
// that has not started writing).
func WaitRunConfig(ctx context.Context, dir string, waiting func()) (*RunConfig, error) {
	cfg, err := ReadRunConfig(dir)
	if err == nil || present(dir, "run.json") {
		return cfg, err
	}
	waiting()
	for err != nil && !present(dir, "run.json") {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped before run.json appeared; nothing was imported")
		case <-time.After(FollowPoll):
		}
		cfg, err = ReadRunConfig(dir)
	}
	return cfg, err
}

// Import ingests a run directory into a run's Recorder.
type Import struct {
	Dir    string
	Config *RunConfig
	Run    *db.Run
	// Follow keeps ingesting new snapshots and completed scalar lines
	// until the file DONE appears (what was completed before it is
	// ingested too) or ctx is cancelled.
	Follow bool
	// Snapshot, when set, is called after each snapshot is stored, with
	// the number stored so far and, without Follow, the total.
	Snapshot func(step int64, examples, stored, total int)
	// Warn receives warnings (NaN or Inf gradients: the first 20, then a
	// count).
	Warn func(string)
}

// ImportResult is what an import stored and how it ended.
type ImportResult struct {
	Snapshots int
	// Last is the largest step seen (-1: none).
	Last int64
	// Status is the run's final status: complete, interrupted (ctx
	// cancelled) or failed.
	Status string
}

// Into ingests the directory: scalars, then snapshots in step order, once,
// or until DONE with Follow. It finishes the Recorder with the status; an
// error says why the import failed, and the run keeps what was stored.
func (im *Import) Into(ctx context.Context, rec *ingest.Recorder) (ImportResult, error) {
	warn := im.Warn
	if warn == nil {
		warn = func(string) {}
	}
	var (
		done       = map[int64]bool{}
		scalarOff  int64
		scalarLine int
		warned     int
	)
	res := ImportResult{Last: -1, Status: db.StatusComplete}
	// pass ingests what is complete now; final, when the writer has
	// finished (DONE, or a plain import), also refuses an unterminated
	// last scalar line rather than leave it behind.
	pass := func(final bool) error {
		lines, off, err := ReadScalars(im.Dir, scalarOff, scalarLine, final)
		for _, l := range lines {
			if serr := rec.Scalars(l.Step, l.Values); serr != nil {
				return serr
			}
			res.Last = max(res.Last, l.Step)
			scalarLine = l.Line
		}
		scalarOff = off
		if err != nil {
			return err
		}
		steps, err := Steps(im.Dir)
		if err != nil {
			return err
		}
		total := len(steps)
		if im.Follow {
			total = 0
		}
		for _, step := range steps {
			if done[step] {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			s, warnings, err := ReadSnapshot(filepath.Join(im.Dir, SnapshotDir(step)), im.Config, im.Run)
			if err != nil {
				return err
			}
			if s.Step != step {
				return fmt.Errorf("%s: manifest step %d", SnapshotDir(step), s.Step)
			}
			for _, w := range warnings {
				if warned < maxWarnings {
					warn(w)
				}
				warned++
			}
			if err := rec.Snapshot(ctx, s); err != nil {
				return err
			}
			done[step] = true
			res.Snapshots++
			res.Last = max(res.Last, step)
			if im.Snapshot != nil {
				im.Snapshot(step, s.Blocks[0].Block.N(), res.Snapshots, total)
			}
		}
		return nil
	}
	err := pass(!im.Follow)
	for err == nil && im.Follow {
		var finished bool
		if finished, err = exists(im.Dir, "DONE"); err != nil {
			break
		}
		if finished {
			err = pass(true) // what was completed before DONE
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(FollowPoll):
			err = pass(false)
		}
	}
	res.Status = ingest.StatusFor(err)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if warned > maxWarnings {
		warn(fmt.Sprintf("%d more NaN or Inf warnings not shown", warned-maxWarnings))
	}
	ferr := rec.Finish(res.Status, res.Last)
	if err != nil {
		return res, fmt.Errorf("%w (the run keeps the %d snapshots ingested before; status %s)", err, res.Snapshots, res.Status)
	}
	return res, ferr
}

// present reports whether dir/name exists, of any type (a link is not
// followed: ReadRunConfig then refuses it).
func present(dir, name string) bool {
	_, err := os.Lstat(filepath.Join(dir, name))
	return err == nil
}

package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gvdb/db"
)

// ScalarInterval is the longest a Recorder holds step scalars before
// writing them.
const ScalarInterval = 2 * time.Second

// Recorder records one training run into a store: it creates the run,
// streams its snapshots through a Writer and batches its step scalars, with
// a durability policy that bounds what a killed process loses to the
// snapshot in flight and ScalarInterval of scalars: each snapshot first
// makes the previous one and every scalar so far durable, and scalars are
// written at least every ScalarInterval (or 256 steps). It is the
// trainer's Sink.
type Recorder struct {
	d        *db.DB
	run      *db.Run
	w        *Writer
	pending  []db.ScalarRow
	lastSave time.Time
}

// Record creates run in d, its status running (a run that stays so was
// killed), replacing a run of the same name only when replace is set, and
// returns its Recorder.
func Record(d *db.DB, run *db.Run, replace bool, opts Options) (*Recorder, error) {
	if _, err := d.Run(run.Name); err == nil {
		if !replace {
			return nil, fmt.Errorf("run %q already exists in %s (replace it explicitly, e.g. --overwrite)", run.Name, d.Dir())
		}
		if err := d.DeleteRun(run.Name); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, db.ErrRunNotFound) {
		return nil, err
	}
	run.Status = db.StatusRunning
	if err := d.CreateRun(run); err != nil {
		return nil, err
	}
	w, err := NewWriter(d, run.Name, opts)
	if err != nil {
		return nil, err
	}
	return &Recorder{d: d, run: run, w: w, lastSave: time.Now()}, nil
}

// Snapshot makes everything before it durable, then hands s to the Writer.
// It refuses s with db.ErrNoSpace when the store's file system lacks room
// for it and the margin Badger needs (stop the run: Finish still has room
// to record it, and everything before s stays readable).
func (r *Recorder) Snapshot(ctx context.Context, s *Snapshot) error {
	if err := r.flushScalars(); err != nil {
		return err
	}
	if err := r.w.Flush(); err != nil {
		return err
	}
	if err := r.d.CheckSpace(s.bytes()); err != nil {
		return fmt.Errorf("snapshot at step %d: %w", s.Step, err)
	}
	return r.w.Write(ctx, s)
}

// Scalars records one step's scalars, written in batches.
func (r *Recorder) Scalars(step int64, vals map[string]float64) error {
	r.pending = append(r.pending, db.ScalarRow{Step: step, Values: vals})
	if len(r.pending) >= 256 || time.Since(r.lastSave) > ScalarInterval {
		return r.flushScalars()
	}
	return nil
}

func (r *Recorder) flushScalars() error {
	r.lastSave = time.Now()
	if len(r.pending) == 0 {
		return nil
	}
	err := r.d.PutScalars(r.run.Name, r.pending)
	r.pending = r.pending[:0]
	return err
}

// Stats returns what the Writer has committed.
func (r *Recorder) Stats() Stats { return r.w.Stats() }

// StatusFor is the status a run ends with after err: complete (nil),
// interrupted (a cancelled context, or a disk without room: what was
// committed is whole) or failed.
func StatusFor(err error) string {
	switch {
	case err == nil:
		return db.StatusComplete
	case errors.Is(err, context.Canceled), errors.Is(err, db.ErrNoSpace):
		return db.StatusInterrupted
	}
	return db.StatusFailed
}

// Finish keeps whatever was captured (it flushes the scalars and the
// Writer, whatever happened) and records the run's final status (db's
// StatusComplete, StatusInterrupted or StatusFailed; failed whenever
// saving fails) and steps, durably.
func (r *Recorder) Finish(status string, steps int64) error {
	err := errors.Join(r.flushScalars(), r.w.Close())
	if err != nil {
		status = db.StatusFailed
	}
	r.run.Status, r.run.Steps = status, steps
	err = errors.Join(err, r.d.UpdateRun(r.run), r.d.Sync())
	if err != nil {
		return fmt.Errorf("saving run %q: %w", r.run.Name, err)
	}
	return nil
}

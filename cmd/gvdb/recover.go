package main

import (
	"context"
	"fmt"

	"gvdb/db"
	"gvdb/query"
)

func init() {
	register("recover", "replay the log of a store whose writer was killed, keeping what it flushed", (*Main).recoverStore)
}

func (m *Main) recoverStore(ctx context.Context, args []string) error {
	fs := m.newFlags("recover [flags]", `Open a store for writing so that Badger replays its write-ahead log and
drops a torn tail left by a writer that was killed (reads refuse such a
store rather than change it). Every snapshot the writer had flushed is
kept; a snapshot in flight, never committed, stays invisible. Runs the
writer left marked running are marked killed. Prints what the store holds
afterwards.`, `  gvdb recover
  gvdb recover --db ./sweep`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	d, err := openWriter(*dir, false)
	if err != nil {
		return err
	}
	defer d.Close()
	runs, err := d.Runs()
	if err != nil {
		return err
	}
	t := &query.Table{Columns: []string{"run", "status", "snapshots", "last_step"}}
	for _, r := range runs {
		if r.Status == db.StatusRunning {
			// Its steps are those it recorded, not those it planned.
			last := int64(-1)
			if err := d.Scalars(r, db.AllSteps, func(row db.ScalarRow) error {
				if _, ok := row.Values["loss"]; ok {
					last = row.Step
				}
				return nil
			}); err != nil {
				return err
			}
			r.Status, r.Steps = db.StatusKilled, last+1
			if err := d.UpdateRun(r); err != nil {
				return err
			}
		}
		infos, err := d.SnapshotInfos(r, db.AllSteps)
		if err != nil {
			return err
		}
		var last any
		if len(infos) > 0 {
			last = infos[len(infos)-1].Step
		}
		t.Add(r.Name, r.Status, len(infos), last)
	}
	if err := d.Sync(); err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "recovered %s: %d runs\n", *dir, len(runs))
	return t.Write(m.Stdout, "table")
}

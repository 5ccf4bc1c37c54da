package main

import (
	"context"
	"fmt"
	"time"

	"gvdb/db"
	"gvdb/query"
)

func init() {
	register("recover", "replay the log of a store whose writer was killed, keeping what it flushed", (*Main).recoverStore)
}

func (m *Main) recoverStore(ctx context.Context, args []string) error {
	fs := m.newFlags("recover [flags]", `Repair a store whose writer was killed or whose files are damaged: the only
command that changes such a store (reads refuse it rather than change it).
It first says what it will do, then:

  - sets aside table files MANIFEST does not list (an interrupted flush
    leaves them; their data is replayed from the log) by moving them into
    a folder recovered-<time> inside the store: nothing is deleted;
  - cuts a torn record at the end of MANIFEST, keeping a copy (MANIFEST is
    not rebuilt from the tables: a table it no longer lists is set aside,
    and said so);
  - keeps a copy of a write-ahead log damaged in the middle, and says that
    the entries after the damage are lost;
  - opens the store for writing, so that Badger replays its log and drops
    a torn tail; every snapshot the writer had flushed is kept, a snapshot
    in flight stays invisible. Runs the writer left running are marked
    killed.

It refuses, changing nothing, when a table MANIFEST lists is missing (data
is lost; restore it from a copy), when MANIFEST is unreadable, or when the
disk has too little free space for the replay. Prints what the store holds
afterwards.`, `  gvdb recover
  gvdb recover --db ./sweep`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	plan, err := db.PlanRecovery(*dir)
	if err != nil {
		return err
	}
	for _, line := range plan.Describe() {
		fmt.Fprintf(m.Stderr, "recover: %s\n", line)
	}
	if err := db.Recover(plan, "recovered-"+time.Now().UTC().Format("20060102-150405")); err != nil {
		return err
	}
	if plan.Aside != "" {
		fmt.Fprintf(m.Stderr, "recover: kept what was set aside in %s\n", plan.Aside)
	}
	d, err := db.Open(*dir, db.Options{MustExist: true, Recover: true})
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

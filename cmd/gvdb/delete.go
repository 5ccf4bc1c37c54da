package main

import (
	"context"
	"fmt"

	"gvdb/db"
)

func init() {
	register("delete", "delete a run with all its snapshots", (*Main).deleteRun)
}

func (m *Main) deleteRun(ctx context.Context, args []string) error {
	fs := m.newFlags("delete --run NAME [flags]", "Delete a run, its snapshots and its scalars from a store.", `  gvdb delete --run lr-0.1`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	run := fs.String("run", "", "run to delete (required)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *run == "" {
		return usagef("delete: --run is required")
	}
	d, err := openWriter(*dir, false)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.DeleteRun(*run); err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "deleted run %q\n", *run)
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/dustin/go-humanize"

	"gvdb/db"
	"gvdb/ingest"
)

func init() {
	register("check", "verify every key, manifest, checksum and block shape of a store", (*Main).check)
}

func (m *Main) check(ctx context.Context, args []string) error {
	fs := m.newFlags("check [flags]", `Read a whole store (read-only) and verify every key, run, step-scalar row,
snapshot manifest and block: checksums, that every block decodes, and that
its shape and examples agree with the run's schema, the snapshot's
manifest and the snapshot's other blocks. Prints a summary and every fault
found; exits 1 if there is any. Nothing is repaired.`, `  gvdb check
  gvdb check --db ./sweep`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	d, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer d.Close()
	var bar *progress
	rep, err := ingest.Check(d, func(done, total int) {
		if bar == nil {
			bar = m.newProgress("check", int64(total))
		}
		bar.update(int64(done), "runs")
	})
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "%s: %d runs, %d step-scalar rows, %d snapshots, %d blocks (%s)\n",
		*dir, rep.Runs, rep.ScalarRows, rep.Snapshots, rep.Blocks, humanize.IBytes(uint64(rep.Bytes)))
	for _, n := range rep.Notes {
		fmt.Fprintln(m.Stdout, "note:", n)
	}
	for _, f := range rep.Faults {
		fmt.Fprintln(m.Stdout, "fault:", f)
	}
	if len(rep.Faults) > 0 {
		return errors.New(fmt.Sprint(len(rep.Faults), " faults"))
	}
	fmt.Fprintln(m.Stdout, "ok")
	return nil
}

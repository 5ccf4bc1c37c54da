package main

import (
	"context"
	"fmt"

	"github.com/dustin/go-humanize"

	"gvdb/db"
)

func init() {
	register("compact", "rewrite a store with its live data only, giving back the space of deleted runs", (*Main).compact)
}

func (m *Main) compact(ctx context.Context, args []string) error {
	fs := m.newFlags("compact [flags]", `Rewrite a store into a new directory with its live data only, then swap
the two: the space of deleted and overwritten runs comes back. The store
must not be in use. Until the swap the old store stays where it is; a
crash between the two renames leaves it at DIR.old.`, `  gvdb compact
  gvdb compact --db ./sweep`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	before, after, err := db.Compact(*dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "compacted %s: %s -> %s\n", *dir, humanize.IBytes(uint64(before)), humanize.IBytes(uint64(after)))
	return nil
}

package main

import (
	"context"
	"fmt"
	"path"

	"gvdb/db"
	"gvdb/ingest"
)

func init() {
	register("reindex", "add rollups (moment statistics without reading blocks) to runs' snapshots", (*Main).reindex)
}

func (m *Main) reindex(ctx context.Context, args []string) error {
	fs := m.newFlags("reindex [flags]", `Compute each snapshot's rollups from its blocks and store them beside the
blocks: per layer, the example count, Σ|g_i|², |Σ g_i|² and each example's
|g_i|² and g_i·μ, and, by --rollups, each coordinate's mean/sd ratio and
sd as float32 (8 bytes a parameter). Moment statistics (variance, nvar, gns, snr, norms,
the norm/inner/orthogonality tests, pooled windows) are then answered
without reading blocks. Snapshots that have rollups are skipped unless
--replace (which also rewrites rollups of an earlier format, so that
nvar reads half their bytes). Stores written by gvdb 0.2 have rollups
already (train --rollups).`, `  gvdb reindex
  gvdb reindex --runs 'lr-*' --rollups vectors --replace`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	glob := fs.String("runs", "*", "runs to index (a glob)")
	policy := fs.String("rollups", "auto", "auto (the vectors when a snapshot's rollups then take at most its blocks' bytes), vectors or scalars")
	replace := fs.Bool("replace", false, "recompute rollups that exist")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if _, err := path.Match(*glob, ""); err != nil {
		return usagef("reindex: bad --runs pattern %q", *glob)
	}
	p, err := ingest.ParseRollupPolicy(*policy)
	if err != nil || p == ingest.RollupsNone {
		return usagef("reindex: --rollups must be auto, vectors or scalars")
	}
	d, err := openWriter(*dir, false)
	if err != nil {
		return err
	}
	defer d.Close()
	runs, err := d.MatchRuns(*glob)
	if err != nil {
		return err
	}
	for _, r := range runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		var bar *progress
		n, bytes, err := ingest.Reindex(d, r, p, *replace, func(done, total int) {
			if bar == nil {
				bar = m.newProgress(r.Name, int64(total))
			}
			bar.update(int64(done), "snapshots")
		})
		if bar != nil {
			bar.finish()
		}
		if err != nil {
			return err
		}
		r.Rollups = string(p)
		if err := d.UpdateRun(r); err != nil {
			return err
		}
		fmt.Fprintf(m.Stderr, "reindexed %s: %d snapshots, %s of rollups\n", r.Name, n, humanBytes(bytes))
	}
	return nil
}

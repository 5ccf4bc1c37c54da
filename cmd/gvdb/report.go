package main

import (
	"context"
	"fmt"
	"path"
	"path/filepath"

	"gvdb/db"
	"gvdb/plots/report"
)

func init() {
	register("report", "write the paper's figure set for the runs in a store, with an index", (*Main).report)
}

func (m *Main) report(ctx context.Context, args []string) error {
	fs := m.newFlags("report --out DIR [flags]", `Write the figure set of "A Study of Gradient Variance in Deep Learning" for
the runs in a store, and an index (index.md and a self-contained
index.html) listing each figure with the exact query that made it:

  - variance and normalized variance over training for SG-B, SG-2B, SVRG
    (runs trained with --svrg-every, or captured with cap.anchor) and
    Gradient Clustering (K = min(--k, B), batch B = the run's batch size):
    the paper's core comparison. SG and SVRG are measured on every
    snapshot; GC on the full snapshots (runs trained with
    --full-snapshot-every, or captured with population="full"), in-sample
    as the paper defines it, else held out on the samples. Captions say
    which, and which parameters an imported run left out;
  - variance and normalized variance across runs on one plot (e.g. runs
    with different learning rates);
  - normalized variance beside the training loss over steps;
  - the GC distortion-vs-K curve (K up to --k) at the last full snapshot
    (else the last sample, held out), with D0/K and D0/(2K).`, `  gvdb report --out ./report
  gvdb report --db ./sweep --runs 'lr-*' --out ./report
  gvdb report --out ./report --overwrite     # replace the report written there before`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	out := fs.String("out", "", "output folder (required): new or empty, written all or nothing; never through a symbolic link")
	overwrite := fs.Bool("overwrite", false, "replace the report gvdb wrote in --out before (the files its .gvdb-report.json lists); a folder holding any other file is refused, and nothing in it is touched")
	glob := fs.String("runs", "*", "runs to include (a glob)")
	k := fs.Int("k", 128, "Gradient Clustering clusters (the paper's 128)")
	ff := addFigureFlags(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usagef("report: --out is required")
	}
	if _, err := path.Match(*glob, ""); err != nil {
		return usagef("report: bad --runs pattern %q", *glob)
	}
	if err := m.fileWrites("report", *out); err != nil {
		return err
	}
	d, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer d.Close()
	fo, err := ff.options("")
	if err != nil {
		return err
	}
	figs, err := report.Write(ctx, d, *out, report.Options{Runs: *glob, K: *k, Figure: fo, Log: m.Stderr, Overwrite: *overwrite})
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "report: %d figures in %s (open %s)\n", len(figs), *out, filepath.Join(*out, "index.html"))
	return nil
}

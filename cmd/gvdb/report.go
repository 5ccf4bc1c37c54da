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
the runs in a store: a self-contained index.html (a summary, the runs,
a Findings table of the paper's claims measured on them, the figures in
sections with captions and their queries, a glossary) and index.md, and
each figure as PNG and SVG. Per run: the variance and NGV of SG-B,
SG-2B, SVRG (runs with anchors) and Gradient Clustering (K = min(--k,
B)) over training, GC both as the paper runs it (refitted every
full-snapshot period) and gvdb's exact fit; NGV over the loss; GC's
distortion vs K. Across runs: variance, NGV and loss.`, `  gvdb report --out ./report
  gvdb report --db ./sweep --runs 'lr-*' --out ./report
  gvdb report --out ./report --overwrite     # replace the report written there before
  gvdb report --findings-only --format csv   # the paper's claims checked on the runs; no file`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	out := fs.String("out", "", "output folder (required): new or empty, written all or nothing; never through a symbolic link")
	overwrite := fs.Bool("overwrite", false, "replace the report gvdb wrote in --out before (the files its .gvdb-report.json lists); a folder holding any other file is refused, and nothing in it is touched")
	glob := fs.String("runs", "*", "runs to include (a glob)")
	k := fs.Int("k", 128, "Gradient Clustering clusters (the paper's 128)")
	ff := addFigureFlags(fs)
	findings := fs.Bool("findings-only", false, "print the Findings table (the paper's claims measured on the runs) to standard output and write no file")
	format := formatFlag(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *findings {
		_, d, err := m.openWithFormat(fs, nil, dir, format, false)
		if err == nil {
			defer d.Close()
			err = report.WriteFindings(ctx, d, *glob, *k, m.Stdout, *format)
		}
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

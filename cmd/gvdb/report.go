package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"html"
	"os"
	"path"
	"path/filepath"
	"strings"

	"gvdb/db"
	"gvdb/query"
)

func init() {
	register("report", "write the paper's figure set for the runs in a store, with an index", (*Main).report)
}

// figure is one entry of a report.
type figure struct {
	File, Caption, Query string
}

func (m *Main) report(ctx context.Context, args []string) error {
	fs := m.newFlags("report --out DIR [flags]", `Write the figure set of "A Study of Gradient Variance in Deep Learning" for
the runs in a store, and an index (index.md and a self-contained
index.html) listing each figure with the exact query that made it:

  - variance and normalized variance over training for SG-B, SG-2B and
    Gradient Clustering (K = min(--k, snapshot examples), batch B = the
    run's batch size): the paper's core comparison;
  - variance and normalized variance across runs on one plot (e.g. runs
    with different learning rates);
  - normalized variance beside the training loss over steps;
  - the GC distortion-vs-K curve at the last snapshot, with D0/K and
    D0/(2K).`, `  gvdb report --out ./report
  gvdb report --db ./sweep --runs 'lr-*' --out ./report`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	out := fs.String("out", "", "output directory (required)")
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
	d, err := openStore(*dir, true)
	if err != nil {
		return err
	}
	defer d.Close()
	figs, err := m.writeReport(ctx, d, *out, *glob, *k, ff)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "report: %d figures in %s (open %s)\n", len(figs), *out, filepath.Join(*out, "index.html"))
	return nil
}

// writeReport draws the figures and the index; it returns the figures.
func (m *Main) writeReport(ctx context.Context, d *db.DB, out, glob string, kMax int, ff *figureFlags) ([]figure, error) {
	runs, err := d.Runs()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, r := range runs {
		if ok, _ := path.Match(glob, r.Name); !ok {
			continue
		}
		steps, err := d.SnapshotInfos(r.Name, db.AllSteps)
		if err != nil {
			return nil, err
		}
		if len(steps) > 0 {
			names = append(names, r.Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("report: no run matching %q has snapshots", glob)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var figs []figure
	lines := func(file, caption, q string) error {
		st, err := query.ParseStatement(q)
		if err != nil {
			return fmt.Errorf("report query %q: %w", q, err)
		}
		o, err := ff.statementOptions(d, st)
		if err != nil {
			return err
		}
		warnings, err := drawStatement(ctx, d, st, filepath.Join(out, file), o)
		if err != nil {
			return fmt.Errorf("report figure %s (%s): %w", file, q, err)
		}
		for _, w := range warnings {
			fmt.Fprintf(m.Stderr, "warning: %s: %s\n", file, w)
		}
		fmt.Fprintf(m.Stderr, "  %s\n", file)
		figs = append(figs, figure{file, caption, q})
		return nil
	}
	for _, name := range names {
		r, err := d.Run(name)
		if err != nil {
			return nil, err
		}
		infos, err := d.SnapshotInfos(name, db.AllSteps)
		if err != nil {
			return nil, err
		}
		b := max(r.BatchSize, 1)
		k := min(kMax, infos[0].N)
		for _, in := range infos {
			k = min(k, in.N)
		}
		safe := strings.NewReplacer("/", "_", " ", "_", "*", "_").Replace(name)
		q := quoteName(name)
		if err := lines(safe+"-variance.png",
			fmt.Sprintf("%s: gradient variance of SG-B (B = %d), SG-2B and GC (K = %d, B = %d) over training", name, b, k, b),
			fmt.Sprintf("PLOT variance(%d) AS 'SG-B', variance(%d) AS 'SG-2B', gc_variance(%d, %d) AS 'GC' FROM %s SCALE LOG TO '%s-variance.png'", b, 2*b, k, b, q, safe)); err != nil {
			return nil, err
		}
		if err := lines(safe+"-nvar.png",
			fmt.Sprintf("%s: normalized gradient variance of SG-B, SG-2B and GC over training", name),
			fmt.Sprintf("PLOT nvar(%d) AS 'SG-B', nvar(%d) AS 'SG-2B', gc_nvar(%d, %d) AS 'GC' FROM %s SCALE LINEAR TO '%s-nvar.png'", b, 2*b, k, b, q, safe)); err != nil {
			return nil, err
		}
		window := ""
		if r.SnapshotEvery > 0 {
			window = fmt.Sprintf(" GROUP BY window(%d)", r.SnapshotEvery)
		}
		if err := lines(safe+"-nvar-loss.png",
			fmt.Sprintf("%s: normalized variance beside the training loss (each point: the mean over a window of steps)", name),
			fmt.Sprintf("PLOT nvar(%d) AS 'NGV', loss AS 'training loss' FROM %s%s SCALE LINEAR TO '%s-nvar-loss.png'", b, q, window, safe)); err != nil {
			return nil, err
		}
		last := infos[len(infos)-1].Step
		file := safe + "-distortion.png"
		if err := drawDistortion(d, name, last, nil, filepath.Join(out, file), ff); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		fmt.Fprintf(m.Stderr, "  %s\n", file)
		figs = append(figs, figure{file, fmt.Sprintf("%s: GC weighted distortion vs K at step %d; below D0/K GC beats SG-B, below D0/(2K) it beats SG-2B", name, last),
			fmt.Sprintf("gvdb plot --kind distortion --run %s --step %d", name, last)})
	}
	if len(names) > 1 {
		from := make([]string, len(names))
		for i, n := range names {
			from[i] = quoteName(n)
		}
		all := strings.Join(from, ", ")
		if err := lines("runs-variance.png", "gradient variance across runs (the paper: smaller learning rates coincide with higher variance)",
			fmt.Sprintf("PLOT variance FROM %s GROUP BY run SCALE LOG TO 'runs-variance.png'", all)); err != nil {
			return nil, err
		}
		if err := lines("runs-nvar.png", "normalized gradient variance across runs",
			fmt.Sprintf("PLOT nvar FROM %s GROUP BY run SCALE LINEAR TO 'runs-nvar.png'", all)); err != nil {
			return nil, err
		}
		if err := lines("runs-loss.png", "training loss across runs (NGV tracks convergence speed better than variance)",
			fmt.Sprintf("PLOT loss FROM %s GROUP BY run, window(10) SCALE LOG TO 'runs-loss.png'", all)); err != nil {
			return nil, err
		}
	}
	return figs, writeIndex(out, d.Dir(), figs)
}

func quoteName(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// writeIndex writes index.md and a self-contained index.html.
func writeIndex(out, store string, figs []figure) error {
	var md, h strings.Builder
	fmt.Fprintf(&md, "# gvdb report\n\nStore: `%s`. Each figure was made by the query under it.\n\n", store)
	fmt.Fprintf(&h, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>gvdb report</title>\n<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;} img{max-width:100%%;border:1px solid #ddd} pre{background:#f4f4f4;padding:.5em;white-space:pre-wrap}</style></head><body>\n<h1>gvdb report</h1>\n<p>Store: <code>%s</code>. Each figure was made by the query under it.</p>\n", html.EscapeString(store))
	for _, f := range figs {
		fmt.Fprintf(&md, "## %s\n\n![%s](%s)\n\n```\n%s\n```\n\n", f.Caption, f.Caption, f.File, f.Query)
		raw, err := os.ReadFile(filepath.Join(out, f.File))
		if err != nil {
			return fmt.Errorf("report index: %w", err)
		}
		fmt.Fprintf(&h, "<h2>%s</h2>\n<img alt=\"%s\" src=\"data:image/png;base64,%s\">\n<pre>%s</pre>\n",
			html.EscapeString(f.Caption), html.EscapeString(f.Caption), base64.StdEncoding.EncodeToString(raw), html.EscapeString(f.Query))
	}
	h.WriteString("</body></html>\n")
	if err := os.WriteFile(filepath.Join(out, "index.md"), []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("report index: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "index.html"), []byte(h.String()), 0o644); err != nil {
		return fmt.Errorf("report index: %w", err)
	}
	return nil
}

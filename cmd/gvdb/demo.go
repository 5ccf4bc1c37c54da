package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot/vg"

	"gvdb/db"
	"gvdb/plots"
	"gvdb/plots/report"
	"gvdb/query"
	"gvdb/query/parser"
	"gvdb/trainer"
)

func init() {
	register("demo", "train two small MNIST runs, query them and write a report", (*Main).demo)
}

// demoRuns are the runs the demo owns; it replaces them and nothing else.
var demoRuns = []struct{ name, lr string }{{"demo-lr-0.1", "0.1"}, {"demo-lr-0.01", "0.01"}}

func (m *Main) demo(ctx context.Context, args []string) error {
	fs := m.newFlags("demo [flags]", `Run gvdb's main job end to end on real MNIST (shipped in a Go module;
nothing is downloaded): train a small MLP (784-128-10) on MNIST's first
--data-size training examples at two learning rates, with snapshots of 512
sampled examples' gradients every --steps/5 steps, full snapshots of all
of them every --steps/2 steps (the population the paper's Gradient
Clustering is measured on) and an SVRG anchor refreshed every 0.35·--steps
steps; run example queries and print their tables, and write the
report. It replaces its own runs (demo-lr-0.1 and demo-lr-0.01) and never
touches other runs in the store; it replaces the report it wrote before
in --out (gvdb report --overwrite), and refuses a folder holding other
files.`, `  gvdb demo
  gvdb demo --db ./demo-store --out ./demo-report --steps 1000`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	out := fs.String("out", "gvdb-report", "report directory")
	steps := fs.Int64("steps", 1000, "training steps per run")
	dataSize := fs.Int("data-size", 10000, "MNIST training examples (the first N): the full snapshots' population")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *steps < 100 {
		return usagef("demo: --steps must be at least 100")
	}
	if *dataSize < 1024 || *dataSize > 60000 {
		return usagef("demo: --data-size must be from 1024 to 60000")
	}
	if err := m.fileWrites("demo", "its report to "+*out); err != nil {
		return err
	}
	start := time.Now()
	fmt.Fprintf(m.Stderr, "gvdb demo: store %s, report %s\n\n", *dir, *out)
	// The SVRG anchor is refreshed off the snapshot schedule, so that
	// only step 0 sees a fresh anchor (SVRG = 0).
	every, fullEvery, svrgEvery := *steps/5, *steps/2, *steps*7/20
	for _, r := range demoRuns {
		f := trainFlags{dir: *dir, run: r.name, overwrite: true, Setup: trainer.Setup{
			Config: db.Config{Model: "mlp", Dataset: "mnist", Encoding: "float32", Steps: *steps, SnapshotEvery: every,
				BatchSize: 128, SnapshotExamples: 512, FullSnapshotEvery: fullEvery, SVRGEvery: svrgEvery,
				Momentum: 0.5, WeightDecay: 5e-4, Seed: 1},
			Hidden: "128", EvalExamples: 2000, DataSize: *dataSize}}
		fmt.Sscan(r.lr, &f.LR)
		if err := m.runTraining(ctx, f); err != nil {
			return err
		}
	}
	d, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer d.Close()
	last := *steps
	fmt.Fprintf(m.Stderr, "\nquerying the runs (Gradient Clustering, K = 128, on each full snapshot of %d examples takes most of it)\n", *dataSize)
	queries := []string{
		"SHOW RUNS",
		"SELECT step, loss, variance, nvar, gns FROM 'demo-lr-0.1'",
		"SHOW STEPS FROM 'demo-lr-0.1'",
		"SELECT variance(128), variance(256), svrg_variance(128), gc_variance(128, 128), gc_variance(128, 128) / variance(128) AS gc_gain FROM 'demo-lr-0.1' WHERE population = 'full'",
		"SELECT variance, nvar, test_accuracy FROM 'demo-*' GROUP BY run, window(" + fmt.Sprint(2*every) + ")",
		fmt.Sprintf("SELECT nvar, gns, norm_test FROM 'demo-lr-0.01' WHERE step = %d GROUP BY layer", last),
	}
	cache := query.NewGCCache(0) // the queries' partitions and Gram matrices, reused by the report
	for _, q := range queries {
		fmt.Fprintf(m.Stdout, "\ngvdb> %s\n", q)
		st, err := parser.ParseStatement(q)
		if err != nil {
			return err
		}
		if err := m.runStatement(ctx, d, st, output{format: "table", opts: query.Options{Cache: cache}}); err != nil {
			return err
		}
	}
	fmt.Fprintf(m.Stderr, "\nwriting the report to %s (its figures and Findings: Gradient Clustering of both runs, gvdb's fit and the paper's, and distortion curves; the partitions above are reused)\n", *out)
	figs, err := report.Write(ctx, d, *out, report.Options{Runs: "demo-*", K: 128, Log: m.Stderr, Overwrite: true, Cache: cache,
		Figure: plots.Options{Width: 6 * vg.Inch, Height: 4 * vg.Inch, DPI: 110}})
	if err != nil {
		return err
	}
	if len(figs) == 0 {
		return errors.New("demo: the report has no figures")
	}
	abs, _ := filepath.Abs(*out)
	fmt.Fprintf(m.Stdout, `
Done in %s.
  store:   %s (runs %s)
  report:  %s (%d figures; open index.html, or read index.md)
Next:
  gvdb query --db %s "SELECT nvar FROM 'demo-*' GROUP BY run, window(%d)"
  gvdb plot --db %s --kind distortion --run demo-lr-0.1 --out distortion.png
  gvdb query --db %s     (an interactive prompt)
`, time.Since(start).Round(time.Second), *dir, strings.Join([]string{demoRuns[0].name, demoRuns[1].name}, ", "),
		filepath.Join(abs, "index.html"), len(figs), *dir, 2*every, *dir, *dir)
	return nil
}

package main

import (
	"context"
	"fmt"
	"math"
	"path"
	"strings"

	"gvdb/db"
	"gvdb/ingest/interchange"
)

func init() {
	register("export", "write a run's or a snapshot's per-example gradients as NumPy .npy files (or Parquet tables)", (*Main).export)
}

func (m *Main) export(ctx context.Context, args []string) error {
	fs := m.newFlags("export --run NAME [--step S | --from S --to S] --out DIR [flags]", `Write per-example gradients as NumPy .npy files with a manifest.json, so
that any other tool can check gvdb's numbers (docs/INTERCHANGE.md):
  ids.npy                 uint64 (N,)        dataset index of each example
  LAYER.A.npy             float32 (N, T, In) factored layers: layer inputs a_it
  LAYER.Delta.npy         float32 (N, T, Out) and output gradients d_it
  LAYER.rows.npy          float32 (N, D)     dense blocks (biases, ...)
  LAYER.grad.npy          float32 (N, In, Out) with --materialize:
                          G_i = sum_t a_it d_it^T (factored layers)
  attr.NAME.npy           (N,)               per-example attributes (label, ...)
In numpy: G = np.einsum('nti,nto->nio', A, Delta). LAYER is the layer name
with characters outside [A-Za-z0-9._-] replaced by '_'.

With --format parquet, the run (or the step range) is written as two
Parquet tables for DuckDB, Spark or pandas (docs/SCALE.md):
factors.parquet, one row per run, step, layer and example (list<float32>
a and delta, or grad for dense blocks; example_id, label and a map of
attributes), and moments.parquet, one row per run, step and layer (n, d,
list<double> sum and sumsq per coordinate, sum_sq_norm, and per example
sq_norm and inner), from which variance, nvar and gns follow in SQL.

With --step, one snapshot is written to DIR. Without it, the whole run (or
the steps from --from to --to, both included) is written as a run
directory: run.json, scalars.jsonl and one step-<step> directory per
snapshot, which gvdb import reads back. The directory is written all or
nothing: a failed export leaves no files.`, `  gvdb export --run mlp --out ./mlp-run
  gvdb export --run mlp --from 0 --to 500 --out ./mlp-early
  gvdb export --run mlp --format parquet --out ./mlp-tables
  gvdb export --run 'lr-*' --format parquet --out ./sweep-tables
  gvdb export --run mlp --step 500 --layer fc2.weight --materialize --out ./fc2`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	run := fs.String("run", "", "run (required); with --format parquet, a glob ('lr-*') exports several runs into the same tables")
	step := fs.Int64("step", -1, "export only the snapshot at this step")
	from := fs.Int64("from", 0, "whole-run export: first step")
	to := fs.Int64("to", math.MaxInt64-1, "whole-run export: last step (included)")
	layer := fs.String("layer", "", "only these layers (comma-separated; default all)")
	format := fs.String("format", "npy", "npy (a run directory or one snapshot) or parquet (a whole run or step range as two tables)")
	out := fs.String("out", "", "output directory (required; new or empty: written all or nothing)")
	materialize := fs.Bool("materialize", false, "also write each factored layer's dense per-example gradients")
	maxBytes := fs.Int64("max-bytes", 2<<30, "refuse to materialize a layer larger than this many bytes")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *run == "":
		return usagef("export: --run is required")
	case *out == "":
		return usagef("export: --out is required")
	case *format != "npy" && *format != "parquet":
		return usagef("export: unknown --format %q (npy or parquet)", *format)
	case *format == "parquet" && (*step >= 0 || *materialize):
		return usagef("export: --format parquet writes a whole run or a step range (--from/--to), without --step or --materialize")
	case *step >= 0 && (fs.Changed("from") || fs.Changed("to")):
		return usagef("export: give --step (one snapshot) or --from/--to (a step range), not both")
	case *from < 0 || *to < *from:
		return usagef("export: step range %d to %d is empty", *from, *to)
	}
	if err := m.fileWrites("export", *out); err != nil {
		return err
	}
	d, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer d.Close()
	var layers []string
	if *layer != "" {
		layers = strings.Split(*layer, ",")
	}
	runs, err := exportRuns(d, *run, *format == "parquet")
	if err != nil {
		return err
	}
	r := runs[0]
	for _, r := range runs {
		for _, l := range layers {
			if _, err := r.Layer(l); err != nil {
				return err
			}
		}
	}
	opts := interchange.Options{Materialize: *materialize, MaxBytes: *maxBytes, Layers: layers}
	w := db.Window{From: *from, To: *to + 1}
	if *format == "parquet" {
		progress, finish, err := m.snapshotProgress(d, runs, w, "export "+*run)
		if err != nil {
			return err
		}
		st, err := interchange.WriteTables(*out, d, runs, w, opts, progress)
		finish()
		if err != nil {
			return err
		}
		fmt.Fprintf(m.Stderr, "exported %s (%d runs): %d snapshots to %s: %s (%d rows, %s) and %s (%d rows, %s)\n", *run, len(runs), st.Snapshots, *out,
			interchange.FactorsTable, st.FactorRows, humanBytes(st.FactorBytes), interchange.MomentsTable, st.MomentRows, humanBytes(st.MomentBytes))
		return nil
	}
	if *step < 0 {
		progress, finish, err := m.snapshotProgress(d, runs, w, "export "+*run)
		if err != nil {
			return err
		}
		n, err := interchange.WriteRun(*out, d, r, w, opts, progress)
		finish()
		if err != nil {
			return err
		}
		fmt.Fprintf(m.Stderr, "exported %s: %d snapshots to %s (read back with gvdb import %s --run NAME)\n", *run, n, *out, *out)
		return nil
	}
	s, err := d.Snapshot(r, *step, db.Select{Layers: layers, Attributes: true, Anchor: true})
	if err != nil {
		return err
	}
	man, err := interchange.WriteSnapshot(*out, *run, s, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "exported %s@%d: %d examples, %d layers to %s\n", *run, *step, man.Examples, len(man.Layers), *out)
	return nil
}

// exportRuns resolves --run: one run's name, or, for the Parquet tables
// (glob set), a glob such as 'lr-*' matching several.
func exportRuns(d *db.DB, name string, glob bool) ([]*db.Run, error) {
	if !strings.ContainsAny(name, "*?[") {
		r, err := d.Run(name)
		if err != nil {
			return nil, err
		}
		return []*db.Run{r}, nil
	}
	if !glob {
		return nil, usagef("export: --run %q is a pattern: only --format parquet exports several runs (into the same tables)", name)
	}
	if _, err := path.Match(name, ""); err != nil {
		return nil, usagef("export: bad --run pattern %q", name)
	}
	runs, err := d.MatchRuns(name)
	if err == nil && len(runs) == 0 {
		names, _ := d.RunNames()
		err = fmt.Errorf("no run matches %q (runs: %s)", name, strings.Join(names, ", "))
	}
	return runs, err
}

// snapshotProgress returns a progress callback counting the runs'
// snapshots in window w, and the function that removes the bar.
func (m *Main) snapshotProgress(d *db.DB, runs []*db.Run, w db.Window, label string) (func(int64), func(), error) {
	total := 0
	for _, r := range runs {
		infos, err := d.SnapshotInfos(r, w)
		if err != nil {
			return nil, nil, err
		}
		total += len(infos)
	}
	bar := m.newProgress(label, int64(total))
	done := int64(0)
	return func(int64) {
		done++
		bar.update(done, "snapshots")
	}, bar.finish, nil
}

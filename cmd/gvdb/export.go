package main

import (
	"context"
	"fmt"
	"strings"

	"gvdb/db"
	"gvdb/ingest/interchange"
)

func init() {
	register("export", "write a snapshot's per-example gradients as NumPy .npy files", (*Main).export)
}

func (m *Main) export(ctx context.Context, args []string) error {
	fs := m.newFlags("export --run NAME --step S --out DIR [flags]", `Write the per-example gradients of one snapshot as NumPy .npy files, with a
manifest.json, so that any other tool can check gvdb's numbers:
  ids.npy                 uint64 (N,)        dataset index of each example
  LAYER.A.npy             float32 (N, T, In) factored layers: layer inputs a_it
  LAYER.Delta.npy         float32 (N, T, Out) and output gradients d_it
  LAYER.rows.npy          float32 (N, D)     dense blocks (biases, ...)
  LAYER.grad.npy          float32 (N, In, Out) with --materialize:
                          G_i = sum_t a_it d_it^T (factored layers)
In numpy: G = np.einsum('nti,nto->nio', A, Delta). LAYER is the layer name
with characters outside [A-Za-z0-9._-] replaced by '_'. The directory is
written all or nothing: a failed export leaves no files.`, `  gvdb export --run mlp --step 500 --out ./mlp-500
  gvdb export --run mlp --step 500 --layer fc2.weight --materialize --out ./fc2`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	run := fs.String("run", "", "run (required)")
	step := fs.Int64("step", -1, "snapshot step (required)")
	layer := fs.String("layer", "", "only these layers (comma-separated; default all)")
	format := fs.String("format", "npy", "file format (npy)")
	out := fs.String("out", "", "output directory (required; new or empty: written all or nothing)")
	materialize := fs.Bool("materialize", false, "also write each factored layer's dense per-example gradients")
	maxBytes := fs.Int64("max-bytes", 2<<30, "refuse to materialize a layer larger than this many bytes")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *run == "":
		return usagef("export: --run is required")
	case *step < 0:
		return usagef("export: --step is required")
	case *out == "":
		return usagef("export: --out is required")
	case *format != "npy":
		return usagef("export: unknown --format %q (only npy)", *format)
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
	r, err := d.Run(*run)
	if err != nil {
		return err
	}
	s, err := d.Snapshot(r, *step, db.Select{Layers: layers})
	if err != nil {
		return err
	}
	man, err := interchange.WriteSnapshot(*out, *run, s, interchange.Options{Materialize: *materialize, MaxBytes: *maxBytes})
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "exported %s@%d: %d examples, %d layers to %s\n", *run, *step, man.Examples, len(man.Layers), *out)
	return nil
}

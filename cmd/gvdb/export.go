package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"codeberg.org/sbinet/npyio"

	"gvdb/db"
	"gvdb/ingest/codec"
)

func init() {
	register("export", "write a snapshot's per-example gradients as NumPy .npy files", (*Main).export)
}

// exportManifest describes the files of an export.
type exportManifest struct {
	Run        string        `json:"run"`
	Step       int64         `json:"step"`
	Examples   int           `json:"examples"`
	IDs        string        `json:"ids"`
	Layers     []exportLayer `json:"layers"`
	Definition string        `json:"definition"`
}

type exportLayer struct {
	Name      string            `json:"name"`
	Kind      string            `json:"kind"`
	Encoding  string            `json:"encoding"`
	MaxAbsErr float32           `json:"max_abs_err"`
	Params    int               `json:"params"`
	Files     map[string]string `json:"files"`
	Shapes    map[string][]int  `json:"shapes"`
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
In numpy: G = np.einsum('nti,nto->nio', A, Delta).`, `  gvdb export --run mlp --step 500 --out ./mlp-500
  gvdb export --run mlp --step 500 --layer fc2.weight --materialize --out ./fc2`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	run := fs.String("run", "", "run (required)")
	step := fs.Int64("step", -1, "snapshot step (required)")
	layer := fs.String("layer", "", "only these layers (comma-separated; default all)")
	format := fs.String("format", "npy", "file format (npy)")
	out := fs.String("out", "", "output directory (required; created if needed)")
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
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	man := exportManifest{Run: *run, Step: *step, Examples: s.N, IDs: "ids.npy",
		Definition: "factored layer: per-example gradient G_i[p,q] = sum_t A[i,t,p] * Delta[i,t,q] (In x Out, the weight layout y = x W); dense block: rows are the per-example gradients"}
	write := func(name string, v any) error {
		f, err := os.Create(filepath.Join(*out, name))
		if err != nil {
			return err
		}
		if err := npyio.Write(f, v); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", name, err)
		}
		return f.Close()
	}
	for i, lb := range s.Blocks {
		b, err := codec.Decode(lb.Data)
		if err != nil {
			return fmt.Errorf("export %s@%d %s: %w", *run, *step, lb.Layer, err)
		}
		if i == 0 {
			if err := write("ids.npy", b.IDs); err != nil {
				return err
			}
		}
		h, _ := codec.ReadHeader(lb.Data)
		el := exportLayer{Name: lb.Layer, Kind: b.Kind.String(), Encoding: h.Encoding.String(), MaxAbsErr: h.MaxAbsErr,
			Params: b.Params(), Files: map[string]string{}, Shapes: map[string][]int{}}
		add := func(key, file string, shape []int, v any) error {
			el.Files[key], el.Shapes[key] = file, shape
			return write(file, v)
		}
		n := b.N()
		if b.Kind == codec.Factored {
			if err := add("A", lb.Layer+".A.npy", []int{n, b.T, b.In}, cube(b.A, n, b.T, b.In)); err != nil {
				return err
			}
			if err := add("Delta", lb.Layer+".Delta.npy", []int{n, b.T, b.Out}, cube(b.Delta, n, b.T, b.Out)); err != nil {
				return err
			}
			if *materialize {
				size := int64(n) * int64(b.Params()) * 4
				if size > *maxBytes {
					return fmt.Errorf("export: materializing %s takes %s (over --max-bytes %s); export fewer layers or raise --max-bytes", lb.Layer, humanBytes(size), humanBytes(*maxBytes))
				}
				g := b.Materialized().Rows
				if err := add("grad", lb.Layer+".grad.npy", []int{n, b.In, b.Out}, cube(g, n, b.In, b.Out)); err != nil {
					return err
				}
			}
		} else if err := add("rows", lb.Layer+".rows.npy", []int{n, b.Dim}, matrix(b.Rows, n, b.Dim)); err != nil {
			return err
		}
		man.Layers = append(man.Layers, el)
	}
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "manifest.json"), append(mj, '\n'), 0o644); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Fprintf(m.Stderr, "exported %s@%d: %d examples, %d layers to %s\n", *run, *step, s.N, len(s.Blocks), *out)
	return nil
}

// matrix views a flat row-major slice as rows (no copy).
func matrix(v []float32, rows, cols int) [][]float32 {
	out := make([][]float32, rows)
	for i := range out {
		out[i] = v[i*cols : (i+1)*cols]
	}
	return out
}

// cube views a flat slice as a (a, b, c) array (no copy).
func cube(v []float32, a, b, c int) [][][]float32 {
	out := make([][][]float32, a)
	for i := range out {
		out[i] = matrix(v[i*b*c:(i+1)*b*c], b, c)
	}
	return out
}

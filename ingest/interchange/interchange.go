// Package interchange is gvdb's interchange format for per-example
// gradients: a directory of NumPy .npy files and a manifest.json, which
// `gvdb export` writes so that any other tool (NumPy, a lab's own code)
// can check gvdb's numbers.
//
//	ids.npy           uint64 (N,)          dataset index of each example
//	LAYER.A.npy       float32 (N, T, In)   factored layers: layer inputs a_it
//	LAYER.Delta.npy   float32 (N, T, Out)  and output gradients d_it
//	LAYER.rows.npy    float32 (N, D)       dense blocks (biases, ...)
//	LAYER.grad.npy    float32 (N, In, Out) optional: G_i = Σ_t a_it d_itᵀ
//
// LAYER is the layer's name with every character outside [A-Za-z0-9._-]
// replaced by '_' (FileName); the manifest maps each layer to its files.
// A directory is written all or nothing.
//
// interchange imports db (block values) and ingest/codec.
package interchange

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"codeberg.org/sbinet/npyio"

	"gvdb/db"
	"gvdb/ingest/codec"
)

// Definition states the layout of the per-example gradients.
const Definition = "factored layer: per-example gradient G_i[p,q] = sum_t A[i,t,p] * Delta[i,t,q] (In x Out, the weight layout y = x W); dense block: rows are the per-example gradients"

// Manifest describes the files of an export.
type Manifest struct {
	Run        string  `json:"run"`
	Step       int64   `json:"step"`
	Population string  `json:"population"`
	Examples   int     `json:"examples"`
	IDs        string  `json:"ids"`
	Layers     []Layer `json:"layers"`
	Definition string  `json:"definition"`
}

// Layer describes one layer's files.
type Layer struct {
	Name      string            `json:"name"`
	Kind      string            `json:"kind"`
	Encoding  string            `json:"encoding"`
	MaxAbsErr float32           `json:"max_abs_err"`
	Params    int               `json:"params"`
	Files     map[string]string `json:"files"`
	Shapes    map[string][]int  `json:"shapes"`
}

// Options tune an export.
type Options struct {
	// Materialize also writes each factored layer's dense gradients.
	Materialize bool
	// MaxBytes bounds a materialized layer (default 2 GiB).
	MaxBytes int64
}

// ErrExists is returned when the export's directory already exists and
// is not empty.
var ErrExists = errors.New("export directory exists and is not empty")

// FileName returns a layer's file-name stem: the name with every
// character outside [A-Za-z0-9._-] replaced by '_', and never "." or "..".
func FileName(layer string) string {
	out := []rune(layer)
	for i, c := range out {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			out[i] = '_'
		}
	}
	s := string(out)
	if strings.Trim(s, ".") == "" {
		s = strings.Repeat("_", len(s))
	}
	return s
}

// WriteSnapshot writes snapshot s of run to dir, all or nothing: the files
// go to a temporary directory beside dir, renamed to dir when complete. dir
// must not exist or be empty; it is never written through a link.
func WriteSnapshot(dir, run string, s *db.Snapshot, opts Options) (*Manifest, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 2 << 30
	}
	if st, err := os.Lstat(dir); err == nil {
		entries, rerr := os.ReadDir(dir)
		if !st.IsDir() || rerr != nil || len(entries) > 0 {
			return nil, fmt.Errorf("export to %s: %w (pick a new one)", dir, ErrExists)
		}
	}
	parent := filepath.Dir(filepath.Clean(dir))
	tmp, err := os.MkdirTemp(parent, ".gvdb-export-*")
	if err != nil {
		return nil, fmt.Errorf("export to %s: %w", dir, err)
	}
	man, err := writeFiles(tmp, run, s, opts)
	if err == nil {
		os.Remove(dir) // an empty directory, if any
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("export to %s: %w", dir, err)
	}
	return man, nil
}

func writeFiles(dir, run string, s *db.Snapshot, opts Options) (*Manifest, error) {
	man := &Manifest{Run: run, Step: s.Step, Population: s.Population.String(), Examples: s.N, IDs: "ids.npy", Definition: Definition}
	write := func(name string, v any) error {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		if err := npyio.Write(f, v); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", name, err)
		}
		return f.Close()
	}
	used := map[string]string{}
	for i, lb := range s.Blocks {
		b, err := codec.Decode(lb.Data)
		if err != nil {
			return nil, fmt.Errorf("%s@%d %s: %w", run, s.Step, lb.Layer, err)
		}
		if i == 0 {
			if err := write("ids.npy", b.IDs); err != nil {
				return nil, err
			}
		}
		stem := FileName(lb.Layer)
		if other, ok := used[stem]; ok {
			return nil, fmt.Errorf("layers %q and %q would share the file name %q", other, lb.Layer, stem)
		}
		used[stem] = lb.Layer
		h, _ := codec.ReadHeader(lb.Data)
		el := Layer{Name: lb.Layer, Kind: b.Kind.String(), Encoding: h.Encoding.String(), MaxAbsErr: h.MaxAbsErr,
			Params: b.Params(), Files: map[string]string{}, Shapes: map[string][]int{}}
		add := func(key, file string, shape []int, v any) error {
			el.Files[key], el.Shapes[key] = file, shape
			return write(file, v)
		}
		n := b.N()
		if b.Kind == codec.Factored {
			if err := add("A", stem+".A.npy", []int{n, b.T, b.In}, cube(b.A, n, b.T, b.In)); err != nil {
				return nil, err
			}
			if err := add("Delta", stem+".Delta.npy", []int{n, b.T, b.Out}, cube(b.Delta, n, b.T, b.Out)); err != nil {
				return nil, err
			}
			if opts.Materialize {
				if size := int64(n) * int64(b.Params()) * 4; size > opts.MaxBytes {
					return nil, fmt.Errorf("materializing %s takes %d bytes (over the limit of %d); export fewer layers or raise the limit", lb.Layer, size, opts.MaxBytes)
				}
				g := b.Materialized().Rows
				if err := add("grad", stem+".grad.npy", []int{n, b.In, b.Out}, cube(g, n, b.In, b.Out)); err != nil {
					return nil, err
				}
			}
		} else if err := add("rows", stem+".rows.npy", []int{n, b.Dim}, matrix(b.Rows, n, b.Dim)); err != nil {
			return nil, err
		}
		man.Layers = append(man.Layers, el)
	}
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, err
	}
	return man, os.WriteFile(filepath.Join(dir, "manifest.json"), append(mj, '\n'), 0o644)
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

// Package interchange moves per-example gradients in and out of gvdb as
// plain files (docs/INTERCHANGE.md, docs/SCALE.md):
//
//   - a snapshot directory: NumPy .npy files and a manifest.json
//     (interchange.go: WriteSnapshot), which `gvdb export --step` writes;
//   - a run directory: run.json, scalars.jsonl, one snapshot directory per
//     step and DONE (run.go: WriteRun, and ReadRunConfig, ReadScalars and
//     ReadSnapshot for `gvdb import`, which check every file against the
//     run's schema);
//   - .npy files, read and written here (npy.go), so that a damaged
//     header is an error, never a panic;
//   - Parquet tables: per-example factors and per-layer moments
//     (parquet.go: WriteTables), and any query result (WriteResultParquet).
//
// A snapshot directory holds
//
//	ids.npy           uint64 (N,)          dataset index of each example
//	LAYER.A.npy       float32 (N, T, In)   factored layers: layer inputs a_it
//	LAYER.Delta.npy   float32 (N, T, Out)  and output gradients d_it
//	LAYER.rows.npy    float32 (N, D)       dense blocks (biases, ...)
//	LAYER.grad.npy    float32 (N, In, Out) optional: G_i = Σ_t a_it d_itᵀ
//	attr.NAME.npy     (N,)                 per-example attributes
//
// LAYER is the layer's name with every character outside [A-Za-z0-9._-]
// replaced by '_' (FileName); the manifest maps each layer to its files.
// Every directory and file is written all or nothing.
//
// interchange imports db, ingest (the Writer's snapshot type),
// db/codec and db/stats (moments for the Parquet tables).
package interchange

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gvdb/db"
	"gvdb/db/codec"
)

// Definition states the layout of the per-example gradients.
const Definition = "factored layer: per-example gradient G_i[p,q] = sum_t A[i,t,p] * Delta[i,t,q] (In x Out, the weight layout y = x W); dense block: rows are the per-example gradients"

// Manifest describes the files of a snapshot directory (manifest.json).
type Manifest struct {
	Format     string  `json:"format,omitempty"`  // SnapshotFormat
	Version    int     `json:"version,omitempty"` // FormatVersion
	Run        string  `json:"run,omitempty"`
	Step       int64   `json:"step"`
	Population string  `json:"population"`
	Examples   int     `json:"examples"`
	IDs        string  `json:"ids"`
	Layers     []Layer `json:"layers"`
	// Attributes maps per-example attribute names (label, example_loss,
	// ...) to .npy files of N int64, float64 or bool values.
	Attributes map[string]string `json:"attributes,omitempty"`
	// WeightLayout is the layout of 2-D dense weights written as rows
	// (default: the run's).
	WeightLayout string `json:"weight_layout,omitempty"`
	// Anchor, if set, holds the same examples' gradients at the SVRG
	// anchor parameters (full snapshots of runs trained with an anchor).
	Anchor     *Anchor `json:"anchor,omitempty"`
	Definition string  `json:"definition,omitempty"`
	// Passes is the number of forward/backward passes the writer ran for
	// the snapshot (a full snapshot in chunks; informational).
	Passes int `json:"passes,omitempty"`
}

// Anchor describes a snapshot's SVRG anchor blocks: the examples'
// gradients at the parameters of step Step, one layer per snapshot layer,
// in files named "anchor.LAYER.*".
type Anchor struct {
	Step   int64   `json:"step"`
	Layers []Layer `json:"layers"`
}

// Layer describes one layer's files.
type Layer struct {
	Name      string            `json:"name"`
	Kind      string            `json:"kind,omitempty"`
	Encoding  string            `json:"encoding,omitempty"`
	MaxAbsErr float32           `json:"max_abs_err,omitempty"`
	Params    int               `json:"params,omitempty"`
	Files     map[string]string `json:"files"`
	Shapes    map[string][]int  `json:"shapes"`
	// Capture says how the writer captured the layer in this snapshot
	// (informational, checked against the files and run.json):
	// CapturedFactors, CapturedDense, CapturedGeneric or CapturedBS1.
	Capture string `json:"capture,omitempty"`
}

// How a snapshot's layer was captured (python/gvdb_capture.py): by hooks,
// as factors or dense rows, or by the generic path, batched by vmap or in
// batch-size-1 passes (dense rows).
const (
	CapturedFactors = "factors"
	CapturedDense   = "dense"
	CapturedGeneric = "generic"
	CapturedBS1     = "bs1"
)

// Options tune an export.
type Options struct {
	// Materialize also writes each factored layer's dense gradients.
	Materialize bool
	// MaxBytes bounds a materialized layer (default 2 GiB).
	MaxBytes int64
	// Layers, for WriteRun, are the layers to write (nil: all).
	Layers []string
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
	var man *Manifest
	err := writeDir(dir, func(tmp string) (err error) {
		man, err = writeFiles(tmp, run, s, opts)
		return err
	})
	return man, err
}

// writeDir creates directory dir all or nothing: fill writes into a
// temporary directory beside it, renamed to dir when fill succeeds and
// removed when it fails. dir must not exist or be empty; it is never
// written through a link.
func writeDir(dir string, fill func(tmp string) error) error {
	if st, err := os.Lstat(dir); err == nil {
		entries, rerr := os.ReadDir(dir)
		if !st.IsDir() || rerr != nil || len(entries) > 0 {
			return fmt.Errorf("export to %s: %w (pick a new one)", dir, ErrExists)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dir)), ".gvdb-export-*")
	if err != nil {
		return fmt.Errorf("export to %s: %w", dir, err)
	}
	err = fill(tmp)
	if err == nil {
		os.Remove(dir) // an empty directory, if any
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("export to %s: %w", dir, err)
	}
	return nil
}

func writeFiles(dir, run string, s *db.Snapshot, opts Options) (*Manifest, error) {
	man := &Manifest{Format: SnapshotFormat, Version: FormatVersion, Run: run, Step: s.Step, Population: s.Population.String(),
		Examples: s.N, IDs: "ids.npy", WeightLayout: LayoutInOut, Definition: Definition}
	write := func(name string, shape []int, v any) error {
		return writeNpy(filepath.Join(dir, name), shape, v)
	}
	if len(s.Blocks) > 0 {
		b, err := codec.Decode(s.Blocks[0].Data)
		if err != nil {
			return nil, fmt.Errorf("%s@%d %s: %w", run, s.Step, s.Blocks[0].Layer, err)
		}
		if err := write("ids.npy", []int{len(b.IDs)}, b.IDs); err != nil {
			return nil, err
		}
	}
	var err error
	if man.Layers, err = writeLayers(dir, "", run, s.Step, s.Blocks, opts, write); err != nil {
		return nil, err
	}
	if s.HasAnchor && len(s.Anchor) > 0 {
		man.Anchor = &Anchor{Step: s.AnchorStep}
		if man.Anchor.Layers, err = writeLayers(dir, "anchor.", run, s.Step, s.Anchor, opts, write); err != nil {
			return nil, err
		}
	}
	if len(s.Attributes) > 0 {
		a, err := codec.DecodeAttributes(s.Attributes, s.N)
		if err != nil {
			return nil, fmt.Errorf("%s@%d attributes: %w", run, s.Step, err)
		}
		man.Attributes = map[string]string{}
		for _, c := range a.Columns {
			file := "attr." + c.Name + ".npy"
			var v any
			switch c.Type {
			case codec.Int:
				v = c.Ints
			case codec.Float:
				v = c.Floats
			default:
				v = c.Bools
			}
			if err := write(file, []int{s.N}, v); err != nil {
				return nil, err
			}
			man.Attributes[c.Name] = file
		}
	}
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, err
	}
	return man, os.WriteFile(filepath.Join(dir, "manifest.json"), append(mj, '\n'), 0o644)
}

// writeLayers writes blocks as .npy files named prefix+LAYER.*.
func writeLayers(dir, prefix, run string, step int64, blocks []db.LayerBlock, opts Options, write func(string, []int, any) error) ([]Layer, error) {
	var layers []Layer
	used := map[string]string{}
	for _, lb := range blocks {
		b, err := codec.Decode(lb.Data)
		if err != nil {
			return nil, fmt.Errorf("%s@%d %s: %w", run, step, lb.Layer, err)
		}
		stem := prefix + FileName(lb.Layer)
		if other, ok := used[stem]; ok {
			return nil, fmt.Errorf("layers %q and %q would share the file name %q", other, lb.Layer, stem)
		}
		used[stem] = lb.Layer
		h, _ := codec.ReadHeader(lb.Data)
		el := Layer{Name: lb.Layer, Kind: b.Kind.String(), Encoding: h.Encoding.String(), MaxAbsErr: h.MaxAbsErr,
			Params: b.Params(), Files: map[string]string{}, Shapes: map[string][]int{}}
		add := func(key, file string, shape []int, v any) error {
			el.Files[key], el.Shapes[key] = file, shape
			return write(file, shape, v)
		}
		n := b.N()
		if b.Kind == codec.Factored {
			if err := add("A", stem+".A.npy", []int{n, b.T, b.In}, b.A); err != nil {
				return nil, err
			}
			if err := add("Delta", stem+".Delta.npy", []int{n, b.T, b.Out}, b.Delta); err != nil {
				return nil, err
			}
			if opts.Materialize {
				if size := int64(n) * int64(b.Params()) * 4; size > opts.MaxBytes {
					return nil, fmt.Errorf("materializing %s takes %d bytes (over the limit of %d); export fewer layers or raise the limit", lb.Layer, size, opts.MaxBytes)
				}
				g := b.Materialized().Rows
				if err := add("grad", stem+".grad.npy", []int{n, b.In, b.Out}, g); err != nil {
					return nil, err
				}
			}
		} else if err := add("rows", stem+".rows.npy", []int{n, b.Dim}, b.Rows); err != nil {
			return nil, err
		}
		layers = append(layers, el)
	}
	return layers, nil
}

// writeNpy writes a flat little-endian slice ([]float32, []float64,
// []int64, []uint64 or []bool) as a C-ordered .npy file (format 1.0) of
// the given shape, failing if the file exists.
func writeNpy(path string, shape []int, v any) error {
	var descr string
	switch v.(type) {
	case []float32:
		descr = "<f4"
	case []float64:
		descr = "<f8"
	case []int64:
		descr = "<i8"
	case []uint64:
		descr = "<u8"
	case []bool:
		descr = "|b1"
	default:
		return fmt.Errorf("write %s: unsupported type %T", filepath.Base(path), v)
	}
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	header := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, tuple)
	// magic (6) + version (2) + length (2) + header + '\n', padded to 64.
	pad := 64 - (10+len(header)+1)%64
	if pad == 64 {
		pad = 0
	}
	header += strings.Repeat(" ", pad) + "\n"
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString("\x93NUMPY\x01\x00")
	binary.Write(w, binary.LittleEndian, uint16(len(header)))
	w.WriteString(header)
	err = binary.Write(w, binary.LittleEndian, v)
	if err = errors.Join(err, w.Flush(), f.Close()); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

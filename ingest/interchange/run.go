package interchange

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/ingest"
)

// A run directory (docs/INTERCHANGE.md) holds a whole run: what `gvdb
// export` writes without --step, what python/gvdb_capture.py writes from a
// PyTorch training script, and what `gvdb import` reads:
//
//	run.json             RunConfig: the run's configuration and layer schema
//	scalars.jsonl        one JSON object per line: {"step": 10, "loss": 0.31, ...}
//	step-<20 digits>/    one snapshot directory per step (Manifest and .npy files),
//	                     complete when it appears (written elsewhere, then renamed)
//	DONE                 the writer has finished (gvdb import --follow stops)

// Format names and versions in run.json and manifest.json.
const (
	RunFormat      = "gvdb-run"
	SnapshotFormat = "gvdb-snapshot"
	FormatVersion  = 1
)

// Weight layouts of 2-D dense weights written as dense rows ("grad" or
// "rows" files): gvdb's own (in, out), as y = x W, or PyTorch's (out, in).
// Factors do not depend on it: A is always the layer's input, Delta the
// gradient of its output.
const (
	LayoutInOut = "in_out"
	LayoutOutIn = "out_in"
)

// RunConfig is run.json.
type RunConfig struct {
	Format        string            `json:"format"`
	Version       int               `json:"version"`
	Model         string            `json:"model"`
	Dataset       string            `json:"dataset"`
	Optimizer     string            `json:"optimizer,omitempty"`
	LR            float64           `json:"lr,omitempty"`
	Momentum      float64           `json:"momentum,omitempty"`
	WeightDecay   float64           `json:"weight_decay,omitempty"`
	BatchSize     int               `json:"batch_size"`
	Seed          uint64            `json:"seed"`
	LossReduction string            `json:"loss_reduction"` // "mean" or "sum": how captured deltas were scaled (see docs)
	WeightLayout  string            `json:"weight_layout"`  // LayoutInOut or LayoutOutIn
	ConvPatch     string            `json:"conv_patch_order,omitempty"`
	Layers        []db.Layer        `json:"layers"`
	Ignored       []string          `json:"ignored,omitempty"` // trainable parameters the writer left out (gvdb_capture's ignore=)
	Params        map[string]string `json:"params,omitempty"`
}

// SnapshotDir is the name of step's snapshot directory in a run directory.
func SnapshotDir(step int64) string { return fmt.Sprintf("step-%020d", step) }

// reserved are names a layer or scalar may not take: the query
// language's keys and keywords.
var reserved = map[string]bool{"step": true, "run": true, "layer": true, "population": true, "example_id": true,
	"select": true, "from": true, "where": true, "group": true, "by": true, "order": true, "limit": true, "having": true,
	"as": true, "and": true, "or": true, "not": true, "in": true, "glob": true, "between": true, "plot": true, "to": true,
	"show": true, "scale": true, "title": true, "desc": true, "asc": true, "window": true, "config": true}

// Reserved reports whether name is reserved by the query language.
func Reserved(name string) bool { return reserved[strings.ToLower(name)] }

// Run converts the configuration into a run named name, checking it.
func (c *RunConfig) Run(name string) (*db.Run, error) {
	if c.Format != RunFormat {
		return nil, fmt.Errorf("run.json: format %q, want %q", c.Format, RunFormat)
	}
	if c.Version != FormatVersion {
		return nil, fmt.Errorf("run.json: version %d, this gvdb reads version %d", c.Version, FormatVersion)
	}
	switch c.LossReduction {
	case "mean", "sum":
	default:
		return nil, fmt.Errorf(`run.json: loss_reduction %q, want "mean" or "sum"`, c.LossReduction)
	}
	switch c.WeightLayout {
	case LayoutInOut, LayoutOutIn:
	default:
		return nil, fmt.Errorf("run.json: weight_layout %q, want %q (gvdb) or %q (PyTorch)", c.WeightLayout, LayoutInOut, LayoutOutIn)
	}
	if c.BatchSize < 1 {
		return nil, fmt.Errorf("run.json: batch_size %d, want the training batch size (>= 1)", c.BatchSize)
	}
	if len(c.Layers) == 0 {
		return nil, errors.New("run.json: no layers")
	}
	if err := db.ValidateName("run", name); err != nil {
		return nil, err
	}
	r := &db.Run{Name: name, Config: db.Config{Model: c.Model, Dataset: c.Dataset, Optimizer: c.Optimizer, LR: c.LR, Momentum: c.Momentum, WeightDecay: c.WeightDecay, BatchSize: c.BatchSize, Seed: c.Seed, Params: map[string]string{}}}
	for k, v := range c.Params {
		r.Params[k] = v
	}
	r.Params["loss_reduction"] = c.LossReduction
	r.Params[db.ImportedParam] = c.WeightLayout
	if c.ConvPatch != "" {
		r.Params["conv_patch_order"] = c.ConvPatch
	}
	seen := map[string]bool{}
	for _, l := range c.Layers {
		if Reserved(l.Name) {
			return nil, fmt.Errorf("run.json: layer name %q is reserved by the query language", l.Name)
		}
		if err := db.ValidateName("layer", l.Name); err != nil {
			return nil, fmt.Errorf("run.json: %w", err)
		}
		if seen[l.Name] {
			return nil, fmt.Errorf("run.json: layer %q listed twice", l.Name)
		}
		seen[l.Name] = true
		switch l.Kind {
		case db.DenseWeight, db.ConvWeight, db.Bias, db.Other:
		default:
			return nil, fmt.Errorf("run.json: layer %s: kind %q, want dense, conv, bias or other", l.Name, l.Kind)
		}
		switch l.Capture {
		case "", db.CaptureHook, db.CaptureGeneric:
		default:
			return nil, fmt.Errorf("run.json: layer %s: capture %q, want %q or %q", l.Name, l.Capture, db.CaptureHook, db.CaptureGeneric)
		}
		if len(l.Shape) == 0 {
			return nil, fmt.Errorf("run.json: layer %s has no shape", l.Name)
		}
		params := 1
		for _, d := range l.Shape {
			if d < 1 || params > math.MaxInt32/d {
				return nil, fmt.Errorf("run.json: layer %s: shape %v", l.Name, l.Shape)
			}
			params *= d
		}
		if (l.Kind == db.DenseWeight || l.Kind == db.ConvWeight) && len(l.Shape) != 2 {
			return nil, fmt.Errorf("run.json: layer %s: a %s weight has a 2-D shape [in, out] (a convolution's in is C·kh·kw), got %v", l.Name, l.Kind, l.Shape)
		}
		if (l.Kind == db.DenseWeight || l.Kind == db.ConvWeight) && c.WeightLayout == LayoutOutIn {
			// The schema is gvdb's: [in, out].
			l.Shape = []int{l.Shape[1], l.Shape[0]}
		}
		l.Params = params
		r.Layers = append(r.Layers, l)
	}
	for _, name := range c.Ignored {
		if err := db.ValidateName("ignored parameter", name); err != nil {
			return nil, fmt.Errorf("run.json: %w", err)
		}
		if seen[name] {
			return nil, fmt.Errorf("run.json: ignored parameter %q is also a layer, or listed twice", name)
		}
		seen[name] = true
		r.Ignored = append(r.Ignored, name)
	}
	return r, nil
}

// ReadRunConfig reads dir/run.json (a regular file of at most
// MaxJSONBytes).
func ReadRunConfig(dir string) (*RunConfig, error) {
	c := &RunConfig{}
	err := readJSON(dir, "run.json", "run.json", c)
	if errors.Is(err, os.ErrNotExist) {
		if st, serr := os.Stat(dir); serr != nil || !st.IsDir() {
			return nil, fmt.Errorf("no directory %s", dir)
		}
		if _, merr := os.Stat(filepath.Join(dir, "manifest.json")); merr == nil {
			return nil, errors.New("this is one snapshot (gvdb export --step), not a run directory: export the whole run (gvdb export --run R --out DIR) or add run.json and a step-<step> directory (docs/INTERCHANGE.md)")
		}
		return nil, errors.New("no run.json: not a run directory (docs/INTERCHANGE.md; python/gvdb_capture.py and gvdb export write one)")
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Steps lists the complete snapshot directories of a run directory, by
// step; a directory named step-... otherwise than SnapshotDir names it,
// or anything named step-... that is not a directory (a symbolic link, a
// file), is an error (it would be ignored silently, or followed).
func Steps(dir string) ([]int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var steps []int64
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "step-")
		if !ok {
			continue
		}
		if !e.IsDir() {
			return nil, fmt.Errorf("%s is %s; a snapshot is a directory (import follows no links)", e.Name(), fileKind(e.Type()))
		}
		s, err := strconv.ParseInt(rest, 10, 64)
		if err != nil || s < 0 || e.Name() != SnapshotDir(s) {
			return nil, fmt.Errorf("%s: a snapshot directory is named step- and the step in 20 digits (step-00000000000000000100)", e.Name())
		}
		steps = append(steps, s)
	}
	slices.Sort(steps)
	return steps, nil
}

// validName: a letter, then letters, digits and '_'.
func validName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// ReadSnapshot reads one snapshot directory of run r (its configuration
// c) into a snapshot for ingest.Writer, checking every file against the
// manifest and the run's schema: dtypes, shapes, C order, ids, the weight
// layout. It reports NaN or Inf values as warnings (they are kept).
func ReadSnapshot(dir string, c *RunConfig, r *db.Run) (*ingest.Snapshot, []string, error) {
	if st, err := os.Lstat(dir); err != nil || !st.IsDir() {
		return nil, nil, fmt.Errorf("%s: not a snapshot directory (import follows no links)", filepath.Base(dir))
	}
	var man Manifest
	if err := readJSON(dir, "manifest.json", "manifest.json", &man); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Base(dir), err)
	}
	bad := func(format string, args ...any) (*ingest.Snapshot, []string, error) {
		return nil, nil, fmt.Errorf("%s: %s", filepath.Base(dir), fmt.Sprintf(format, args...))
	}
	if man.Format != "" && man.Format != SnapshotFormat {
		return bad("manifest format %q, want %q", man.Format, SnapshotFormat)
	}
	if man.Step < 0 {
		return bad("negative step %d", man.Step)
	}
	if man.Examples < 1 {
		return bad("%d examples", man.Examples)
	}
	if man.Passes < 0 || man.Passes > man.Examples {
		return bad("%d forward passes for %d examples", man.Passes, man.Examples)
	}
	pop, err := db.ParsePopulation(man.Population)
	if err != nil {
		return bad("%v", err)
	}
	layout := man.WeightLayout
	if layout == "" {
		layout = c.WeightLayout
	}
	if layout != LayoutInOut && layout != LayoutOutIn {
		return bad("weight_layout %q", layout)
	}
	n := man.Examples
	var ids []uint64
	if err := readNpy(dir, `manifest "ids"`, man.IDs, []int{n}, func(a *npyArray) error {
		switch a.Dtype {
		case "<u8":
			if err := a.Read(&ids); err != nil {
				return err
			}
			for _, x := range ids {
				if x > math.MaxInt64 {
					return fmt.Errorf("example id %d does not fit int63 (ids are below 2^63)", x)
				}
			}
			return nil
		case "<i8":
			var v []int64
			if err := a.Read(&v); err != nil {
				return err
			}
			for _, x := range v {
				if x < 0 {
					return fmt.Errorf("negative example id %d", x)
				}
				ids = append(ids, uint64(x))
			}
			return nil
		}
		return fmt.Errorf("dtype %s, want uint64 or int64", a.Dtype)
	}); err != nil {
		return bad("ids: %v", err)
	}
	seen := make(map[uint64]bool, n)
	for _, id := range ids {
		if seen[id] {
			return bad("example id %d appears twice", id)
		}
		seen[id] = true
	}
	s := &ingest.Snapshot{Step: man.Step, Population: pop}
	var warnings []string
	covered := map[string]bool{}
	for _, ml := range man.Layers {
		sl, err := r.Layer(ml.Name)
		if err != nil {
			return bad("layer %q is not in run.json's layers", ml.Name)
		}
		if covered[ml.Name] {
			return bad("layer %s listed twice", ml.Name)
		}
		covered[ml.Name] = true
		if err := checkCapture(ml, sl); err != nil {
			return bad("layer %s: %v", ml.Name, err)
		}
		b, err := readBlock(dir, ml, sl, n, layout)
		if err != nil {
			return bad("layer %s: %v", ml.Name, err)
		}
		b.IDs = ids
		if row, ok := b.NonFinite(); ok {
			warnings = append(warnings, fmt.Sprintf("step %d layer %s: NaN or Inf gradient (example row %d), kept", man.Step, ml.Name, row))
		}
		s.Blocks = append(s.Blocks, ingest.NamedBlock{Layer: ml.Name, Block: b})
	}
	if len(s.Blocks) == 0 {
		return bad("no layers")
	}
	if man.Anchor != nil {
		if man.Anchor.Step < 0 || man.Anchor.Step > man.Step {
			return bad("anchor step %d (the snapshot is at step %d)", man.Anchor.Step, man.Step)
		}
		if len(man.Anchor.Layers) != len(s.Blocks) {
			return bad("%d anchor layers for %d layers", len(man.Anchor.Layers), len(s.Blocks))
		}
		for i, ml := range man.Anchor.Layers {
			if ml.Name != s.Blocks[i].Layer {
				return bad("anchor layer %d is %q, want %q (the layers' order)", i, ml.Name, s.Blocks[i].Layer)
			}
			sl, _ := r.Layer(ml.Name)
			if err := checkCapture(ml, sl); err != nil {
				return bad("anchor layer %s: %v", ml.Name, err)
			}
			b, err := readBlock(dir, ml, sl, n, layout)
			if err != nil {
				return bad("anchor layer %s: %v", ml.Name, err)
			}
			b.IDs = ids
			s.Anchor = append(s.Anchor, ingest.NamedBlock{Layer: ml.Name, Block: b})
		}
		s.AnchorStep = man.Anchor.Step
	}
	if len(man.Attributes) > 0 {
		a := &codec.Attributes{N: n}
		names := make([]string, 0, len(man.Attributes))
		for k := range man.Attributes {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, name := range names {
			if Reserved(name) || !validName(name) {
				return bad("attribute name %q is reserved or not a name", name)
			}
			col := codec.Column{Name: name}
			if err := readNpy(dir, fmt.Sprintf("manifest \"attributes\".%q", name), man.Attributes[name], []int{n}, func(a *npyArray) error {
				switch a.Dtype {
				case "<i8":
					col.Type = codec.Int
					return a.Read(&col.Ints)
				case "<f8":
					col.Type = codec.Float
					return a.Read(&col.Floats)
				case "|b1":
					col.Type = codec.Bool
					return a.Read(&col.Bools)
				}
				return fmt.Errorf("dtype %s, want int64, float64 or bool", a.Dtype)
			}); err != nil {
				return bad("attribute %s: %v", name, err)
			}
			a.Columns = append(a.Columns, col)
		}
		if err := a.Validate(); err != nil {
			return bad("%v", err)
		}
		s.Attributes = a
	}
	return s, warnings, nil
}

// checkCapture checks a manifest layer's "capture" (how this snapshot
// captured it) against its files and run.json's capture path.
func checkCapture(ml Layer, sl db.Layer) error {
	factors := ml.Files["A"] != "" || ml.Files["Delta"] != ""
	switch ml.Capture {
	case "":
		return nil
	case CapturedFactors:
		if !factors {
			return fmt.Errorf("capture %q without A and Delta files", ml.Capture)
		}
	case CapturedDense, CapturedGeneric, CapturedBS1:
		if factors {
			return fmt.Errorf("capture %q with factors (A, Delta): want rows", ml.Capture)
		}
	default:
		return fmt.Errorf("capture %q, want %q, %q, %q or %q", ml.Capture, CapturedFactors, CapturedDense, CapturedGeneric, CapturedBS1)
	}
	generic := ml.Capture == CapturedGeneric || ml.Capture == CapturedBS1
	if sl.Capture != "" && generic != (sl.Capture == db.CaptureGeneric) {
		return fmt.Errorf("captured as %q, but run.json says %q", ml.Capture, sl.Capture)
	}
	return nil
}

// readBlock reads one layer's files into a block: factored (A and Delta:
// (N, T, In) and (N, T, Out), or (N, In) and (N, Out) for T = 1) or dense
// rows (N, D), D the schema's parameter count. Dense rows of a dense or
// conv weight in the out_in layout are transposed to gvdb's in_out.
func readBlock(dir string, ml Layer, sl db.Layer, n int, layout string) (*codec.Block, error) {
	field := func(key string) string { return fmt.Sprintf(`manifest "files".%q`, key) }
	for _, key := range slices.Sorted(maps.Keys(ml.Files)) {
		if err := plainName(field(key), ml.Files[key]); err != nil {
			return nil, err // checked even where the file is not read
		}
	}
	read32 := func(key string, rank3 bool) ([]float32, []int, error) {
		if ml.Files[key] == "" {
			return nil, nil, fmt.Errorf(`manifest "files": no %q file`, key)
		}
		var v []float32
		var shape []int
		err := readNpy(dir, field(key), ml.Files[key], nil, func(a *npyArray) error {
			if a.Dtype != "<f4" {
				return fmt.Errorf("dtype %s, want float32 (<f4)", a.Dtype)
			}
			shape = a.Shape
			if len(shape) == 0 || shape[0] != n {
				return fmt.Errorf("shape %v, want %d examples first", shape, n)
			}
			if len(shape) != 2 && !(rank3 && len(shape) == 3) {
				return fmt.Errorf("shape %v has the wrong rank", shape)
			}
			return a.Read(&v)
		})
		return v, shape, err
	}
	switch {
	case ml.Files["A"] != "" || ml.Files["Delta"] != "":
		if sl.Kind != db.DenseWeight && sl.Kind != db.ConvWeight {
			return nil, fmt.Errorf("factors for a %s layer (factors are for dense and conv weights)", sl.Kind)
		}
		a, as, err := read32("A", true)
		if err != nil {
			return nil, err
		}
		d, ds, err := read32("Delta", true)
		if err != nil {
			return nil, err
		}
		if len(as) != len(ds) || (len(as) == 3 && as[1] != ds[1]) {
			return nil, fmt.Errorf("A has shape %v and Delta %v: they need the same examples and positions", as, ds)
		}
		t := 1
		if len(as) == 3 {
			t = as[1]
		}
		in, out := as[len(as)-1], ds[len(ds)-1]
		if in*out != sl.Params || sl.Shape[0] != in {
			return nil, fmt.Errorf("factors of %d inputs and %d outputs, the schema's weight is %v (in, out)", in, out, sl.Shape)
		}
		if t < 1 {
			return nil, errors.New("no positions")
		}
		return &codec.Block{Kind: codec.Factored, T: t, In: in, Out: out, A: a, Delta: d}, nil
	case ml.Files["rows"] != "" || ml.Files["grad"] != "":
		key := "rows"
		if ml.Files["rows"] == "" {
			key = "grad"
		}
		v, shape, err := read32(key, true)
		if err != nil {
			return nil, err
		}
		dim := 1
		for _, x := range shape[1:] {
			dim *= x
		}
		if dim != sl.Params {
			return nil, fmt.Errorf("%s rows of %d values, the schema has %d parameters", key, dim, sl.Params)
		}
		if (sl.Kind == db.DenseWeight || sl.Kind == db.ConvWeight) && layout == LayoutOutIn {
			v = transposeRows(v, n, sl.Shape[1], sl.Shape[0])
		}
		return &codec.Block{Kind: codec.Dense, Dim: dim, Rows: v}, nil
	}
	return nil, errors.New("manifest: neither factors (A, Delta) nor rows")
}

// transposeRows turns each of n rows from an (r, c) row-major matrix into
// its (c, r) transpose.
func transposeRows(v []float32, n, r, c int) []float32 {
	out := make([]float32, len(v))
	for i := range n {
		src, dst := v[i*r*c:(i+1)*r*c], out[i*r*c:(i+1)*r*c]
		for p := range r {
			for q := range c {
				dst[q*r+p] = src[p*c+q]
			}
		}
	}
	return out
}

// RunConfigOf returns the configuration of a stored run, for export.
func RunConfigOf(r *db.Run) *RunConfig {
	c := &RunConfig{Format: RunFormat, Version: FormatVersion, Model: r.Model, Dataset: r.Dataset, Optimizer: r.Optimizer,
		LR: r.LR, Momentum: r.Momentum, WeightDecay: r.WeightDecay, BatchSize: r.BatchSize, Seed: r.Seed,
		LossReduction: "mean", WeightLayout: LayoutInOut, Layers: r.Layers, Ignored: r.Ignored, Params: map[string]string{}}
	for k, v := range r.Params {
		switch k {
		case "loss_reduction":
			c.LossReduction = v
		case "conv_patch_order":
			c.ConvPatch = v
		case db.ImportedParam:
		default:
			c.Params[k] = v
		}
	}
	return c
}

// WriteRun writes run r's snapshots in window w (with their attributes)
// and step scalars as a run directory at dir, all or nothing (dir must
// not exist or be empty). progress, if set, is called after each
// snapshot.
func WriteRun(dir string, d *db.DB, r *db.Run, w db.Window, opts Options, progress func(step int64)) (snapshots int, err error) {
	err = writeDir(dir, func(tmp string) error {
		snapshots = 0
		return writeRun(tmp, d, r, w, opts, progress, &snapshots)
	})
	return snapshots, err
}

// writeRun writes WriteRun's files into tmp.
func writeRun(tmp string, d *db.DB, r *db.Run, w db.Window, opts Options, progress func(step int64), snapshots *int) error {
	cj, err := json.MarshalIndent(RunConfigOf(r), "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "run.json"), append(cj, '\n'), 0o644); err != nil {
		return err
	}
	sf, err := os.Create(filepath.Join(tmp, "scalars.jsonl"))
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(sf)
	err = d.Scalars(r, w, func(row db.ScalarRow) error {
		m := map[string]any{"step": row.Step}
		for k, v := range row.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				m[k] = nil // JSON has no NaN
			} else {
				m[k] = v
			}
		}
		line, err := json.Marshal(m)
		if err != nil {
			return err
		}
		_, err = bw.Write(append(line, '\n'))
		return err
	})
	if err = errors.Join(err, bw.Flush(), sf.Close()); err != nil {
		return err
	}
	err = d.Snapshots(r, w, db.Select{Layers: opts.Layers, Attributes: true, Anchor: true}, func(s *db.Snapshot) error {
		if _, err := writeFiles(mkdir(tmp, SnapshotDir(s.Step)), r.Name, s, opts); err != nil {
			return err
		}
		*snapshots++
		if progress != nil {
			progress(s.Step)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(tmp, "DONE"), nil, 0o644)
}

// mkdir creates dir/name and returns its path (an error surfaces when
// the first file is written into it).
func mkdir(dir, name string) string {
	p := filepath.Join(dir, name)
	_ = os.Mkdir(p, 0o755)
	return p
}

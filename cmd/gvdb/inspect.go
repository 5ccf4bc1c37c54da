package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/query"
)

func init() {
	register("inspect", "show a run's metadata, snapshots and block encodings", (*Main).inspect)
}

func (m *Main) inspect(ctx context.Context, args []string) error {
	fs := m.newFlags("inspect --run NAME [--step S] [flags]", `Show a run: its metadata, layer schema and snapshots. With --step, show
each layer's block in that snapshot: kind, encoding, shape, bytes stored,
compression against float32 factors and against materialized per-example
gradients (4*N*D bytes), and the largest error of a lossy encoding.`, `  gvdb inspect --run mlp
  gvdb inspect --run mlp --step 500
  gvdb inspect --db ./store --run mlp --step 500 --format json`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	run := fs.String("run", "", "run to inspect (required)")
	step := fs.Int64("step", -1, "snapshot step to detail (-1: list the snapshots)")
	format := formatFlag(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	if *run == "" {
		return usagef("inspect: --run is required")
	}
	d, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer d.Close()
	r, err := d.Run(*run)
	if err != nil {
		return err
	}
	if *step >= 0 {
		return m.inspectStep(d, r, *step, *format)
	}
	infos, err := d.SnapshotInfos(r, db.AllSteps)
	if err != nil {
		return err
	}
	snaps := &query.Table{Columns: []string{"step", "population", "examples", "layers", "anchor_step", "stored_bytes", "rollup_bytes", "time"}}
	for _, in := range infos {
		var anchor any
		if in.HasAnchor {
			anchor = in.AnchorStep
		}
		snaps.Add(in.Step, in.Population.String(), in.N, len(in.Layers), anchor, in.StoredBytes(), in.RollupBytes, in.Time)
	}
	layers := &query.Table{Columns: []string{"layer", "kind", "shape", "params"}}
	for _, l := range r.Layers {
		layers.Add(l.Name, string(l.Kind), l.Shape, l.Params)
	}
	switch *format {
	case "json":
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Run       *db.Run           `json:"run"`
			Snapshots []db.SnapshotInfo `json:"snapshots"`
		}{r, infos})
	case "csv":
		return snaps.Write(m.Stdout, "csv")
	}
	w := m.Stdout
	fmt.Fprintf(w, "run        %s (id %d, %s)\n", r.Name, r.ID, orDash(r.ShownStatus()))
	fmt.Fprintf(w, "model      %s on %s, %d parameters\n", orDash(r.Model), orDash(r.Dataset), r.TotalParams())
	if r.Optimizer != "" || r.LR != 0 {
		fmt.Fprintf(w, "optimizer  %s lr=%g momentum=%g weight_decay=%g batch=%d steps=%d seed=%d\n",
			orDash(r.Optimizer), r.LR, r.Momentum, r.WeightDecay, r.BatchSize, r.Steps, r.Seed)
	}
	if r.SnapshotEvery > 0 {
		fmt.Fprintf(w, "snapshots  every %d steps, %d examples, %s\n", r.SnapshotEvery, r.SnapshotExamples, orDash(r.Encoding))
	}
	if len(r.Params) > 0 {
		var kv []string
		for k, v := range r.Params {
			kv = append(kv, k+"="+v)
		}
		fmt.Fprintf(w, "params     %s\n", strings.Join(slices.Sorted(slices.Values(kv)), " "))
	}
	fmt.Fprintf(w, "created    %s by gvdb %s\n\n", r.Created.Format("2006-01-02 15:04:05 MST"), orDash(r.Version))
	if err := layers.Write(w, "table"); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(infos) == 0 {
		fmt.Fprintln(w, "no snapshots")
		return nil
	}
	return snaps.Write(w, "table")
}

func (m *Main) inspectStep(d *db.DB, r *db.Run, step int64, format string) error {
	s, err := d.Snapshot(r, step, db.Select{Anchor: true})
	if err != nil {
		return err
	}
	t := &query.Table{Columns: []string{"layer", "block", "encoding", "examples", "shape", "params", "stored_bytes", "float32_bytes", "ratio", "vs_materialized", "max_abs_err"}}
	var stored, raw, mat int64
	all := append([]db.LayerBlock(nil), s.Blocks...)
	for _, b := range s.Anchor {
		all = append(all, db.LayerBlock{Layer: b.Layer + " (anchor)", Data: b.Data})
	}
	for _, b := range all {
		h, err := codec.ReadHeader(b.Data)
		if err != nil {
			return fmt.Errorf("%s@%d %s: %w", r.Name, step, b.Layer, err)
		}
		shape := []int{h.Dim}
		if h.Kind == codec.Factored {
			shape = []int{h.T, h.In, h.Out}
		}
		materialized := 4 * int64(h.N) * int64(h.Params())
		stored += int64(len(b.Data))
		raw += int64(h.Float32Bytes())
		mat += materialized
		t.Add(b.Layer, h.Kind.String(), h.Encoding.String(), h.N, shape, h.Params(), len(b.Data), h.Float32Bytes(),
			ratio(int64(h.Float32Bytes()), int64(len(b.Data))), ratio(materialized, int64(len(b.Data))), float64(h.MaxAbsErr))
	}
	if format == "table" {
		t.Add("total", "", "", s.N, nil, r.TotalParams(), stored, raw, ratio(raw, stored), ratio(mat, stored), nil)
		anchor := ""
		if s.HasAnchor {
			anchor = fmt.Sprintf(", with their gradients at the SVRG anchor of step %d", s.AnchorStep)
		}
		fmt.Fprintf(m.Stdout, "%s at step %d: %d examples (%s)%s, %s stored (%s per example)\n\n", r.Name, step, s.N, s.Population, anchor,
			humanBytes(stored), humanBytes(stored/int64(max(s.N, 1))))
	}
	return t.Write(m.Stdout, format)
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return math.Round(float64(a)/float64(b)*10) / 10
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

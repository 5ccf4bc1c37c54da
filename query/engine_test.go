package query

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/query/parser"
)

type statsLayer struct {
	name  string
	block *codec.Block
}

// directStats computes variance(16), nvar(4), gns, gc_variance(4, 8) (a
// sample: held out) and gc_variance_insample(4, 8) of run "a" (batch 16)
// straight from the engine.
func directStats(t *testing.T, ls []statsLayer) []float64 {
	var layers []stats.Layer
	for _, l := range ls {
		layers = append(layers, stats.Layer{Name: l.name, Block: l.block})
	}
	m, err := stats.Compute(layers, 0, stats.Need{Coords: true})
	if err != nil {
		t.Fatal(err)
	}
	nv, _ := m.NVar(4)
	// The held-out halves keep copies with their source (testAttributes:
	// odd ids above 40 copy id-1).
	var keys []uint64
	for _, id := range layers[0].Block.IDs {
		if id > 40 && id%2 == 1 {
			id--
		}
		keys = append(keys, id)
	}
	g, err := stats.NewGC(layers, stats.GCOptions{Seed: 1, SplitKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	h, err := g.HeldOut(4)
	if err != nil {
		t.Fatal(err)
	}
	in, err := g.InSample(4)
	if err != nil {
		t.Fatal(err)
	}
	return []float64{m.Variance(16), nv, m.GNS(), h.Variance(8, m.D), in.Variance(8, m.D)}
}

// TestRollupsMatchBlockPath evaluates every moment statistic, per
// snapshot, per layer and pooled, from the rollups the Writer stored and
// from the blocks: the two agree to 1e-12 relative for the statistics of
// the rollups' float64 scalars, and within 1e-6 (docs/QUERY.md) for those
// of the float32 per-coordinate vectors (nvar, snr, pooled windows).
func TestRollupsMatchBlockPath(t *testing.T) {
	d := testStore(t)
	for _, q := range []string{
		"SELECT variance(16), nvar(16), gns, snr(16), norm, example_norm, norm_test(16), inner_test(16), ortho_test(16), examples, params FROM 'a'",
		"SELECT variance, nvar, inner_test FROM 'a' WHERE layer GLOB 'fc1.*' GROUP BY layer",
		"SELECT pooled(variance), pooled(nvar(8)), pooled(gns) FROM 'a' GROUP BY window(200)",
	} {
		st, err := parser.ParseStatement(q)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := Eval(context.Background(), d, st, Options{})
		if err != nil {
			t.Fatal(err)
		}
		slow, err := Eval(context.Background(), d, st, Options{NoRollups: true})
		if err != nil {
			t.Fatal(err)
		}
		if fast.Stats.FromRollups == 0 || slow.Stats.FromRollups != 0 {
			t.Fatalf("%s: %d and %d snapshots from rollups", q, fast.Stats.FromRollups, slow.Stats.FromRollups)
		}
		for r, row := range fast.Rows {
			for c, v := range row {
				x, ok := v.(float64)
				if !ok {
					continue
				}
				y := slow.Rows[r][c].(float64)
				tol := 1e-12
				if col := fast.Columns[c]; strings.Contains(col, "nvar") || strings.Contains(col, "snr") || strings.HasPrefix(col, "pooled") {
					tol = 1e-6
				}
				if math.Abs(x-y) > tol*math.Abs(y) || math.IsNaN(x) != math.IsNaN(y) {
					t.Errorf("%s: row %d %s: rollups %.17g, blocks %.17g", q, r, fast.Columns[c], x, y)
				}
			}
		}
	}
}

// TestWorkersSameAnswers: the answers do not depend on how many workers
// process snapshots.
func TestWorkersSameAnswers(t *testing.T) {
	d := testStore(t)
	st, _ := parser.ParseStatement("SELECT variance, nvar, pooled(gns) FROM 'a', 'b' GROUP BY run, window(200)")
	one, err := Eval(context.Background(), d, st, Options{Workers: 1, NoRollups: true})
	if err != nil {
		t.Fatal(err)
	}
	four, err := Eval(context.Background(), d, st, Options{Workers: 4, NoRollups: true})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(one.Rows) != fmt.Sprint(four.Rows) || fmt.Sprint(one.Warnings) != fmt.Sprint(four.Warnings) {
		t.Errorf("1 worker:\n%v\n%v\n4 workers:\n%v\n%v", one.Rows, one.Warnings, four.Rows, four.Warnings)
	}
}

// TestExampleRowsBruteForce checks the per-example items against the
// materialized gradients of the snapshot: grad_norm = |g_i| and
// cos_to_mean = g_i·μ/(|g_i||μ|) over the layers in scope, the attributes
// as stored, and cluster(K) as a partition in which every example sits in
// the cluster whose mean is nearest (the fixed point the fit ends at).
func TestExampleRowsBruteForce(t *testing.T) {
	d := testStore(t)
	st, err := parser.ParseStatement("SELECT example_id, grad_norm, cos_to_mean, cluster(3), label, example_loss FROM 'a' WHERE step = 100 AND layer GLOB 'fc1.*'")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Eval(context.Background(), d, st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := d.Run("a")
	snap, err := d.Snapshot(r, 100, db.Select{Layers: []string{"fc1.weight", "fc1.bias"}, Attributes: true})
	if err != nil {
		t.Fatal(err)
	}
	// Materialize: g[i] is example i's gradient over both layers, concatenated.
	g := make([][]float64, snap.N)
	var ids []uint64
	for _, b := range snap.Blocks {
		blk, err := codec.Decode(b.Data)
		if err != nil {
			t.Fatal(err)
		}
		ids = blk.IDs
		buf := make([]float64, blk.Params())
		for i := range snap.N {
			g[i] = append(g[i], blk.Gradient(i, buf)...)
		}
	}
	attrs, err := codec.DecodeAttributes(snap.Attributes, snap.N)
	if err != nil {
		t.Fatal(err)
	}
	dim := len(g[0])
	mu := make([]float64, dim)
	for _, gi := range g {
		for j, v := range gi {
			mu[j] += v / float64(snap.N)
		}
	}
	dot := func(a, b []float64) (s float64) {
		for j := range a {
			s += a[j] * b[j]
		}
		return s
	}
	if len(res.Rows) != snap.N {
		t.Fatalf("%d rows for %d examples", len(res.Rows), snap.N)
	}
	col := map[string]int{}
	for i, c := range res.Columns {
		col[c] = i
	}
	row := map[uint64]int{}
	for i, id := range ids {
		row[id] = i
	}
	assign := make([]int, snap.N)
	for _, out := range res.Rows {
		id := uint64(out[col["example_id"]].(int64))
		i, ok := row[id]
		if !ok {
			t.Fatalf("example_id %d is not in the snapshot", id)
		}
		norm := math.Sqrt(dot(g[i], g[i]))
		cos := dot(g[i], mu) / (norm * math.Sqrt(dot(mu, mu)))
		for name, want := range map[string]float64{"grad_norm": norm, "cos_to_mean": cos,
			"label": attrs.Column("label").Value(i), "example_loss": attrs.Column("example_loss").Value(i)} {
			if got := out[col[name]].(float64); math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
				t.Errorf("example %d: %s = %.12g, brute force %.12g", id, name, got, want)
			}
		}
		assign[i] = int(out[col["cluster(3)"]].(float64))
	}
	// The partition is a local optimum of the GC objective, computed on
	// the materialized gradients: J = Σ_c N_c Σ_{i∈c} |g_i − μ_c|²; no
	// single example's move to another cluster lowers it.
	objective := func(assign []int) float64 {
		j := 0.0
		for c := range 3 {
			var members [][]float64
			for i, a := range assign {
				if a == c {
					members = append(members, g[i])
				}
			}
			if len(members) == 0 {
				continue
			}
			centre := make([]float64, dim)
			for _, m := range members {
				for q, v := range m {
					centre[q] += v / float64(len(members))
				}
			}
			for _, m := range members {
				for q, v := range m {
					j += float64(len(members)) * (v - centre[q]) * (v - centre[q])
				}
			}
		}
		return j
	}
	base := objective(assign)
	for i := range assign {
		for c := range 3 {
			if c == assign[i] {
				continue
			}
			moved := append([]int(nil), assign...)
			moved[i] = c
			if j := objective(moved); j < base*(1-1e-9) {
				t.Errorf("moving example %d from cluster %d to %d lowers the objective from %g to %g", ids[i], assign[i], c, base, j)
			}
		}
	}
	// And it is the partition gc_variance_insample scores:
	// gc_variance_insample(K, B = K) = J / (N² D).
	st2, _ := parser.ParseStatement("SELECT gc_variance_insample(3, 3) FROM 'a' WHERE step = 100 AND layer GLOB 'fc1.*'")
	gv, err := Eval(context.Background(), d, st2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := base / float64(snap.N*snap.N) / float64(dim)
	if got := gv.Rows[0][1].(float64); math.Abs(got-want) > 1e-9*want {
		t.Errorf("gc_variance_insample(3, 3) = %.12g, J/(N²D) of the partition cluster(3) gives %.12g", got, want)
	}
}

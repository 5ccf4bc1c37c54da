package query

import (
	"context"
	"fmt"
	"math"
	"testing"

	"gvdb/ingest/codec"
	"gvdb/query/stats"
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
// from the blocks: the two agree to 1e-12 relative.
func TestRollupsMatchBlockPath(t *testing.T) {
	d := testStore(t)
	for _, q := range []string{
		"SELECT variance(16), nvar(16), gns, snr(16), norm, example_norm, norm_test(16), inner_test(16), ortho_test(16), examples, params FROM 'a'",
		"SELECT variance, nvar, inner_test FROM 'a' WHERE layer GLOB 'fc1.*' GROUP BY layer",
		"SELECT pooled(variance), pooled(nvar(8)), pooled(gns) FROM 'a' GROUP BY window(200)",
	} {
		st, err := ParseStatement(q)
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
				if math.Abs(x-y) > 1e-12*math.Abs(y) || math.IsNaN(x) != math.IsNaN(y) {
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
	st, _ := ParseStatement("SELECT variance, nvar, pooled(gns) FROM 'a', 'b' GROUP BY run, window(200)")
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

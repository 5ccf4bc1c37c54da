package query

import (
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
	g, err := stats.NewGC(layers, stats.GCOptions{Seed: 1})
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

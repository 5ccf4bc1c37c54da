package stats

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// rollups returns each layer's rollup, through an encode/decode round trip.
func rollups(t *testing.T, layers []Layer, vectors bool) []LayerRollup {
	t.Helper()
	var out []LayerRollup
	for _, l := range layers {
		r, err := NewRollup(l, vectors)
		if err != nil {
			t.Fatal(err)
		}
		back, err := UnmarshalRollup(r.Marshal(), l.Block.N(), l.Block.Params())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, LayerRollup{l.Name, back})
	}
	return out
}

// TestRollupsMatchBlocks checks every moment statistic computed from
// rollups against the same statistic from the blocks, to 1e-12 relative,
// for a scope of all layers and of one, pooled too.
func TestRollupsMatchBlocks(t *testing.T) {
	const rel = 1e-12
	rng := rand.New(rand.NewPCG(21, 21))
	a, b := testLayers(rng, 37), testLayers(rng, 23)
	for _, scope := range [][]int{{0, 1, 2}, {1}} {
		pick := func(ls []Layer) []Layer {
			var out []Layer
			for _, i := range scope {
				out = append(out, ls[i])
			}
			return out
		}
		la, lb := pick(a), pick(b)
		need := Need{Coords: true, Inner: true}
		want, _ := Compute(la, 0, need)
		got, err := FromRollups(rollups(t, la, true), 0, need)
		if err != nil {
			t.Fatal(err)
		}
		nvW, _ := want.NVar(16)
		nvG, _ := got.NVar(16)
		snW, _ := want.SNR(16)
		snG, _ := got.SNR(16)
		itW, _ := want.InnerTest(16)
		itG, _ := got.InnerTest(16)
		otW, _ := want.OrthoTest(16)
		otG, _ := got.OrthoTest(16)
		for _, c := range []struct {
			what      string
			got, want float64
		}{
			{"variance", got.Variance(16), want.Variance(16)}, {"gns", got.GNS(), want.GNS()}, {"norm", got.Norm(), want.Norm()},
			{"example_norm", got.ExampleNorm(), want.ExampleNorm()}, {"norm_test", got.NormTest(16), want.NormTest(16)},
			{"nvar", nvG, nvW}, {"snr", snG, snW}, {"inner_test", itG, itW}, {"ortho_test", otG, otW},
		} {
			if math.Abs(c.got-c.want) > rel*math.Abs(c.want) {
				t.Errorf("scope %v %s: rollups %.17g, blocks %.17g", scope, c.what, c.got, c.want)
			}
		}
		// Pooled windows merge rollup moments like block moments.
		mb, _ := Compute(lb, 1, Need{Coords: true})
		pw, _ := Merge(want, mb)
		gb, _ := FromRollups(rollups(t, lb, true), 1, Need{Coords: true})
		pg, _ := Merge(got, gb)
		pnW, _ := pw.NVar(8)
		pnG, _ := pg.NVar(8)
		if math.Abs(pg.Variance(8)-pw.Variance(8)) > rel*pw.Variance(8) || math.Abs(pnG-pnW) > rel*pnW {
			t.Errorf("pooled: %g/%g vs %g/%g", pg.Variance(8), pnG, pw.Variance(8), pnW)
		}
		// Without vectors the scalar statistics still work; nvar does not.
		sc, err := FromRollups(rollups(t, la, false), 0, Need{Inner: true})
		if err != nil || math.Abs(sc.Variance(16)-want.Variance(16)) > rel*want.Variance(16) {
			t.Errorf("scalars only: %v, %v", sc, err)
		}
		if _, err := FromRollups(rollups(t, la, false), 0, Need{Coords: true}); !errors.Is(err, ErrNoCoords) {
			t.Errorf("nvar without vectors: %v", err)
		}
	}
}

func TestRollupEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 22))
	l := testLayers(rng, 5)[0]
	r, _ := NewRollup(l, true)
	raw := r.Marshal()
	for i := range raw {
		for bit := range 8 {
			bad := bytes.Clone(raw)
			bad[i] ^= 1 << bit
			if _, err := UnmarshalRollup(bad, 5, l.Block.Params()); !errors.Is(err, ErrCorruptRollup) {
				t.Fatalf("flipped bit %d of byte %d accepted: %v", bit, i, err)
			}
		}
	}
	if _, err := UnmarshalRollup(raw, 6, l.Block.Params()); !errors.Is(err, ErrCorruptRollup) {
		t.Error("a rollup of 5 examples accepted for a snapshot of 6")
	}
	l.Block.Delta[3] = float32(math.NaN())
	r, _ = NewRollup(l, false)
	back, err := UnmarshalRollup(r.Marshal(), 5, l.Block.Params())
	if err != nil || !back.NonFinite || back.BadRow != 0 {
		t.Fatalf("NaN rollup: %+v, %v", back, err)
	}
	m, _ := FromRollups([]LayerRollup{{"fc", back}}, 3, Need{})
	if !m.NonFinite || !math.IsNaN(m.Variance(1)) || len(m.Warnings) != 1 {
		t.Errorf("moments of a NaN rollup: %+v", m)
	}
}

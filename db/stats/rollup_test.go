package stats

import (
	"bytes"
	"encoding/binary"
	"errors"
	"gvdb/db/codec"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// rollups returns each layer's rollup, through an encode/decode round trip.
func rollups(t *testing.T, layers []Layer, vectors Vectors) []LayerRollup {
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
// rollups against the same statistic from the blocks, for a scope of all
// layers and of one, pooled too: to 1e-12 relative with float64 vectors;
// with float32 vectors the scalar statistics stay at 1e-12 and the
// per-coordinate ones (nvar, snr, pooled) within 1e-6 (docs/QUERY.md).
func TestRollupsMatchBlocks(t *testing.T) {
	for _, mode := range []struct {
		v             Vectors
		rel, coordRel float64
	}{{Float64Vectors, 1e-12, 1e-12}, {Float32Vectors, 1e-12, 1e-6}} {
		testRollupsMatchBlocks(t, mode.v, mode.rel, mode.coordRel)
	}
}

func testRollupsMatchBlocks(t *testing.T, vectors Vectors, rel, coordRel float64) {
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
		got, err := FromRollups(rollups(t, la, vectors), 0, need)
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
			rel       float64
		}{
			{"variance", got.Variance(16), want.Variance(16), rel}, {"gns", got.GNS(), want.GNS(), rel},
			{"norm", got.Norm(), want.Norm(), rel}, {"example_norm", got.ExampleNorm(), want.ExampleNorm(), rel},
			{"norm_test", got.NormTest(16), want.NormTest(16), rel}, {"nvar", nvG, nvW, coordRel}, {"snr", snG, snW, coordRel},
			{"inner_test", itG, itW, rel}, {"ortho_test", otG, otW, rel},
		} {
			if math.Abs(c.got-c.want) > c.rel*math.Abs(c.want) {
				t.Errorf("%v scope %v %s: rollups %.17g, blocks %.17g", vectors, scope, c.what, c.got, c.want)
			}
		}
		// Pooled windows merge rollup moments like block moments.
		mb, _ := Compute(lb, 1, Need{Coords: true})
		pw, _ := Merge(want, mb)
		gb, _ := FromRollups(rollups(t, lb, vectors), 1, Need{Coords: true})
		pg, _ := Merge(got, gb)
		pnW, _ := pw.NVar(8)
		pnG, _ := pg.NVar(8)
		if math.Abs(pg.Variance(8)-pw.Variance(8)) > coordRel*pw.Variance(8) || math.Abs(pnG-pnW) > coordRel*pnW {
			t.Errorf("pooled: %g/%g vs %g/%g", pg.Variance(8), pnG, pw.Variance(8), pnW)
		}
		// Without vectors the scalar statistics still work; nvar does not.
		sc, err := FromRollups(rollups(t, la, NoVectors), 0, Need{Inner: true})
		if err != nil || math.Abs(sc.Variance(16)-want.Variance(16)) > rel*want.Variance(16) {
			t.Errorf("scalars only: %v, %v", sc, err)
		}
		if _, err := FromRollups(rollups(t, la, NoVectors), 0, Need{Coords: true}); !errors.Is(err, ErrNoCoords) {
			t.Errorf("nvar without vectors: %v", err)
		}
	}
}

func TestRollupEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 22))
	l := testLayers(rng, 5)[0]
	r, _ := NewRollup(l, Float32Vectors)
	if r.Vectors() != Float32Vectors {
		t.Fatal("float32 vectors fell back to float64")
	}
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
	// Vectors that disagree with their bitmap, under a valid checksum (a
	// forged or truncated file), are refused.
	bad := bytes.Clone(raw[:len(raw)-8])
	bad = binary.LittleEndian.AppendUint32(bad, crc32.Checksum(bad, castagnoli))
	if _, err := UnmarshalRollup(bad, 5, l.Block.Params()); !errors.Is(err, ErrCorruptRollup) {
		t.Errorf("damaged vectors accepted: %v", err)
	}
	if _, err := UnmarshalRollup(raw, 6, l.Block.Params()); !errors.Is(err, ErrCorruptRollup) {
		t.Error("a rollup of 5 examples accepted for a snapshot of 6")
	}
	l.Block.Delta[3] = float32(math.NaN())
	r, _ = NewRollup(l, NoVectors)
	back, err := UnmarshalRollup(r.Marshal(), 5, l.Block.Params())
	if err != nil || !back.NonFinite || back.BadRow != 0 {
		t.Fatalf("NaN rollup: %+v, %v", back, err)
	}
	m, _ := FromRollups([]LayerRollup{{"fc", back}}, 3, Need{})
	if !m.NonFinite || !math.IsNaN(m.Variance(1)) || len(m.Warnings) != 1 {
		t.Errorf("moments of a NaN rollup: %+v", m)
	}
}

// TestRollupFloat32Vectors checks the float32 vectors: they decode to
// exactly what the writer computed; nvar and snr read in place stay within
// 2·2⁻²⁴ relative of the block path's, and each coordinate's nvar term
// from the sums they give back within 4·2⁻²⁴, even where the mean
// dominates (μ_j² ≫ v_j); zero coordinates cost a bit; and values that
// float32 cannot hold keep float64 vectors.
func TestRollupFloat32Vectors(t *testing.T) {
	const n, in, out = 40, 30, 6
	rng := rand.New(rand.NewPCG(23, 23))
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(i)
	}
	b := &codec.Block{Kind: codec.Factored, IDs: ids, T: 1, In: in, Out: out, A: make([]float32, n*in), Delta: make([]float32, n*out)}
	for i := range n {
		for k := range in {
			if k%2 == 0 { // half the inputs are always zero: half the coordinates
				continue
			}
			// Input k's spread shrinks with k: coordinates from noise-
			// dominated to mean-dominated (nvar terms from ~1 to ~1e-8).
			b.A[i*in+k] = float32(1 + math.Pow(10, -float64(k)/8)*rng.NormFloat64())
		}
		for o := range out {
			b.Delta[i*out+o] = float32(0.5 + 1e-5*rng.NormFloat64())
		}
	}
	l := Layer{Name: "fc", Block: b, Weight: true}
	r, err := NewRollup(l, Float32Vectors)
	if err != nil || r.Vectors() != Float32Vectors {
		t.Fatalf("float32 vectors: %v, %v", r.Vectors(), err)
	}
	back, err := UnmarshalRollup(r.Marshal(), n, b.Params())
	if err != nil {
		t.Fatal(err)
	}
	rs, rq, _ := r.Sums()
	bs, bq, err := back.Sums()
	if err != nil {
		t.Fatal(err)
	}
	for j := range rs {
		if bs[j] != rs[j] || bq[j] != rq[j] {
			t.Fatalf("coordinate %d decodes to %g, %g; encoded %g, %g", j, bs[j], bq[j], rs[j], rq[j])
		}
	}
	// nvar and snr read the stored vectors in place, the computed ones
	// as float32 slices, and pooling expands them: the same numbers.
	for _, b := range []float64{1, 16} {
		var got []float64
		for _, ro := range []*Rollup{r, back} {
			m, err := FromRollups([]LayerRollup{{"fc", ro}}, 0, Need{Coords: true})
			if err != nil {
				t.Fatal(err)
			}
			nv, _ := m.NVar(b)
			sn, _ := m.SNR(b)
			got = append(got, nv, sn)
			if err := m.materialize(); err != nil {
				t.Fatal(err)
			}
			nv, _ = m.NVar(b)
			sn, _ = m.SNR(b)
			got = append(got, nv, sn)
		}
		for i := 1; i < len(got); i++ {
			// Expanded (sums in float64) loses to cancellation where
			// μ_j² ≫ v_j, as this layer has on purpose: 1e-9.
			tol := 1e-14
			if i%4 >= 2 {
				tol = 1e-9
			}
			if math.Abs(got[i]-got[i%2]) > tol*math.Abs(got[i%2]) {
				t.Errorf("B = %d: nvar, snr in place, expanded, computed, expanded: %v", int(b), got)
				break
			}
		}
	}
	// In place, nvar and snr read the z_j alone: every term within 2·2⁻²⁴
	// of itself, and so their means.
	blocks, _ := Compute([]Layer{l}, 0, Need{Coords: true})
	inPlace, _ := FromRollups([]LayerRollup{{"fc", back}}, 0, Need{Coords: true})
	for _, b := range []float64{1, 16} {
		for _, f := range []func(*Moments, float64) (float64, error){(*Moments).NVar, (*Moments).SNR} {
			got, _ := f(inPlace, b)
			want, _ := f(blocks, b)
			if math.Abs(got-want) > 2*0x1p-24*want+1e-15 {
				t.Errorf("B = %g: %g in place, %g from blocks (relative %.3g; bound 2·2⁻²⁴)", b, got, want, math.Abs(got-want)/want)
			}
		}
	}
	exact, _ := NewRollup(l, Float64Vectors)
	term := func(sum, sumSq float64) float64 {
		mu := sum / n
		v := max(sumSq/n-mu*mu, 0)
		if mu*mu+v == 0 {
			return 0
		}
		return v / (mu*mu + v)
	}
	worst, smallest := 0.0, 1.0
	for j := range rs {
		want := term(exact.Sum[j], exact.SumSq[j])
		if want == 0 {
			continue
		}
		smallest = min(smallest, want)
		worst = max(worst, math.Abs(term(bs[j], bq[j])-want)/want)
	}
	if worst > 4*0x1p-24 || smallest > 1e-6 {
		t.Errorf("nvar terms: worst relative error %.3g (bound %.3g), smallest term %.3g", worst, 4*0x1p-24, smallest)
	}
	// Half the coordinates are zero: the vectors take well under the 8
	// bytes per coordinate of plain float32 pairs.
	scalars := len(r.WithoutVectors().Marshal())
	if per := float64(len(r.Marshal())-scalars) / float64(b.Params()); per > 5 {
		t.Errorf("float32 vectors take %.2f bytes a coordinate with half of them zero", per)
	}
	// Beyond float32: tiny gradients (means ~1e-40) and huge ones.
	for _, scale := range []float32{1e-21, 1e20} {
		big := *b
		big.A = make([]float32, len(b.A))
		for i, v := range b.A {
			big.A[i] = v * scale
		}
		big.Delta = make([]float32, len(b.Delta))
		for i, v := range b.Delta {
			big.Delta[i] = v * scale
		}
		r, err := NewRollup(Layer{Name: "fc", Block: &big, Weight: true}, Float32Vectors)
		if err != nil || r.Vectors() != Float64Vectors {
			t.Errorf("scale %g: vectors %v, %v; want float64", scale, r.Vectors(), err)
		}
	}
}

// TestRollupHead checks the head of a float32-vector rollup (RollupHead):
// about half its bytes, checked alone, it gives nvar and snr exactly as
// the whole rollup does, and refuses the sums (pooling) it lacks.
func TestRollupHead(t *testing.T) {
	rng := rand.New(rand.NewPCG(24, 24))
	l := testLayers(rng, 9)[0]
	n, d := l.Block.N(), l.Block.Params()
	r, err := NewRollup(l, Float32Vectors)
	if err != nil || r.Vectors() != Float32Vectors {
		t.Fatalf("float32 vectors: %v, %v", r.Vectors(), err)
	}
	raw := r.Marshal()
	h := RollupHead(raw)
	vec := len(raw) - len(r.WithoutVectors().Marshal())
	if h >= len(raw) || len(raw)-h < vec/2-16 {
		t.Fatalf("head %d of %d bytes (vectors %d): want it to leave out the sds", h, len(raw), vec)
	}
	full, err := UnmarshalRollup(raw, n, d)
	if err != nil {
		t.Fatal(err)
	}
	head, err := UnmarshalRollup(raw[:h], n, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []float64{1, 7, 128} {
		var got [2][2]float64
		for i, ro := range []*Rollup{full, head} {
			m, err := FromRollups([]LayerRollup{{"fc", ro}}, 0, Need{Coords: true})
			if err != nil {
				t.Fatal(err)
			}
			got[i][0], _ = m.NVar(b)
			got[i][1], _ = m.SNR(b)
		}
		if got[0] != got[1] || math.IsNaN(got[0][0]) {
			t.Errorf("B = %g: nvar, snr from the whole rollup %v, from its head %v", b, got[0], got[1])
		}
	}
	if _, _, err := head.Sums(); err == nil {
		t.Error("the head gave sums")
	}
	if _, err := FromRollups([]LayerRollup{{"fc", head}}, 0, Need{Coords: true, Mean: true}); err == nil {
		t.Error("the head was pooled")
	}
	for i := range h {
		bad := bytes.Clone(raw[:h])
		bad[i] ^= 0x10
		if _, err := UnmarshalRollup(bad, n, d); !errors.Is(err, ErrCorruptRollup) {
			t.Fatalf("flipped byte %d of the head accepted: %v", i, err)
		}
	}
	for _, cut := range []int{h - 1, h + 1, len(raw) - 1} {
		if _, err := UnmarshalRollup(raw[:cut], n, d); !errors.Is(err, ErrCorruptRollup) {
			t.Errorf("%d of %d bytes (head %d) accepted: %v", cut, len(raw), h, err)
		}
	}
	f64, _ := NewRollup(l, Float64Vectors)
	if raw := f64.Marshal(); RollupHead(raw) != len(raw) {
		t.Error("RollupHead cut float64 vectors")
	}
	for _, junk := range [][]byte{nil, {1}, {1, flagRatios}, {1, flagRatios, 0xff}} {
		if RollupHead(junk) != len(junk) {
			t.Errorf("RollupHead(%x) = %d", junk, RollupHead(junk))
		}
	}
}

// TestRollupMeanSD reads the float32 vectors of stores written before the
// ratios, a bitmap then float32 means and sds (flag bit 2): they give back
// N·μ_j and N·(s_j² + μ_j²) exactly, gvdb check's recomputation matches
// them, and nvar stays within 1e-6 of the blocks'.
func TestRollupMeanSD(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 25))
	l := testLayers(rng, 11)[0]
	n, d := l.Block.N(), l.Block.Params()
	exact, _ := NewRollup(l, Float64Vectors)
	// The old encoding, as gvdb wrote it.
	v := []byte{rollupVersion, flagMeanSD}
	v = binary.AppendUvarint(v, uint64(n))
	v = binary.AppendUvarint(v, uint64(d))
	v = binary.AppendUvarint(v, 0)
	f := func(x float64) { v = binary.LittleEndian.AppendUint64(v, math.Float64bits(x)) }
	f(exact.SumSqNorm)
	f(exact.SumNormSq)
	for i := range n {
		f(exact.SqNorms[i])
		f(exact.Inner[i])
	}
	bm := make([]byte, (d+7)/8)
	var means, sds []float32
	for j, s := range exact.Sum {
		mu := s / float64(n)
		sd := math.Sqrt(max(exact.SumSq[j]/float64(n)-mu*mu, 0))
		if mu != 0 || sd != 0 {
			bm[j/8] |= 1 << (j % 8)
			means, sds = append(means, float32(mu)), append(sds, float32(sd))
		}
	}
	v = append(v, bm...)
	for _, x := range slices.Concat(means, sds) {
		v = binary.LittleEndian.AppendUint32(v, math.Float32bits(x))
	}
	v = binary.LittleEndian.AppendUint32(v, crc32.Checksum(v, castagnoli))
	if RollupHead(v) != len(v) {
		t.Error("RollupHead cut (mean, sd) vectors")
	}
	r, err := UnmarshalRollup(v, n, d)
	if err != nil || r.Vectors() != Float32Vectors {
		t.Fatalf("(mean, sd) vectors: %v, %v", r.Vectors(), err)
	}
	sum, sumSq, _ := r.Sums()
	re, err := Recompute(l, r)
	if err != nil {
		t.Fatal(err)
	}
	rs, rq, _ := re.Sums()
	k := 0
	for j := range sum {
		var mu, sd float64
		if bm[j/8]&(1<<(j%8)) != 0 {
			mu, sd = float64(means[k]), float64(sds[k])
			k++
		}
		want, wantSq := float64(n)*mu, float64(n)*(sd*sd+mu*mu)
		if sum[j] != want || sumSq[j] != wantSq || rs[j] != want || rq[j] != wantSq {
			t.Fatalf("coordinate %d: read %g, %g; recomputed %g, %g; stored %g, %g", j, sum[j], sumSq[j], rs[j], rq[j], want, wantSq)
		}
	}
	if re.Vectors() != Float32Vectors {
		t.Errorf("recomputed with %v", re.Vectors())
	}
	m, _ := FromRollups([]LayerRollup{{"fc", r}}, 0, Need{Coords: true})
	blocks, _ := Compute([]Layer{l}, 0, Need{Coords: true})
	got, _ := m.NVar(16)
	want, _ := blocks.NVar(16)
	if math.Abs(got-want) > 1e-6*want {
		t.Errorf("nvar(16) from (mean, sd) vectors %g, from blocks %g", got, want)
	}
}

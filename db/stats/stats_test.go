package stats

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gvdb/db/codec"
)

// testLayers makes a scope with every block shape: a dense layer (T = 1),
// a convolution-like factored layer (T = 3) and a dense-row bias.
func testLayers(rng *rand.Rand, n int) []Layer {
	ids := make([]uint64, n)
	for i, p := range rng.Perm(10 * n)[:n] {
		ids[i] = uint64(p)
	}
	vals := func(k int, relu bool, mean float64) []float32 {
		v := make([]float32, k)
		for i := range v {
			x := rng.NormFloat64() + mean
			if relu && x < 0 {
				x = 0
			}
			v[i] = float32(x)
		}
		return v
	}
	return []Layer{
		{"fc.weight", &codec.Block{Kind: codec.Factored, IDs: ids, T: 1, In: 7, Out: 5, A: vals(n*7, true, 0.3), Delta: vals(n*5, false, 0.2)}, true},
		{"conv.weight", &codec.Block{Kind: codec.Factored, IDs: ids, T: 3, In: 4, Out: 3, A: vals(n*3*4, true, 0), Delta: vals(n*3*3, false, 0.1)}, true},
		{"fc.bias", &codec.Block{Kind: codec.Dense, IDs: ids, Dim: 5, Rows: vals(n*5, false, 0.5)}, false},
	}
}

// brute holds materialized per-example gradients in float64.
type brute struct {
	n, d int
	g    [][]float64
	mu   []float64
}

func materializeAll(layers []Layer) *brute {
	n := layers[0].Block.N()
	b := &brute{n: n}
	for _, l := range layers {
		b.d += l.Block.Params()
	}
	b.g = make([][]float64, n)
	b.mu = make([]float64, b.d)
	for i := range n {
		for _, l := range layers {
			b.g[i] = append(b.g[i], l.Block.Gradient(i, make([]float64, l.Block.Params()))...)
		}
		for j, v := range b.g[i] {
			b.mu[j] += v / float64(n)
		}
	}
	return b
}

func dot(x, y []float64) float64 {
	s := 0.0
	for i := range x {
		s += x[i] * y[i]
	}
	return s
}

func (b *brute) variance(bs float64) float64 {
	s := 0.0
	for _, g := range b.g {
		for j, v := range g {
			s += (v - b.mu[j]) * (v - b.mu[j])
		}
	}
	return s / float64(b.n) / (bs * float64(b.d))
}

func (b *brute) coordVar(j int) float64 {
	s := 0.0
	for _, g := range b.g {
		s += (g[j] - b.mu[j]) * (g[j] - b.mu[j])
	}
	return s / float64(b.n)
}

func (b *brute) nvar(bs float64) float64 {
	s := 0.0
	for j := range b.d {
		v := b.coordVar(j) / bs
		if den := b.mu[j]*b.mu[j] + v; den > 0 {
			s += v / den
		}
	}
	return s / float64(b.d)
}

func (b *brute) snr(bs float64) float64 {
	s := 0.0
	for j := range b.d {
		if v := b.coordVar(j) / bs; v > 0 {
			s += math.Log((b.mu[j]*b.mu[j] + v) / v)
		}
	}
	return s / float64(b.d)
}

func (b *brute) gns() float64 {
	return b.variance(1) * float64(b.d) / dot(b.mu, b.mu)
}

func (b *brute) exampleNorm() float64 {
	s := 0.0
	for _, g := range b.g {
		s += math.Sqrt(dot(g, g))
	}
	return s / float64(b.n)
}

// cockpit computes the three tests from their definitions with batch B.
func (b *brute) cockpit(bs float64) (norm, inner, ortho float64) {
	mu2 := dot(b.mu, b.mu)
	n := float64(b.n)
	var sn, si, so float64
	for _, g := range b.g {
		gi := dot(g, b.mu)
		for j, v := range g {
			sn += (v - b.mu[j]) * (v - b.mu[j])
			p := v - gi/mu2*b.mu[j]
			so += p * p
		}
		si += (gi - mu2) * (gi - mu2)
	}
	return math.Sqrt(sn / ((n - 1) * bs * mu2)), math.Sqrt(si / (n - 1) / (bs * mu2 * mu2)), math.Sqrt(so / ((n - 1) * bs * mu2))
}

// gc returns the weighted objective, the GC variance and the GC nvar of a
// partition, from their definitions.
func (b *brute) gc(assign []int, k int, bs float64) (obj, variance, nvar float64) {
	size := make([]int, k)
	mean := make([][]float64, k)
	for c := range mean {
		mean[c] = make([]float64, b.d)
	}
	for i, c := range assign {
		size[c]++
		for j, v := range b.g[i] {
			mean[c][j] += v
		}
	}
	for c := range mean {
		for j := range mean[c] {
			if size[c] > 0 {
				mean[c][j] /= float64(size[c])
			}
		}
	}
	vj := make([]float64, b.d)
	for i, c := range assign {
		for j, v := range b.g[i] {
			e := (v - mean[c][j]) * (v - mean[c][j]) * float64(size[c])
			obj += e
			vj[j] += e
		}
	}
	per := bs / float64(k)
	n2 := float64(b.n) * float64(b.n)
	for j := range vj {
		vj[j] /= per * n2
		if den := b.mu[j]*b.mu[j] + vj[j]; den > 0 {
			nvar += vj[j] / den
		}
	}
	return obj, obj / (per * n2) / float64(b.d), nvar / float64(b.d)
}

// near asserts a relative error <= tol; where the exact value is 0 (a
// gc_nvar of singleton clusters, say) it allows rounding residue of 1e-12.
func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if want == 0 && math.Abs(got) <= 1e-12 {
		return
	}
	if math.IsNaN(got) || math.Abs(got-want) > tol*math.Abs(want) {
		t.Errorf("%s = %.15g, brute force %.15g (relative error %.2g > %g)", what, got, want, math.Abs(got-want)/math.Abs(want), tol)
	}
}

const tol = 1e-9

func TestMomentsMatchBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{2, 17, 64} {
		layers := testLayers(rng, n)
		br := materializeAll(layers)
		m, err := Compute(layers, 0, Need{Coords: true, Inner: true})
		if err != nil {
			t.Fatal(err)
		}
		if m.N != n || m.D != br.d {
			t.Fatalf("N, D = %d, %d; want %d, %d", m.N, m.D, n, br.d)
		}
		for _, bs := range []float64{1, 8, 128} {
			near(t, "variance", m.Variance(bs), br.variance(bs), tol)
			nv, _ := m.NVar(bs)
			near(t, "nvar", nv, br.nvar(bs), tol)
			snr, _ := m.SNR(bs)
			near(t, "snr", snr, br.snr(bs), tol)
			wn, wi, wo := br.cockpit(bs)
			near(t, "norm_test", m.NormTest(bs), wn, tol)
			it, _ := m.InnerTest(bs)
			near(t, "inner_test", it, wi, 1e-7) // a variance of inner products: more cancellation
			ot, _ := m.OrthoTest(bs)
			near(t, "ortho_test", ot, wo, tol)
		}
		near(t, "gns", m.GNS(), br.gns(), tol)
		near(t, "norm", m.Norm(), math.Sqrt(dot(br.mu, br.mu)), tol)
		near(t, "example_norm", m.ExampleNorm(), br.exampleNorm(), tol)
	}
}

// TestGramRoute checks |Σ g_i|² through the Gram form (forced) against
// brute force, and that the cost model picks it for small N only.
func TestGramRoute(t *testing.T) {
	defer func() { gramRoute = 0 }()
	rng := rand.New(rand.NewPCG(9, 9))
	for _, n := range []int{1, 3, 40, 300} {
		layers := testLayers(rng, n)
		br := materializeAll(layers)
		for _, route := range []int{1, -1} {
			gramRoute = route
			m, err := Compute(layers, 0, Need{})
			if err != nil {
				t.Fatal(err)
			}
			if m.Sum != nil {
				t.Fatal("Sum kept without Need.Mean")
			}
			near(t, "variance", m.Variance(16), br.variance(16), tol)
			if n > 1 {
				near(t, "gns", m.GNS(), br.gns(), tol)
			}
			near(t, "norm", m.Norm(), math.Sqrt(dot(br.mu, br.mu)), tol)
			near(t, "example_norm", m.ExampleNorm(), br.exampleNorm(), tol)
		}
	}
	gramRoute = 0
	if useGram(1024, 784, 1024) || !useGram(128, 784, 1024) {
		t.Error("cost model: want AᵀΔ at N = 1024 and the Gram form at N = 128 for a 784 x 1024 layer")
	}
	m, _ := Compute(testLayers(rng, 4), 0, Need{})
	if _, err := Merge(m, m); err == nil {
		t.Error("Merge without Need.Mean succeeded")
	}
}

func TestGramMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{1, 5, 300} { // 300 spans two Gram chunks
		layers := testLayers(rng, n)
		br := materializeAll(layers)
		g, err := NewGram(layers)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			for j := range n {
				near(t, "K_ij", g.K[i*n+j], dot(br.g[i], br.g[j]), tol)
			}
		}
	}
}

// paths are both ways of searching a partition, each forced.
var paths = []Path{PathGram, PathSketch}

func TestGCMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	layers := testLayers(rng, 60)
	br := materializeAll(layers)
	m, _ := Compute(layers, 0, Need{Coords: true})
	for _, path := range paths {
		for _, paper := range []bool{false, true} {
			gc, err := NewGC(layers, GCOptions{Seed: 5, NoMoves: paper, Path: path, SketchDim: 8})
			if err != nil {
				t.Fatal(err)
			}
			if gc.Path() != path {
				t.Fatalf("path %v, want %v", gc.Path(), path)
			}
			for _, k := range []int{1, 2, 7, 60} {
				p, err := gc.InSample(k)
				if err != nil {
					t.Fatal(err)
				}
				obj, v, nv := br.gc(p.Assign, k, 128)
				near(t, "objective", p.Distortion(), obj, tol)
				near(t, "gc_variance", p.Variance(128, m.D), v, tol)
				gnv, err := gc.NVar(p, m, 128)
				if err != nil {
					t.Fatal(err)
				}
				near(t, "gc_nvar", gnv, nv, tol)
				for r := 1; r < len(p.History); r++ {
					if p.History[r] > p.History[r-1]*(1+1e-12) {
						t.Errorf("%v K=%d paper=%v: objective rose in round %d: %v", path, k, paper, r, p.History)
					}
				}
				total := 0
				for _, s := range p.Sizes {
					total += s
				}
				if total != 60 {
					t.Errorf("sizes %v sum to %d", p.Sizes, total)
				}
			}
		}
	}
}

// heldOutBrute scores the partition's held-out halves from their
// definitions: the mean over halves of Σ_k n_k SS_k / (n(n−1)), and per
// coordinate for the normalized variance with batch bs.
func (b *brute) heldOut(p *Partition, bs float64) (varB, nvar float64) {
	vj := make([]float64, b.d)
	for _, f := range p.folds {
		n := float64(len(f.rows))
		size := make([]float64, p.K)
		mean := make([][]float64, p.K)
		for c := range mean {
			mean[c] = make([]float64, b.d)
		}
		for r, i := range f.rows {
			size[f.assign[r]]++
			for j, v := range b.g[i] {
				mean[f.assign[r]][j] += v
			}
		}
		for c := range mean {
			for j := range mean[c] {
				if size[c] > 0 {
					mean[c][j] /= size[c]
				}
			}
		}
		for r, i := range f.rows {
			c := f.assign[r]
			for j, v := range b.g[i] {
				e := size[c] * (v - mean[c][j]) * (v - mean[c][j]) / (n * (n - 1)) / 2
				varB += e
				vj[j] += e
			}
		}
	}
	per := bs / float64(p.K)
	for j, x := range vj {
		if den := b.mu[j]*b.mu[j] + x/per; den > 0 {
			nvar += x / per / den
		}
	}
	return varB, nvar / float64(b.d)
}

func TestGCHeldOutMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	layers := testLayers(rng, 61)
	br := materializeAll(layers)
	m, _ := Compute(layers, 0, Need{Coords: true})
	for _, path := range paths {
		gc, err := NewGC(layers, GCOptions{Seed: 2, Path: path, SketchDim: 8})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []int{1, 3, 30} {
			p, err := gc.HeldOut(k)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.folds[0].rows)+len(p.folds[1].rows) != 61 || len(p.folds[0].rows) != 31 {
				t.Fatalf("halves of %d and %d examples", len(p.folds[0].rows), len(p.folds[1].rows))
			}
			seen := map[int]bool{}
			for _, f := range p.folds {
				for r, i := range f.rows {
					if seen[i] || r > 0 && br.g != nil && layers[0].Block.IDs[f.rows[r-1]] > layers[0].Block.IDs[i] {
						t.Fatal("halves overlap or are not in id order")
					}
					seen[i] = true
				}
			}
			vb, nv := br.heldOut(p, 128)
			near(t, "held-out VarB", p.VarB, vb, tol)
			gnv, err := gc.NVar(p, m, 128)
			if err != nil {
				t.Fatal(err)
			}
			near(t, "held-out gc_nvar", gnv, nv, tol)
		}
		if _, err := gc.HeldOut(31); err == nil {
			t.Error("held-out K above the half's size accepted")
		}
	}
}

func TestGCInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	layers := testLayers(rng, 40)
	m, _ := Compute(layers, 0, Need{Coords: true})
	nv, _ := m.NVar(128)
	for _, path := range paths {
		gc, err := NewGC(layers, GCOptions{Seed: 1, Path: path, SketchDim: 8})
		if err != nil {
			t.Fatal(err)
		}
		one, _ := gc.InSample(1)
		near(t, "gc_variance(1, B) vs variance(B)", one.Variance(128, m.D), m.Variance(128), tol)
		nv1, _ := gc.NVar(one, m, 128)
		near(t, "gc_nvar(1, B) vs nvar(B)", nv1, nv, tol)
		all, _ := gc.InSample(40)
		if v := all.Variance(128, m.D); math.Abs(v) > 1e-12*m.Variance(128) {
			t.Errorf("%v: gc_variance(N, B) = %g, want 0", path, v)
		}
		// Held out with K = 1: the mean over the halves h of the unbiased
		// variance n_h/(n_h − 1)·S_h, over B·D.
		h1, _ := gc.HeldOut(1)
		want := 0.0
		for _, f := range h1.folds {
			sub := make([]Layer, len(layers))
			for li, l := range layers {
				sub[li] = Layer{Name: l.Name, Block: subset(l.Block, f.rows)}
			}
			mh, _ := Compute(sub, 0, Need{})
			nh := float64(mh.N)
			want += nh / (nh - 1) * mh.Variance(128) / 2
		}
		near(t, "held-out gc_variance(1, B)", h1.Variance(128, m.D), want, tol)
		curve, err := gc.Curve(40, false)
		if err != nil {
			t.Fatal(err)
		}
		if curve.K[0] != 1 || curve.K[len(curve.K)-1] != 40 || curve.D0 != curve.Distortion[0] {
			t.Fatalf("curve %+v", curve)
		}
		if path == PathGram {
			// The exact refinement never ends above the one-cluster distortion.
			for i := 1; i < len(curve.K); i++ {
				if curve.Distortion[i] > curve.D0 {
					t.Errorf("K=%d distortion %g above D0 %g", curve.K[i], curve.Distortion[i], curve.D0)
				}
			}
		}
		if hc, err := gc.Curve(10, true); err != nil || !hc.HeldOut || hc.K[len(hc.K)-1] != 10 {
			t.Fatalf("held-out curve %+v, %v", hc, err)
		}
		if _, err := gc.InSample(41); err == nil {
			t.Error("K > N accepted")
		}
		if _, err := gc.InSample(0); err == nil {
			t.Error("K = 0 accepted")
		}
	}
	if _, err := NewGC(layers, GCOptions{MemoryBudget: 1000}); !errors.Is(err, ErrBudget) || !strings.Contains(err.Error(), "budget") {
		t.Errorf("tiny budget: %v", err)
	}
}

// TestSketchNearGram clusters examples with a cluster structure on both
// paths: the sketch path's exact objective stays within 10% of the Gram
// path's.
func TestSketchNearGram(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	const n, k = 400, 8
	layers := testLayers(rng, n)
	// Shift each example's factors by one of k centres.
	centres := make([][]float32, k)
	for c := range centres {
		centres[c] = make([]float32, 7+5)
		for j := range centres[c] {
			centres[c][j] = float32(3 * rng.NormFloat64())
		}
	}
	fc := layers[0].Block
	for i := range n {
		c := centres[i%k]
		for j := range 7 {
			fc.A[i*7+j] += c[j]
		}
		for j := range 5 {
			fc.Delta[i*5+j] += c[7+j]
		}
	}
	var obj [2]float64
	for pi, path := range paths {
		gc, err := NewGC(layers, GCOptions{Seed: 3, Path: path, SketchDim: 16})
		if err != nil {
			t.Fatal(err)
		}
		p, err := gc.InSample(k)
		if err != nil {
			t.Fatal(err)
		}
		obj[pi] = p.Distortion()
	}
	if obj[1] > 1.1*obj[0] {
		t.Errorf("sketch objective %g more than 10%% above the Gram path's %g", obj[1], obj[0])
	}
}

// TestSVRGMatchesBruteForce checks the statistics of SVRG's per-example
// differences g_i(θ) − g_i(θ̃) against materialized differences, and that
// they vanish when the anchor is the current point.
func TestSVRGMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	cur := testLayers(rng, 33)
	anc := testLayers(rng, 33)
	var diff []Layer
	for li := range cur {
		anc[li].Block.IDs = cur[li].Block.IDs
		d, err := Difference(cur[li].Block, anc[li].Block)
		if err != nil {
			t.Fatal(err)
		}
		diff = append(diff, Layer{Name: cur[li].Name, Block: d})
	}
	bc, ba := materializeAll(cur), materializeAll(anc)
	br := &brute{n: bc.n, d: bc.d, mu: make([]float64, bc.d)}
	for i := range bc.g {
		h := make([]float64, bc.d)
		for j := range h {
			h[j] = bc.g[i][j] - ba.g[i][j]
			br.mu[j] += h[j] / float64(bc.n)
		}
		br.g = append(br.g, h)
	}
	mc, _ := Compute(cur, 0, Need{Mean: true})
	for _, need := range []Need{{}, {Coords: true}} {
		m, err := Compute(diff, 0, need)
		if err != nil {
			t.Fatal(err)
		}
		near(t, "svrg_variance", m.Variance(16), br.variance(16), tol)
		if need.Coords {
			// The estimator's mean is the gradient's μ, not the
			// differences' mean.
			want := 0.0
			for j := range br.d {
				v := br.coordVar(j) / 16
				if den := bc.mu[j]*bc.mu[j] + v; den > 0 {
					want += v / den
				}
			}
			nv, err := SVRGNVar(m, mc, 16)
			if err != nil {
				t.Fatal(err)
			}
			near(t, "svrg_nvar", nv, want/float64(br.d), tol)
		}
	}
	// At the refresh step the anchor is the current point.
	var zero []Layer
	for _, l := range cur {
		d, _ := Difference(l.Block, l.Block)
		zero = append(zero, Layer{Name: l.Name, Block: d})
	}
	m, _ := Compute(zero, 0, Need{Coords: true})
	nv, _ := SVRGNVar(m, mc, 16)
	if m.Variance(16) != 0 || nv != 0 {
		t.Errorf("svrg at the anchor: variance %g, nvar %g, want 0", m.Variance(16), nv)
	}
	bad := *anc[0].Block
	bad.IDs = append([]uint64{99}, bad.IDs[1:]...)
	if _, err := Difference(cur[0].Block, &bad); err == nil {
		t.Error("difference of blocks with other example ids accepted")
	}
	if _, err := Difference(cur[0].Block, anc[2].Block); err == nil {
		t.Error("difference of a factored and a dense block accepted")
	}
}

// permute reorders the examples of every block by perm.
func permute(layers []Layer, perm []int) []Layer {
	out := make([]Layer, len(layers))
	for li, l := range layers {
		b := *l.Block
		rows := func(v []float32, w int) []float32 {
			if v == nil {
				return nil
			}
			o := make([]float32, len(v))
			for i, p := range perm {
				copy(o[i*w:(i+1)*w], v[p*w:(p+1)*w])
			}
			return o
		}
		b.IDs = make([]uint64, len(perm))
		for i, p := range perm {
			b.IDs[i] = l.Block.IDs[p]
		}
		b.A, b.Delta, b.Rows = rows(l.Block.A, b.T*b.In), rows(l.Block.Delta, b.T*b.Out), rows(l.Block.Rows, b.Dim)
		out[li] = Layer{Name: l.Name, Block: &b}
	}
	return out
}

func TestPermutationInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	layers := testLayers(rng, 50)
	perm := rng.Perm(50)
	pl := permute(layers, perm)
	m1, _ := Compute(layers, 0, Need{Coords: true, Inner: true})
	m2, _ := Compute(pl, 0, Need{Coords: true, Inner: true})
	near(t, "variance", m2.Variance(32), m1.Variance(32), tol)
	n1, _ := m1.NVar(32)
	n2, _ := m2.NVar(32)
	near(t, "nvar", n2, n1, tol)
	i1, _ := m1.InnerTest(32)
	i2, _ := m2.InnerTest(32)
	near(t, "inner_test", i2, i1, 1e-7)
	for _, path := range paths {
		g1, _ := NewGC(layers, GCOptions{Seed: 4, Path: path, SketchDim: 8})
		g2, _ := NewGC(pl, GCOptions{Seed: 4, Path: path, SketchDim: 8})
		h1, _ := g1.HeldOut(5)
		h2, _ := g2.HeldOut(5)
		near(t, "held-out gc variance", h2.VarB, h1.VarB, 1e-9)
	}
	g1, _ := NewGram(layers)
	g2, _ := NewGram(pl)
	for _, paper := range []bool{false, true} {
		c1, _ := Cluster(g1, layers[0].Block.IDs, 8, GCOptions{Seed: 9, NoMoves: paper})
		c2, _ := Cluster(g2, pl[0].Block.IDs, 8, GCOptions{Seed: 9, NoMoves: paper})
		near(t, "gc objective", c2.Objective, c1.Objective, 1e-9)
		for i, p := range perm {
			if c2.Assign[i] != c1.Assign[p] {
				t.Fatalf("paper=%v: example %d changed cluster under permutation", paper, p)
			}
		}
	}
}

func TestPooled(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	a, b := testLayers(rng, 20), testLayers(rng, 30)
	ma, _ := Compute(a, 0, Need{Coords: true})
	mb, _ := Compute(b, 1, Need{Coords: true})
	p, err := Merge(ma, mb)
	if err != nil {
		t.Fatal(err)
	}
	// The pooled population is the union of both snapshots' examples.
	union := materializeAll(a)
	ub := materializeAll(b)
	union.g = append(union.g, ub.g...)
	union.n = 50
	union.mu = make([]float64, union.d)
	for _, g := range union.g {
		for j, v := range g {
			union.mu[j] += v / 50
		}
	}
	near(t, "pooled variance", p.Variance(16), union.variance(16), tol)
	nv, _ := p.NVar(16)
	near(t, "pooled nvar", nv, union.nvar(16), tol)
	if _, err := p.InnerTest(16); err == nil {
		t.Error("pooled inner test has no inner products, want an error")
	}
}

func TestNonFinite(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	layers := testLayers(rng, 10)
	layers[1].Block.Delta[7] = float32(math.NaN())
	m, err := Compute(layers, 42, Need{Coords: true, Inner: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Warnings) != 1 || !strings.Contains(m.Warnings[0], "conv.weight") || !strings.Contains(m.Warnings[0], "step 42") {
		t.Fatalf("warnings %q", m.Warnings)
	}
	nv, _ := m.NVar(8)
	it, _ := m.InnerTest(8)
	for name, v := range map[string]float64{"variance": m.Variance(8), "gns": m.GNS(), "nvar": nv, "inner": it, "example_norm": m.ExampleNorm()} {
		if !math.IsNaN(v) {
			t.Errorf("%s = %g with a NaN gradient, want NaN", name, v)
		}
	}
	layers[1].Block.Delta[7] = float32(math.Inf(1))
	if m, _ := Compute(layers, 1, Need{}); !m.NonFinite || !math.IsNaN(m.Variance(1)) {
		t.Error("Inf gradient not flagged")
	}
}

// TestHalvesKeepCopiesTogether: with split keys, examples that share a key
// (a source and its copies) land in the same held-out half.
func TestHalvesKeepCopiesTogether(t *testing.T) {
	rng := rand.New(rand.NewPCG(30, 30))
	layers := testLayers(rng, 50)
	keys := make([]uint64, 50)
	for i := range keys {
		keys[i] = uint64(i / 5) // groups of 5 copies
	}
	g, err := NewGC(layers, GCOptions{Seed: 3, Path: PathGram, SplitKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	half := map[uint64]int{}
	for h, f := range g.halves() {
		for _, i := range f {
			if prev, ok := half[keys[i]]; ok && prev != h {
				t.Fatalf("key %d in both halves", keys[i])
			}
			half[keys[i]] = h
		}
	}
}

// TestBootstrap checks the weighted-resample moments against moments
// computed on the materialized resample (identity weights first), and that
// the interval brackets the statistic.
func TestBootstrap(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 31))
	layers := testLayers(rng, 40)
	m, _ := Compute(layers, 0, Need{Inner: true})
	g, _ := NewGram(layers)
	var seen []*Moments
	lo, hi, err := Bootstrap(g, m.D, 0.9, 7, func(b *Moments) (float64, error) {
		seen = append(seen, b)
		return b.Variance(16), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !(lo < m.Variance(16) && m.Variance(16) < hi) {
		t.Errorf("90%% interval [%g, %g] misses variance %g", lo, hi, m.Variance(16))
	}
	// Replay the first resample's draws by brute force.
	rs := rand.New(rand.NewPCG(7, 0xb007))
	var rows []int
	for range 40 {
		rows = append(rows, rs.IntN(40))
	}
	want, _ := Compute(SubsetLayers(layers, rows), 0, Need{Inner: true})
	got := seen[0]
	near(t, "resample variance", got.Variance(16), want.Variance(16), tol)
	near(t, "resample gns", got.GNS(), want.GNS(), tol)
	near(t, "resample example_norm", got.ExampleNorm(), want.ExampleNorm(), tol)
	wi, _ := want.InnerTest(16)
	gi, _ := got.InnerTest(16)
	near(t, "resample inner_test", gi, wi, 1e-7)
	wo, _ := want.OrthoTest(16)
	gotO, _ := got.OrthoTest(16)
	near(t, "resample ortho_test", gotO, wo, tol)
}

// TestBootstrapCoverage draws samples of N gradients from a population
// whose values are known (g = μ + z, z ~ N(0, I_D): variance per
// coordinate of the B-mean 1/B, gns D/|μ|²) and checks that the 90%
// interval covers the true value about 90% of the time.
func TestBootstrapCoverage(t *testing.T) {
	const n, d, trials, b = 100, 20, 120, 10
	rng := rand.New(rand.NewPCG(5, 5))
	mu := 0.4
	trueVar, trueGNS := 1.0/b, float64(d)/(float64(d)*mu*mu)
	var coverVar, coverGNS int
	for tr := range trials {
		ids := make([]uint64, n)
		rows := make([]float32, n*d)
		for i := range ids {
			ids[i] = uint64(i)
		}
		for i := range rows {
			rows[i] = float32(mu + rng.NormFloat64())
		}
		layers := []Layer{{Name: "x", Block: &codec.Block{Kind: codec.Dense, IDs: ids, Dim: d, Rows: rows}}}
		g, err := NewGram(layers)
		if err != nil {
			t.Fatal(err)
		}
		lo, hi, err := Bootstrap(g, d, 0.9, uint64(tr+1), func(m *Moments) (float64, error) { return m.Variance(b), nil })
		if err != nil {
			t.Fatal(err)
		}
		if lo <= trueVar && trueVar <= hi {
			coverVar++
		}
		lo, hi, err = Bootstrap(g, d, 0.9, uint64(tr+1), func(m *Moments) (float64, error) { return m.GNS(), nil })
		if err != nil {
			t.Fatal(err)
		}
		if lo <= trueGNS && trueGNS <= hi {
			coverGNS++
		}
	}
	// gns is a ratio whose plug-in is biased (|μ̂|² runs high by S/N):
	// its coverage falls short of the nominal level (measured: 81% basic,
	// 66% percentile; variance 88% and 77%).
	floor := map[string]float64{"variance": 0.82, "gns": 0.75}
	for name, c := range map[string]int{"variance": coverVar, "gns": coverGNS} {
		if f := float64(c) / trials; f < floor[name] || f > 0.98 {
			t.Errorf("90%% interval of %s covers the true value in %.0f%% of %d samples", name, 100*f, trials)
		}
		t.Logf("%s: covered in %d of %d", name, c, trials)
	}
}

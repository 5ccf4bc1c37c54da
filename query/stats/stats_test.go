package stats

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gvdb/ingest/codec"
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
		{"fc.weight", &codec.Block{Kind: codec.Factored, IDs: ids, T: 1, In: 7, Out: 5, A: vals(n*7, true, 0.3), Delta: vals(n*5, false, 0.2)}},
		{"conv.weight", &codec.Block{Kind: codec.Factored, IDs: ids, T: 3, In: 4, Out: 3, A: vals(n*3*4, true, 0), Delta: vals(n*3*3, false, 0.1)}},
		{"fc.bias", &codec.Block{Kind: codec.Dense, IDs: ids, Dim: 5, Rows: vals(n*5, false, 0.5)}},
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

func TestGCMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	layers := testLayers(rng, 60)
	br := materializeAll(layers)
	g, err := NewGram(layers)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := Compute(layers, 0, Need{Coords: true})
	ids := layers[0].Block.IDs
	for _, k := range []int{1, 2, 7, 60} {
		for _, paper := range []bool{false, true} {
			c, err := Cluster(g, ids, k, GCOptions{Seed: 5, PaperOnly: paper})
			if err != nil {
				t.Fatal(err)
			}
			obj, v, nv := br.gc(c.Assign, k, 128)
			near(t, "objective", c.Objective, obj, tol)
			near(t, "gc_variance", c.Variance(128, m.D), v, tol)
			gnv, err := GCNVar(layers, c, m, 128)
			if err != nil {
				t.Fatal(err)
			}
			near(t, "gc_nvar", gnv, nv, tol)
			for r := 1; r < len(c.History); r++ {
				if c.History[r] > c.History[r-1]*(1+1e-12) {
					t.Errorf("K=%d paper=%v: objective rose in round %d: %v", k, paper, r, c.History)
				}
			}
			total := 0
			for _, s := range c.Sizes {
				total += s
				if s == 0 && k <= 60 {
					t.Errorf("K=%d paper=%v: empty cluster, sizes %v", k, paper, c.Sizes)
				}
			}
			if total != 60 {
				t.Errorf("sizes %v sum to %d", c.Sizes, total)
			}
		}
	}
}

func TestGCInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	layers := testLayers(rng, 40)
	m, _ := Compute(layers, 0, Need{Coords: true})
	g, _ := NewGram(layers)
	ids := layers[0].Block.IDs
	one, _ := Cluster(g, ids, 1, GCOptions{})
	near(t, "gc_variance(1, B) vs variance(B)", one.Variance(128, m.D), m.Variance(128), tol)
	nv1, _ := GCNVar(layers, one, m, 128)
	nv, _ := m.NVar(128)
	near(t, "gc_nvar(1, B) vs nvar(B)", nv1, nv, tol)
	all, _ := Cluster(g, ids, 40, GCOptions{})
	if v := all.Variance(128, m.D); math.Abs(v) > 1e-12*m.Variance(128) {
		t.Errorf("gc_variance(N, B) = %g, want 0", v)
	}
	// More clusters never hurt much: the exact refinement reaches at
	// most the one-cluster distortion.
	curve, err := DistortionCurve(g, ids, GCOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if curve.K[0] != 1 || curve.K[len(curve.K)-1] != 40 || curve.D0 != curve.Distortion[0] {
		t.Fatalf("curve %+v", curve)
	}
	for i := 1; i < len(curve.K); i++ {
		if curve.Distortion[i] > curve.D0 {
			t.Errorf("K=%d distortion %g above D0 %g", curve.K[i], curve.Distortion[i], curve.D0)
		}
	}
	if _, err := Cluster(g, ids, 41, GCOptions{}); err == nil {
		t.Error("K > N accepted")
	}
	if _, err := Cluster(g, ids, 0, GCOptions{}); err == nil {
		t.Error("K = 0 accepted")
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
		out[li] = Layer{l.Name, &b}
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
	g1, _ := NewGram(layers)
	g2, _ := NewGram(pl)
	for _, paper := range []bool{false, true} {
		c1, _ := Cluster(g1, layers[0].Block.IDs, 8, GCOptions{Seed: 9, PaperOnly: paper})
		c2, _ := Cluster(g2, pl[0].Block.IDs, 8, GCOptions{Seed: 9, PaperOnly: paper})
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

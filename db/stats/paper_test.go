package stats

import (
	"math"
	"math/rand/v2"
	"testing"

	"gvdb/db/codec"
)

// separated returns n examples in k well-separated groups of a factored
// weight layer (each group's input factor near its own direction, one
// output-gradient direction per group too), a bias layer, and each
// example's group.
func separated(n, k int, seed uint64) ([]Layer, []int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	in, out := 3*k, 4
	ids := make([]uint64, n)
	a := make([]float32, n*in)
	d := make([]float32, n*out)
	bias := make([]float32, n*out)
	group := make([]int, n)
	for i := range n {
		ids[i] = uint64(i)
		c := rng.IntN(k)
		group[i] = c
		for j := range in {
			a[i*in+j] = float32(0.01 * rng.NormFloat64())
		}
		a[i*in+3*c] += 1
		for j := range out {
			v := 0.01 * rng.NormFloat64()
			if j == c%out {
				v += 1 + float64(c/out)
			}
			d[i*out+j] = float32(v)
			bias[i*out+j] = float32(v)
		}
	}
	return []Layer{
		{Name: "fc.weight", Weight: true, Block: &codec.Block{Kind: codec.Factored, IDs: ids, T: 1, In: in, Out: out, A: a, Delta: d}},
		{Name: "fc.bias", Block: &codec.Block{Kind: codec.Dense, IDs: ids, Dim: out, Rows: bias}},
	}, group
}

// TestPaperFindsSeparatedClusters: on well-separated groups, the paper's
// algorithm recovers them (every cluster is one group), and its partition
// is scored exactly: the same as scoring the true groups.
func TestPaperFindsSeparatedClusters(t *testing.T) {
	const n, k = 400, 8
	layers, group := separated(n, k, 3)
	g, err := NewGC(layers, GCOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.Fit(k, MethodPaper, false)
	if err != nil {
		t.Fatal(err)
	}
	// Every cluster holds one group, and every group one cluster.
	gOf := map[int]int{}
	cOf := map[int]int{}
	for i, c := range p.Assign {
		if x, ok := gOf[c]; ok && x != group[i] {
			t.Fatalf("cluster %d mixes groups %d and %d", c, x, group[i])
		}
		if x, ok := cOf[group[i]]; ok && x != c {
			t.Fatalf("group %d split over clusters %d and %d", group[i], x, c)
		}
		gOf[c], cOf[group[i]] = group[i], c
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	want, _ := g.scatter(all, group, k)
	if got := p.VarB * n * n; math.Abs(got-want) > 1e-9*want {
		t.Errorf("paper partition scores %g, the true groups %g", got, want)
	}
	// gvdb's exact fit finds the same optimum here.
	e, err := g.Fit(k, MethodExact, false)
	if err != nil {
		t.Fatal(err)
	}
	if e.VarB > p.VarB*(1+1e-9) {
		t.Errorf("exact %g above paper %g on separated groups", e.VarB, p.VarB)
	}
	// Held out on a sample: finite and positive.
	h, err := g.Fit(k, MethodPaper, true)
	if err != nil || !(h.VarB > 0) {
		t.Errorf("paper held out: %v, %v", h, err)
	}
	// Without weight layers the paper's method refuses.
	if _, err := fitPaperOn(layers[1:], k); err == nil {
		t.Error("paper method without weights accepted")
	}
}

// fitPaperOn fits the paper's method on layers (test helper).
func fitPaperOn(layers []Layer, k int) (*Partition, error) {
	g, err := NewGC(layers, GCOptions{Seed: 1})
	if err != nil {
		return nil, err
	}
	return g.Fit(k, MethodPaper, false)
}

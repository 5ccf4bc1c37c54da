package stats

import (
	"math/rand/v2"
	"testing"
)

// TestRefitSampleMatchesBruteForce: a partition fitted on a population and
// scored on a sample of it (Score) gives the stratified estimate
// Σ_k W_k² (N_k−1)/N_k s_k² and, per coordinate, the same with each
// coordinate's scatter (gc_nvar), equal to a float64 brute force on the
// materialized gradients; clusters of one example need no sampled
// members, and the recorded strata of the partition agree with it.
func TestRefitSampleMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	const n, k = 80, 6
	layers := testLayers(rng, n)
	g, err := NewGC(layers, GCOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.Fit(k, MethodExact, false)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := g.Fixed(p)
	if err != nil {
		t.Fatal(err)
	}
	// A cluster of one, which the sample leaves out without a warning.
	single := 0
	for c, s := range fixed.Sizes {
		if s > fixed.Sizes[single] {
			single = c
		}
	}
	var donor int
	for i, c := range p.Assign {
		if c == single {
			donor = i
		}
	}
	p.Assign[donor] = k
	fixed.K++
	fixed.Sizes = append(append([]int(nil), fixed.Sizes...), 1)
	fixed.Sizes[single]--
	fixed.Of[g.IDs()[donor]] = k
	// The sample: every second example, the singleton's left out.
	var rows []int
	for i := range n {
		if i%2 == 0 && i != donor {
			rows = append(rows, i)
		}
	}
	sub := SubsetLayers(layers, rows)
	gs, err := NewGC(sub, GCOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	est, warnings, err := gs.Score(fixed)
	if err != nil {
		t.Fatal(err)
	}
	br := materializeAll(sub)
	count := make([]int, fixed.K)
	for _, id := range gs.IDs() {
		count[fixed.Of[id]]++
	}
	missed := 0
	for c, nk := range fixed.Sizes {
		if nk >= 2 && count[c] < 2 {
			missed++
		}
	}
	if (missed > 0) != (len(warnings) > 0) {
		t.Fatalf("%d clusters under 2 sampled examples, warnings %q", missed, warnings)
	}
	// Brute force: coef_k Σ_{i∈C_k} (g_ij − m_kj)² per coordinate.
	vj := make([]float64, br.d)
	varB := 0.0
	for c, nk := range fixed.Sizes {
		if nk < 2 || count[c] < 2 {
			continue
		}
		w := float64(nk) / float64(fixed.N)
		coef := w * w * float64(nk-1) / float64(nk) / float64(count[c]-1)
		mean := make([]float64, br.d)
		for i, id := range gs.IDs() {
			if fixed.Of[id] == c {
				for j, v := range br.g[i] {
					mean[j] += v / float64(count[c])
				}
			}
		}
		for i, id := range gs.IDs() {
			if fixed.Of[id] == c {
				for j, v := range br.g[i] {
					e := coef * (v - mean[j]) * (v - mean[j])
					vj[j] += e
					varB += e
				}
			}
		}
	}
	near(t, "stratified VarB", est.VarB, varB, tol)
	m, _ := Compute(sub, 0, Need{Coords: true})
	const bs = 12.0
	per := bs / float64(fixed.K)
	nvar := 0.0
	for j, x := range vj {
		if den := br.mu[j]*br.mu[j] + x/per; den > 0 {
			nvar += x / per / den
		}
	}
	got, err := gs.NVar(est, m, bs)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "stratified gc_nvar", got, nvar/float64(br.d), tol)

	// Recorded strata: the partition's own agree, a relabelled one not.
	st := &Strata{}
	for _, id := range gs.IDs() {
		c := fixed.Of[id]
		st.Stratum = append(st.Stratum, int64(c))
		st.Size = append(st.Size, int64(fixed.Sizes[c]))
	}
	if bad := fixed.Disagreements(gs.IDs(), st); bad != 0 {
		t.Errorf("the partition's own strata: %d disagreements", bad)
	}
	st.Stratum[0] = (st.Stratum[0] + 1) % int64(fixed.K)
	st.Size[1]++
	if bad := fixed.Disagreements(gs.IDs(), st); bad != 2 {
		t.Errorf("two changed strata: %d disagreements", bad)
	}
}

package stats

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// BootstrapResamples is the number of resamples of Bootstrap.
const BootstrapResamples = 200

// Bootstrap returns a percentile bootstrap confidence interval at level
// (0.95: the 2.5% and 97.5% quantiles) for a statistic of a snapshot's
// examples: BootstrapResamples times, N examples are drawn with
// replacement (seeded) and the statistic recomputed on the moments of the
// draw. Resampling with multiplicities w keeps the Gram form,
// |Σ_i w_i g_i|² = wᵀKw and g_i·μ_w = (Kw)_i / N, so one resample costs N²
// with the Gram matrix g (the scope's, N x N); statistics that need
// per-coordinate sums are not offered. stat receives moments with N, D,
// SumSqNorm, SumNorm, SumNormSq, SqNorms and Inner set.
func Bootstrap(g *Gram, d int, level float64, seed uint64, stat func(*Moments) (float64, error)) (lo, hi float64, err error) {
	n := g.N
	if n < 2 {
		return nan(), nan(), nil
	}
	if !(level > 0 && level < 1) {
		return nan(), nan(), fmt.Errorf("bootstrap: level %g is not in (0, 1)", level)
	}
	rng := rand.New(rand.NewPCG(seed, 0xb007))
	w := make([]float64, n)
	kw := make([]float64, n)
	vals := make([]float64, 0, BootstrapResamples)
	for range BootstrapResamples {
		clear(w)
		for range n {
			w[rng.IntN(n)]++
		}
		m := &Moments{N: n, D: d, SqNorms: make([]float64, 0, n), Inner: make([]float64, 0, n)}
		// Kw, and wᵀKw.
		for i := range n {
			row := g.K[i*n : (i+1)*n]
			s := 0.0
			for j, v := range row {
				s += v * w[j]
			}
			kw[i] = s
		}
		for i := range n {
			m.SumNormSq += w[i] * kw[i]
			for range int(w[i]) {
				kii := g.K[i*n+i]
				m.SqNorms = append(m.SqNorms, kii)
				m.SumSqNorm += kii
				m.SumNorm += math.Sqrt(kii)
				m.Inner = append(m.Inner, kw[i]/float64(n))
			}
		}
		v, err := stat(m)
		if err != nil {
			return nan(), nan(), err
		}
		if !math.IsNaN(v) {
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 {
		return nan(), nan(), nil
	}
	sort.Float64s(vals)
	q := func(p float64) float64 {
		x := p * float64(len(vals)-1)
		i := int(math.Floor(x))
		if i+1 >= len(vals) {
			return vals[len(vals)-1]
		}
		return vals[i] + (x-float64(i))*(vals[i+1]-vals[i])
	}
	return q((1 - level) / 2), q((1 + level) / 2), nil
}

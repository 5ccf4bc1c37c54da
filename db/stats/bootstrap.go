package stats

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// BootstrapResamples is the number of resamples of Bootstrap.
const BootstrapResamples = 200

// Bootstrap returns a basic (pivotal) bootstrap confidence interval at
// level for a statistic θ of a snapshot's examples: BootstrapResamples
// times, N examples are drawn with replacement (seeded) and the statistic
// recomputed on the moments of the draw, θ*; the interval is
// [2θ̂ − q_{(1+level)/2}, 2θ̂ − q_{(1−level)/2}] of the θ* quantiles q.
// The basic interval, unlike the percentile one, corrects the first-order
// bias of the plug-in: a resample's mean norm |μ*|² exceeds |μ|² by S/N
// on average, so θ* of gns = S/|μ|² runs low, and the percentile interval
// of a sample's gns can miss the estimate. Resampling with multiplicities w keeps the Gram form,
// |Σ_i w_i g_i|² = wᵀKw and g_i·μ_w = (Kw)_i / N, so one resample costs N²
// with the Gram matrix g (the scope's, N x N); statistics that need
// per-coordinate sums are not offered. stat receives moments with N, D,
// SumSqNorm, SumNorm, SumNormSq, SqNorms and Inner set.
func Bootstrap(g *Gram, d int, level float64, seed uint64, stat func(*Moments) (float64, error)) (lo, hi float64, err error) {
	n := g.N
	theta := math.NaN()
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
	for r := range BootstrapResamples + 1 {
		clear(w)
		if r < BootstrapResamples {
			for range n {
				w[rng.IntN(n)]++
			}
		} else {
			// Last, the statistic itself (every example once), through
			// the same arithmetic.
			for i := range w {
				w[i] = 1
			}
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
		if r == BootstrapResamples {
			theta = v
		} else if !math.IsNaN(v) {
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 || math.IsNaN(theta) {
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
	// The basic (pivotal) interval: the spread of θ* − θ̂ taken as that of
	// θ̂ − θ.
	return 2*theta - q((1+level)/2), 2*theta - q((1-level)/2), nil
}

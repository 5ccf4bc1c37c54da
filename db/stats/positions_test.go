package stats

import (
	"math"
	"math/rand/v2"
	"testing"

	"gvdb/db/codec"
)

// TestPositionMomentsMatchBruteForce: the per-coordinate moments of a
// factored block with T positions, through the products (T <= maxProductT)
// and through materialized gradients (larger T), equal a float64 brute
// force over the materialized gradients.
func TestPositionMomentsMatchBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n, in, out = 9, 6, 4
	for tp := 1; tp <= maxProductT+2; tp++ {
		ids := make([]uint64, n)
		for i := range ids {
			ids[i] = uint64(i)
		}
		b := &codec.Block{Kind: codec.Factored, IDs: ids, T: tp, In: in, Out: out,
			A: make([]float32, n*tp*in), Delta: make([]float32, n*tp*out)}
		for i := range b.A {
			b.A[i] = float32(max(rng.NormFloat64(), 0))
		}
		for i := range b.Delta {
			b.Delta[i] = float32(rng.NormFloat64())
		}
		m, err := Compute([]Layer{{Name: "l", Block: b}}, 0, Need{Coords: true})
		if err != nil {
			t.Fatal(err)
		}
		p := b.Params()
		sum, sumSq := make([]float64, p), make([]float64, p)
		for i := range n {
			g := b.Gradient(i, make([]float64, p))
			sq := 0.0
			for j, v := range g {
				sum[j] += v
				sumSq[j] += v * v
				sq += v * v
			}
			if math.Abs(m.SqNorms[i]-sq) > 1e-12*sq {
				t.Errorf("T = %d: |g_%d|² %g, brute force %g", tp, i, m.SqNorms[i], sq)
			}
		}
		for j := range p {
			if math.Abs(m.Sum[j]-sum[j]) > 1e-12*(1+math.Abs(sum[j])) || math.Abs(m.SumSq[j]-sumSq[j]) > 1e-12*(1+sumSq[j]) {
				t.Fatalf("T = %d coordinate %d: sum %g sumsq %g, brute force %g %g", tp, j, m.Sum[j], m.SumSq[j], sum[j], sumSq[j])
			}
		}
	}
}

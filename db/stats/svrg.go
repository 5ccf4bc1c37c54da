package stats

import (
	"fmt"
	"math"

	"gvdb/db/codec"
)

// Difference returns the block of the per-example differences
// h_i = g_i(θ) − g_i(θ̃) between a layer's block at the current parameters
// and its block at the SVRG anchor θ̃, for the same examples. Nothing is
// rounded: the difference of two factored blocks is a factored block with
// the positions of both (Δ negated for the anchor's), rank 2 per example
// for a dense layer; the difference of two dense blocks is a factored
// block with In = 1, A = [1, 1] and Δ = [g_i, −g̃_i]. Compute on difference
// blocks gives SVRG's statistics: Var_i[h_i] / (B·D) is the variance of
// μ̃ + (1/B) Σ_{i∈batch} h_i.
func Difference(cur, anchor *codec.Block) (*codec.Block, error) {
	n := cur.N()
	if anchor.N() != n {
		return nil, fmt.Errorf("svrg difference: %d examples at θ, %d at the anchor", n, anchor.N())
	}
	for i, id := range cur.IDs {
		if anchor.IDs[i] != id {
			return nil, fmt.Errorf("svrg difference: example row %d is id %d at θ and %d at the anchor", i, id, anchor.IDs[i])
		}
	}
	switch {
	case cur.Kind == codec.Factored && anchor.Kind == codec.Factored:
		if cur.In != anchor.In || cur.Out != anchor.Out {
			return nil, fmt.Errorf("svrg difference: shape %dx%d at θ, %dx%d at the anchor", cur.In, cur.Out, anchor.In, anchor.Out)
		}
		t := cur.T + anchor.T
		d := &codec.Block{Kind: codec.Factored, IDs: cur.IDs, T: t, In: cur.In, Out: cur.Out,
			A: make([]float32, 0, n*t*cur.In), Delta: make([]float32, 0, n*t*cur.Out)}
		for i := range n {
			ca, cd := cur.A[i*cur.T*cur.In:(i+1)*cur.T*cur.In], cur.Delta[i*cur.T*cur.Out:(i+1)*cur.T*cur.Out]
			aa, ad := anchor.A[i*anchor.T*anchor.In:(i+1)*anchor.T*anchor.In], anchor.Delta[i*anchor.T*anchor.Out:(i+1)*anchor.T*anchor.Out]
			if same(ca, aa) && same(cd, ad) {
				// h_i = 0 exactly (at the anchor's own step).
				d.A = append(d.A, make([]float32, t*cur.In)...)
				d.Delta = append(d.Delta, make([]float32, t*cur.Out)...)
				continue
			}
			d.A = append(append(d.A, ca...), aa...)
			d.Delta = append(d.Delta, cd...)
			for _, v := range ad {
				d.Delta = append(d.Delta, -v)
			}
		}
		return d, nil
	case cur.Kind == codec.Dense && anchor.Kind == codec.Dense:
		if cur.Dim != anchor.Dim {
			return nil, fmt.Errorf("svrg difference: %d values at θ, %d at the anchor", cur.Dim, anchor.Dim)
		}
		d := &codec.Block{Kind: codec.Factored, IDs: cur.IDs, T: 2, In: 1, Out: cur.Dim,
			A: make([]float32, 2*n), Delta: make([]float32, 0, 2*n*cur.Dim)}
		for i := range n {
			c, a := cur.Rows[i*cur.Dim:(i+1)*cur.Dim], anchor.Rows[i*anchor.Dim:(i+1)*anchor.Dim]
			if same(c, a) {
				d.Delta = append(d.Delta, make([]float32, 2*cur.Dim)...)
				continue
			}
			d.A[2*i], d.A[2*i+1] = 1, 1
			d.Delta = append(d.Delta, c...)
			for _, v := range a {
				d.Delta = append(d.Delta, -v)
			}
		}
		return d, nil
	}
	return nil, fmt.Errorf("svrg difference: a %s block at θ and a %s block at the anchor", cur.Kind, anchor.Kind)
}

// same reports whether two rows are bitwise equal and finite (NaN and Inf
// must survive into the difference, where Compute flags them).
func same(x, y []float32) bool {
	if len(x) != len(y) {
		return false
	}
	for i, v := range x {
		if math.Float32bits(v) != math.Float32bits(y[i]) || v*0 != 0 {
			return false
		}
	}
	return true
}

// SVRGNVar returns the normalized variance of the SVRG estimator with
// batch size B, per coordinate: (1/D) Σ_j v_j / (μ_j² + v_j), where
// v_j = Var_i[h_ij] / B is the variance of the differences (diff, with
// Need.Coords) and μ_j the mean gradient at θ (cur, with its summed
// gradient): the estimator's mean is μ, not the differences' mean.
func SVRGNVar(diff, cur *Moments, b float64) (float64, error) {
	if diff.SumSq == nil {
		return nan(), ErrNoCoords
	}
	if cur.Sum == nil || cur.D != diff.D || cur.N != diff.N {
		return nan(), fmt.Errorf("svrg_nvar: moments of the gradient (%d x %d, mean kept %v) do not match the differences' (%d x %d)", cur.N, cur.D, cur.Sum != nil, diff.N, diff.D)
	}
	if diff.NonFinite || cur.NonFinite || diff.N == 0 {
		return nan(), nil
	}
	n := float64(diff.N)
	sum := 0.0
	for j, s := range diff.Sum {
		hm := s / n
		v := max(diff.SumSq[j]/n-hm*hm, 0) / b
		mu := cur.Sum[j] / n
		if den := mu*mu + v; den > 0 {
			sum += v / den
		}
	}
	return sum / float64(diff.D), nil
}

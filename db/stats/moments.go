package stats

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"gvdb/db/bufpool"
	"gvdb/db/codec"
)

// Layer is one layer's block, in the scope of a statistic.
type Layer struct {
	Name  string
	Block *codec.Block
	// Weight says the layer is a weight (of a Linear or Conv2d layer):
	// the paper's Gradient Clustering clusters weights only (MethodPaper).
	Weight bool
}

// Need says which optional quantities Compute produces.
type Need struct {
	// Coords: the per-coordinate second moment Σ_i g_ij² (nvar, snr).
	Coords bool
	// Inner: each example's g_i·μ (inner-product and orthogonality tests).
	Inner bool
	// Mean: keep the summed gradient vector Moments.Sum, which Merge
	// (pooled windows) needs; Coords and Inner keep it anyway. Without any
	// of the three, Compute may get |Σ_i g_i|² through the Gram form
	// Σ_ij (a_i·a_j)(d_i·d_j) when that is cheaper than AᵀΔ, as it is for
	// small N: N²(In+Out)/2 against N·In·Out multiply-adds.
	Mean bool
}

// Moments are the sufficient statistics of N per-example gradients over a
// scope of layers (D coordinates in all): everything the statistics of
// this package need except the Gram matrix. Moments of several snapshots
// merge into the pooled moments of their union.
type Moments struct {
	N, D int
	// SumSqNorm is Σ_i |g_i|², SumNorm Σ_i |g_i|.
	SumSqNorm, SumNorm float64
	// SumNormSq is |Σ_i g_i|².
	SumNormSq float64
	// Sum is Σ_i g_i (D values, layers concatenated in scope order); nil
	// unless Need.Mean, Coords or Inner.
	Sum []float64
	// SumSq is Σ_i g_ij² per coordinate (nil unless Need.Coords).
	SumSq []float64
	// Inner is g_i·μ per example (nil unless Need.Inner; not poolable).
	Inner []float64
	// SqNorms is |g_i|² per example.
	SqNorms []float64
	// Warnings name layers and steps with NaN or Inf gradients; a
	// statistic over them is NaN.
	Warnings []string
	// NonFinite is true when some gradient value is NaN or Inf.
	NonFinite bool
	// rounded holds, instead of Sum and SumSq, the layers' rollups with
	// float32 vectors, as FromRollups keeps them when only per-snapshot
	// statistics need them (nvar and snr read their z_j in place).
	rounded []*Rollup
}

// hasCoords says whether the per-coordinate moments are there.
func (m *Moments) hasCoords() bool { return m.SumSq != nil || m.rounded != nil }

// materialize turns rounded vectors into Sum and SumSq.
func (m *Moments) materialize() error {
	if m.rounded == nil {
		return nil
	}
	sum, sumSq := make([]float64, m.D), make([]float64, m.D)
	off := 0
	for _, r := range m.rounded {
		if err := r.sumsInto(sum[off:off+r.D], sumSq[off:off+r.D]); err != nil {
			return err
		}
		off += r.D
	}
	m.Sum, m.SumSq, m.rounded = sum, sumSq, nil
	return nil
}

// Compute returns the moments of one snapshot's blocks (all for the same N
// examples). step only labels warnings.
func Compute(layers []Layer, step int64, need Need) (*Moments, error) {
	if len(layers) == 0 {
		return nil, fmt.Errorf("compute moments: no layers in scope")
	}
	n := layers[0].Block.N()
	m := &Moments{N: n, SqNorms: make([]float64, n)}
	for _, l := range layers {
		if l.Block.N() != n {
			return nil, fmt.Errorf("compute moments: layer %s has %d examples, %s has %d", l.Name, l.Block.N(), layers[0].Name, n)
		}
		m.D += l.Block.Params()
		if row, bad := l.Block.NonFinite(); bad {
			m.NonFinite = true
			m.Warnings = append(m.Warnings, fmt.Sprintf("layer %s at step %d: NaN or Inf gradient (example row %d)", l.Name, step, row))
		}
	}
	keepSum := need.Mean || need.Coords || need.Inner
	if keepSum {
		m.Sum = make([]float64, m.D)
	}
	if need.Coords {
		m.SumSq = make([]float64, m.D)
	}
	off := 0
	for _, l := range layers {
		// Each layer writes its sums into its part of m.Sum and m.SumSq.
		p := l.Block.Params()
		var sum, sumSq []float64
		if keepSum {
			sum = m.Sum[off : off+p]
		}
		if need.Coords {
			sumSq = m.SumSq[off : off+p]
		}
		off += p
		lm := layerMoments(l.Block, sum, sumSq)
		m.SumNormSq += lm.sumNormSq
		for i, v := range lm.sqNorms {
			m.SqNorms[i] += v
		}
	}
	for _, v := range m.SqNorms {
		m.SumSqNorm += v
		m.SumNorm += math.Sqrt(v)
	}
	if need.Inner {
		m.Inner = make([]float64, n)
		off := 0
		for _, l := range layers {
			p := l.Block.Params()
			mu := make([]float64, p)
			for j, v := range m.Sum[off : off+p] {
				mu[j] = v / float64(n)
			}
			addInner(m.Inner, l.Block, mu)
			off += p
		}
	}
	return m, nil
}

type layerMom struct {
	sqNorms   []float64
	sumNormSq float64 // |Σ_i g_i|²
}

// scratch recycles the block path's float64 temporaries (the factors'
// float64 copies, products): fresh, each costs a page fault a page.
var scratch bufpool.Pool[float64]

// widen returns a float64 copy of v from scratch; the caller puts it back.
func widen(v []float32) []float64 { return widenInto(scratch.Get(len(v)), v) }

// release puts scratch slices back.
func release(vs ...[]float64) {
	for _, v := range vs {
		scratch.Put(v)
	}
}

// gramRoute forces (1) or forbids (-1) the Gram form in tests; 0 decides
// by cost.
var gramRoute = 0

// useGram reports whether |Σ_i g_i|² of an n x (in·out) factored layer is
// cheaper through the Gram form than through AᵀΔ.
func useGram(n, in, out int) bool {
	if gramRoute != 0 {
		return gramRoute > 0
	}
	return n*(in+out)/2 < in*out
}

func sumSquares(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x * x
	}
	return s
}

// f64 widens a float32 matrix.
func f64(v []float32) []float64 { return widenInto(make([]float64, len(v)), v) }

// widenInto writes v's values into out (len(v) values) and returns it.
func widenInto(out []float64, v []float32) []float64 {
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// square squares v's values in place.
func square(v []float64) {
	for i, x := range v {
		v[i] = x * x
	}
}

func squares(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * x
	}
	return out
}

func general(rows, cols int, data []float64) blas64.General {
	return blas64.General{Rows: rows, Cols: cols, Stride: cols, Data: data}
}

// atb returns XᵀY for X (r x p) and Y (r x q), row-major p x q.
func atb(x []float64, y []float64, r, p, q int) []float64 {
	out := make([]float64, p*q)
	atbInto(out, x, y, r, p, q)
	return out
}

// atbInto writes XᵀY into out (p·q values, overwritten). On gonum X is
// transposed explicitly first: its Gemm is about twice as fast on
// (NoTrans, NoTrans) as on (Trans, NoTrans).
func atbInto(out, x, y []float64, r, p, q int) {
	if r == 0 {
		clear(out)
		return
	}
	if lazy != nil && lazy.load() != nil {
		// OpenBLAS multiplies by Xᵀ as fast as by X.
		blas64.Gemm(blas.Trans, blas.NoTrans, 1, general(r, p, x), general(r, q, y), 0, general(p, q, out))
		return
	}
	xt := scratch.Get(p * r)
	for i := range r {
		for j, v := range x[i*p : (i+1)*p] {
			xt[j*r+i] = v
		}
	}
	blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, general(p, r, xt), general(r, q, y), 0, general(p, q, out))
	scratch.Put(xt)
}

func rowSqNorms(x []float64, r, c int) []float64 {
	out := make([]float64, r)
	for i := range r {
		row := x[i*c : (i+1)*c]
		out[i] = blas64.Dot(blas64.Vector{N: c, Inc: 1, Data: row}, blas64.Vector{N: c, Inc: 1, Data: row})
	}
	return out
}

// layerMoments computes one layer's moments. sum (Params values, zero),
// when not nil, receives Σ_i g_i; sumSq, when not nil, Σ_i g_i∘g_i.
func layerMoments(b *codec.Block, sum, sumSq []float64) layerMom {
	if sum == nil && sumSq == nil && b.Kind == codec.Factored && b.T == 1 && useGram(b.N(), b.In, b.Out) {
		return gramMoments(b)
	}
	if sum == nil {
		// Only |g_i|² and |Σ_i g_i|² are asked for: the sum is computed
		// in scratch.
		sum = scratch.Get(b.Params())
		clear(sum)
		defer release(sum)
	}
	lm := layerMoments1(b, sum, sumSq)
	lm.sumNormSq = sumSquares(sum)
	return lm
}

// gramMoments returns |g_i|² and |Σ_i g_i|² of a factored T = 1 layer
// from its Gram matrix: |Σ_i g_i|² = Σ_ij (a_i·a_j)(d_i·d_j), the upper
// triangle counted twice off the diagonal.
func gramMoments(b *codec.Block) layerMom {
	n := b.N()
	a, d := widen(b.A), widen(b.Delta)
	g := &Gram{N: n, K: scratch.Get(n * n)}
	clear(g.K)
	g.add(a, b.In, d, b.Out)
	lm := layerMom{sqNorms: make([]float64, n)}
	for i := range n {
		row := g.K[i*n : (i+1)*n]
		lm.sqNorms[i] = row[i]
		lm.sumNormSq += row[i]
		for _, v := range row[i+1:] {
			lm.sumNormSq += 2 * v
		}
	}
	release(a, d, g.K)
	return lm
}

// layerMoments1 writes Σ_i g_i into sum (never nil) and, when sumSq is not
// nil, Σ_i g_i∘g_i into sumSq, and returns each example's |g_i|².
func layerMoments1(b *codec.Block, sum, sumSq []float64) layerMom {
	n := b.N()
	coords := sumSq != nil
	switch {
	case b.Kind == codec.Dense:
		x := widen(b.Rows)
		lm := layerMom{sqNorms: rowSqNorms(x, n, b.Dim)}
		for i := range n {
			for j, v := range x[i*b.Dim : (i+1)*b.Dim] {
				sum[j] += v
				if coords {
					sumSq[j] += v * v
				}
			}
		}
		release(x)
		return lm
	case b.T == 1:
		a, d := widen(b.A), widen(b.Delta)
		defer release(a, d)
		atbInto(sum, a, d, n, b.In, b.Out)
		lm := layerMom{sqNorms: make([]float64, n)}
		an, dn := rowSqNorms(a, n, b.In), rowSqNorms(d, n, b.Out)
		for i := range n {
			lm.sqNorms[i] = an[i] * dn[i]
		}
		if coords {
			// a and d are this function's copies: squared in place.
			square(a)
			square(d)
			atbInto(sumSq, a, d, n, b.In, b.Out)
		}
		return lm
	case !coords:
		// T > 1 positions (a convolution, an SVRG difference): Σ_i g_i is
		// one product over all N·T position rows; |g_i|² is
		// Σ_st (a_is·a_it)(d_is·d_it) or, when cheaper, |A_iᵀΔ_i|².
		a, d := widen(b.A), widen(b.Delta)
		defer release(a, d)
		atbInto(sum, a, d, n*b.T, b.In, b.Out)
		lm := layerMom{sqNorms: make([]float64, n)}
		if b.T*(b.In+b.Out) <= b.In*b.Out {
			for i := range n {
				lm.sqNorms[i] = positionNormSq(a[i*b.T*b.In:(i+1)*b.T*b.In], d[i*b.T*b.Out:(i+1)*b.T*b.Out], b.T, b.In, b.Out)
			}
			return lm
		}
		g := scratch.Get(b.Params())
		defer release(g)
		for i := range n {
			materialize(b, i, g)
			lm.sqNorms[i] = sumSquares(g)
		}
		return lm
	case b.T <= maxProductT:
		// Per-coordinate moments with few positions (an SVRG difference
		// has T = 2): G_i = Σ_s a_is d_isᵀ, so Σ_i G_i∘G_i =
		// Σ_st (A_s∘A_t)ᵀ(Δ_s∘Δ_t) with A_s the N x In rows of position
		// s: T(T+1)/2 matrix products instead of N materialized gradients.
		a, d := widen(b.A), widen(b.Delta)
		pa, pd, prod := scratch.Get(n*b.In), scratch.Get(n*b.Out), scratch.Get(b.Params())
		defer release(a, d, pa, pd, prod)
		atbInto(sum, a, d, n*b.T, b.In, b.Out)
		lm := layerMom{sqNorms: make([]float64, n)}
		for i := range n {
			lm.sqNorms[i] = positionNormSq(a[i*b.T*b.In:(i+1)*b.T*b.In], d[i*b.T*b.Out:(i+1)*b.T*b.Out], b.T, b.In, b.Out)
		}
		for s := range b.T {
			for t := s; t < b.T; t++ {
				w := 1.0
				if t != s {
					w = 2
				}
				for i := range n {
					as, at := a[(i*b.T+s)*b.In:(i*b.T+s+1)*b.In], a[(i*b.T+t)*b.In:(i*b.T+t+1)*b.In]
					for j := range as {
						pa[i*b.In+j] = w * as[j] * at[j]
					}
					ds, dt := d[(i*b.T+s)*b.Out:(i*b.T+s+1)*b.Out], d[(i*b.T+t)*b.Out:(i*b.T+t+1)*b.Out]
					for j := range ds {
						pd[i*b.Out+j] = ds[j] * dt[j]
					}
				}
				atbInto(prod, pa, pd, n, b.In, b.Out)
				for j, v := range prod {
					sumSq[j] += v
				}
			}
		}
		return lm
	default:
		// Per-coordinate moments with T > maxProductT: materialize one
		// example at a time, G_i = A_iᵀΔ_i.
		lm := layerMom{sqNorms: make([]float64, n)}
		g := scratch.Get(b.Params())
		defer release(g)
		for i := range n {
			materialize(b, i, g)
			for j, v := range g {
				sum[j] += v
				lm.sqNorms[i] += v * v
				sumSq[j] += v * v
			}
		}
		return lm
	}
}

// maxProductT is the largest number of positions whose per-coordinate
// moments come from T(T+1)/2 matrix products rather than N materialized
// gradients (which cost about T+3 products' worth of work).
const maxProductT = 3

// positionNormSq returns |Σ_t a_t d_tᵀ|² = Σ_st (a_s·a_t)(d_s·d_t) for one
// example's T position rows.
func positionNormSq(a, d []float64, t, in, out int) float64 {
	s := 0.0
	for p := range t {
		for q := p; q < t; q++ {
			v := dot64(a[p*in:(p+1)*in], a[q*in:(q+1)*in]) * dot64(d[p*out:(p+1)*out], d[q*out:(q+1)*out])
			if q != p {
				v *= 2
			}
			s += v
		}
	}
	return s
}

func dot64(x, y []float64) float64 {
	return blas64.Dot(blas64.Vector{N: len(x), Inc: 1, Data: x}, blas64.Vector{N: len(y), Inc: 1, Data: y})
}

// materialize writes example i's gradient into g (Params values).
func materialize(b *codec.Block, i int, g []float64) {
	if b.Kind == codec.Dense {
		for j, v := range b.Rows[i*b.Dim : (i+1)*b.Dim] {
			g[j] = float64(v)
		}
		return
	}
	rows := b.T
	a := f64(b.A[i*rows*b.In : (i+1)*rows*b.In])
	d := f64(b.Delta[i*rows*b.Out : (i+1)*rows*b.Out])
	blas64.Gemm(blas.Trans, blas.NoTrans, 1, general(rows, b.In, a), general(rows, b.Out, d), 0, general(b.In, b.Out, g))
}

// addInner adds g_i·mu (mu is this layer's part of the mean) to inner[i].
func addInner(inner []float64, b *codec.Block, mu []float64) {
	n := b.N()
	switch {
	case b.Kind == codec.Dense:
		for i := range n {
			s := 0.0
			for j, v := range b.Rows[i*b.Dim : (i+1)*b.Dim] {
				s += float64(v) * mu[j]
			}
			inner[i] += s
		}
	case b.T == 1:
		// g_i·M = a_iᵀ M d_i: P = A M (n x Out), then row-wise P_i·d_i.
		a, d := f64(b.A), f64(b.Delta)
		pm := make([]float64, n*b.Out)
		blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, general(n, b.In, a), general(b.In, b.Out, mu), 0, general(n, b.Out, pm))
		for i := range n {
			s := 0.0
			for q, v := range d[i*b.Out : (i+1)*b.Out] {
				s += pm[i*b.Out+q] * v
			}
			inner[i] += s
		}
	default:
		g := make([]float64, b.Params())
		for i := range n {
			materialize(b, i, g)
			s := 0.0
			for j, v := range g {
				s += v * mu[j]
			}
			inner[i] += s
		}
	}
}

// Merge returns the pooled moments of m and o: their examples as one
// population. Inner products are per-snapshot and are dropped.
func Merge(m, o *Moments) (*Moments, error) {
	if m.D != o.D {
		return nil, fmt.Errorf("merge moments: %d coordinates vs %d (different layer scopes)", m.D, o.D)
	}
	for _, x := range []*Moments{m, o} {
		if err := x.materialize(); err != nil {
			return nil, fmt.Errorf("merge moments: %w", err)
		}
	}
	if m.Sum == nil || o.Sum == nil {
		return nil, fmt.Errorf("merge moments: the summed gradient was not kept (Need.Mean)")
	}
	p := &Moments{N: m.N + o.N, D: m.D, SumSqNorm: m.SumSqNorm + o.SumSqNorm, SumNorm: m.SumNorm + o.SumNorm,
		NonFinite: m.NonFinite || o.NonFinite}
	p.Sum = make([]float64, m.D)
	for j := range p.Sum {
		p.Sum[j] = m.Sum[j] + o.Sum[j]
	}
	p.SumNormSq = sumSquares(p.Sum)
	if m.SumSq != nil && o.SumSq != nil {
		p.SumSq = make([]float64, m.D)
		for j := range p.SumSq {
			p.SumSq[j] = m.SumSq[j] + o.SumSq[j]
		}
	}
	p.SqNorms = append(append([]float64(nil), m.SqNorms...), o.SqNorms...)
	p.Warnings = append(append([]string(nil), m.Warnings...), o.Warnings...)
	return p, nil
}

// subset returns the block of the examples rows (in that order).
func subset(b *codec.Block, rows []int) *codec.Block {
	out := &codec.Block{Kind: b.Kind, T: b.T, In: b.In, Out: b.Out, Dim: b.Dim, IDs: make([]uint64, 0, len(rows))}
	for _, i := range rows {
		out.IDs = append(out.IDs, b.IDs[i])
		if b.Kind == codec.Dense {
			out.Rows = append(out.Rows, b.Rows[i*b.Dim:(i+1)*b.Dim]...)
		} else {
			out.A = append(out.A, b.A[i*b.T*b.In:(i+1)*b.T*b.In]...)
			out.Delta = append(out.Delta, b.Delta[i*b.T*b.Out:(i+1)*b.T*b.Out]...)
		}
	}
	return out
}

// SubsetLayers returns the layers restricted to the examples rows: the
// population of a statistic over some examples (WHERE label = 3).
func SubsetLayers(layers []Layer, rows []int) []Layer {
	out := make([]Layer, len(layers))
	for i, l := range layers {
		out[i] = Layer{Name: l.Name, Block: subset(l.Block, rows), Weight: l.Weight}
	}
	return out
}

package stats

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"

	"gvdb/db/codec"
)

// sketch holds a seeded random linear projection x_i = S g_i of each
// example's gradient, built from the factors without materializing g_i,
// such that E[x_i·x_j] = g_i·g_j. Per layer:
//
//   - a factored block (G_i = Σ_t a_it d_itᵀ, In·Out > s) gets s
//     coordinates x_ir = (1/√s) Σ_t (u_r·a_it)(v_r·d_it), with u_r and v_r
//     independent standard Gaussian vectors: a bilinear (Khatri–Rao)
//     projection, linear in G_i, computed as two matrix products;
//   - a dense block wider than s gets s coordinates (1/√s) R g_i;
//   - a block with at most s parameters is copied exactly.
//
// Distances and means in sketch space are those of the projected
// gradients, so k-means runs there on explicit centroids at a cost linear
// in N; sketch.go's caller scores the final partition exactly.
type sketch struct {
	n, dim int
	x      []float32 // n x dim
	norms  []float32 // |x_i|²
}

// sketchCols returns the sketch dimension of one layer.
func sketchCols(b *codec.Block, s int) int { return min(b.Params(), s) }

// sketchBytes returns the memory a sketch of the layers takes.
func sketchBytes(layers []Layer, s int) int64 {
	dim := 0
	for _, l := range layers {
		dim += sketchCols(l.Block, s)
	}
	n := int64(layers[0].Block.N())
	return n * int64(dim) * 4 * 2 // the sketch and one chunk's temporaries, generously
}

// sketchChunk is how many examples are projected at once.
const sketchChunk = 1024

func newSketch(layers []Layer, s int, seed uint64) *sketch {
	n := layers[0].Block.N()
	sk := &sketch{n: n}
	for _, l := range layers {
		sk.dim += sketchCols(l.Block, s)
	}
	sk.x = make([]float32, n*sk.dim)
	off := 0
	for li, l := range layers {
		b := l.Block
		cols := sketchCols(b, s)
		rng := rand.New(rand.NewPCG(seed, uint64(li)+0x736b))
		switch {
		case b.Params() <= s:
			g := make([]float64, b.Params())
			for i := range n {
				b.Gradient(i, g)
				row := sk.x[i*sk.dim+off:]
				for j, v := range g {
					row[j] = float32(v)
				}
			}
		case b.Kind == codec.Dense:
			r := gaussian(rng, s*b.Dim) // s x Dim
			for lo := 0; lo < n; lo += sketchChunk {
				hi := min(lo+sketchChunk, n)
				x := f64(b.Rows[lo*b.Dim : hi*b.Dim])
				out := make([]float64, (hi-lo)*s)
				blas64.Gemm(blas.NoTrans, blas.Trans, 1/math.Sqrt(float64(s)), general(hi-lo, b.Dim, x), general(s, b.Dim, r), 0, general(hi-lo, s, out))
				for i := lo; i < hi; i++ {
					row := sk.x[i*sk.dim+off:]
					for j, v := range out[(i-lo)*s : (i-lo+1)*s] {
						row[j] = float32(v)
					}
				}
			}
		default:
			u, v := gaussian(rng, s*b.In), gaussian(rng, s*b.Out)
			scale := 1 / math.Sqrt(float64(s))
			for lo := 0; lo < n; lo += sketchChunk {
				hi := min(lo+sketchChunk, n)
				rows := (hi - lo) * b.T
				a := f64(b.A[lo*b.T*b.In : hi*b.T*b.In])
				d := f64(b.Delta[lo*b.T*b.Out : hi*b.T*b.Out])
				pa, pd := make([]float64, rows*s), make([]float64, rows*s)
				blas64.Gemm(blas.NoTrans, blas.Trans, 1, general(rows, b.In, a), general(s, b.In, u), 0, general(rows, s, pa))
				blas64.Gemm(blas.NoTrans, blas.Trans, 1, general(rows, b.Out, d), general(s, b.Out, v), 0, general(rows, s, pd))
				for i := lo; i < hi; i++ {
					row := sk.x[i*sk.dim+off : i*sk.dim+off+s]
					for t := range b.T {
						r := (i-lo)*b.T + t
						for j := range row {
							row[j] += float32(scale * pa[r*s+j] * pd[r*s+j])
						}
					}
				}
			}
		}
		off += cols
	}
	sk.norms = make([]float32, n)
	for i := range n {
		sk.norms[i] = dot32(sk.row(i), sk.row(i))
	}
	return sk
}

func gaussian(rng *rand.Rand, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = rng.NormFloat64()
	}
	return out
}

func (sk *sketch) row(i int) []float32 { return sk.x[i*sk.dim : (i+1)*sk.dim] }

func dot32(x, y []float32) float32 {
	return blas32.Dot(blas32.Vector{N: len(x), Inc: 1, Data: x}, blas32.Vector{N: len(y), Inc: 1, Data: y})
}

// sketchSpace is a partition search in sketch space over a subset of the
// examples (idx, in the order the paper's assignment visits them).
type sketchSpace struct {
	sk  *sketch
	idx []int
	k   int
}

// centroids returns the member means (k x dim) of the clusters of assign
// (over sp.idx) and the cluster sizes.
func (sp *sketchSpace) centroids(assign []int) ([]float32, []int) {
	dim := sp.sk.dim
	sizes, _, sum := sp.clusterSums(assign)
	out := make([]float32, sp.k*dim)
	size := make([]int, sp.k)
	for c := range sp.k {
		size[c] = int(sizes[c])
		if size[c] == 0 {
			continue
		}
		inv := 1 / sizes[c]
		for j := range dim {
			out[c*dim+j] = float32(sum[c*dim+j] * inv)
		}
	}
	return out, size
}

// distances returns |x_i − c_k|² (rows: sp.idx, or the given examples)
// for centroids c (k x dim); empty clusters get +Inf.
func (sp *sketchSpace) distances(examples []int, c []float32, size []int) []float32 {
	dim, k := sp.sk.dim, sp.k
	cn := make([]float32, k)
	for ci := range k {
		cn[ci] = dot32(c[ci*dim:(ci+1)*dim], c[ci*dim:(ci+1)*dim])
	}
	out := make([]float32, len(examples)*k)
	x := make([]float32, 0, sketchChunk*dim)
	for lo := 0; lo < len(examples); lo += sketchChunk {
		hi := min(lo+sketchChunk, len(examples))
		x = x[:0]
		for _, i := range examples[lo:hi] {
			x = append(x, sp.sk.row(i)...)
		}
		blk := out[lo*k : hi*k]
		blas32.Gemm(blas.NoTrans, blas.Trans, -2,
			blas32.General{Rows: hi - lo, Cols: dim, Stride: dim, Data: x},
			blas32.General{Rows: k, Cols: dim, Stride: dim, Data: c}, 0,
			blas32.General{Rows: hi - lo, Cols: k, Stride: k, Data: blk})
		for r, i := range examples[lo:hi] {
			row := blk[(r)*k : (r+1)*k]
			for ci := range row {
				if size[ci] == 0 {
					row[ci] = float32(math.Inf(1))
					continue
				}
				row[ci] = max(row[ci]+sp.sk.norms[i]+cn[ci], 0)
			}
		}
	}
	return out
}

// objective returns the weighted distortion Σ_k N_k Σ_{i∈C_k} |x_i − c_k|²
// in sketch space, and each cluster's share.
func (sp *sketchSpace) objective(assign []int) (float64, []float64) {
	dim := sp.sk.dim
	size, sq, sum := sp.clusterSums(assign)
	per := make([]float64, sp.k)
	total := 0.0
	for c := range sp.k {
		if size[c] == 0 {
			continue
		}
		per[c] = max(size[c]*sq[c]-sumSquares(sum[c*dim:(c+1)*dim]), 0)
		total += per[c]
	}
	return total, per
}

// clusterSums returns each cluster's size, summed squared norms and summed
// sketch (k x dim) for the assignment of sp.idx.
func (sp *sketchSpace) clusterSums(assign []int) (size, sq, sum []float64) {
	dim := sp.sk.dim
	size, sq, sum = make([]float64, sp.k), make([]float64, sp.k), make([]float64, sp.k*dim)
	for r, i := range sp.idx {
		c := assign[r]
		size[c]++
		sq[c] += float64(sp.sk.norms[i])
		row := sum[c*dim : (c+1)*dim]
		for j, v := range sp.sk.row(i) {
			row[j] += float64(v)
		}
	}
	return size, sq, sum
}

// seed picks k centres by k-means++ (visiting sp.idx in order, seeded) and
// assigns each example to its nearest centre.
func (sp *sketchSpace) seed(rng *rand.Rand) []int {
	n := len(sp.idx)
	dist := func(r, c int) float32 {
		x, y := sp.sk.row(sp.idx[r]), sp.sk.row(sp.idx[c])
		return max(sp.sk.norms[sp.idx[r]]+sp.sk.norms[sp.idx[c]]-2*dot32(x, y), 0)
	}
	first := rng.IntN(n)
	centres := []int{first}
	nearest := make([]float32, n)
	assign := make([]int, n)
	for r := range n {
		nearest[r] = dist(r, first)
	}
	chosen := map[int]bool{first: true}
	for len(centres) < sp.k {
		total := 0.0
		for r := range n {
			if !chosen[r] {
				total += float64(nearest[r])
			}
		}
		pick := -1
		if total > 0 {
			u := rng.Float64() * total
			for r := range n {
				if chosen[r] {
					continue
				}
				u -= float64(nearest[r])
				if u < 0 {
					pick = r
					break
				}
			}
		}
		if pick < 0 {
			for r := range n {
				if !chosen[r] {
					pick = r
					break
				}
			}
		}
		c := len(centres)
		centres = append(centres, pick)
		chosen[pick] = true
		for r := range n {
			if d := dist(r, pick); d < nearest[r] || r == pick {
				nearest[r], assign[r] = d, c
			}
		}
	}
	return assign
}

// assign is the paper's A-step in sketch space: each of the examples rows
// (indexes into the sketch), in order, goes to the cluster minimizing (N'_k + 1)·|x_i − c_k|², N'_k
// counting the examples assigned so far in this pass.
func (sp *sketchSpace) assign(rows []int, c []float32, size []int) []int {
	d := sp.distances(rows, c, size)
	running := make([]int, sp.k)
	out := make([]int, len(rows))
	for r := range rows {
		best, bd := 0, math.Inf(1)
		for ci, v := range d[r*sp.k : (r+1)*sp.k] {
			if w := float64(running[ci]+1) * float64(v); w < bd {
				best, bd = ci, w
			}
		}
		out[r] = best
		running[best]++
	}
	return out
}

// split moves a random half of the cluster with the largest weighted
// distortion into the smallest cluster when that one is below minSize.
func (sp *sketchSpace) split(assign []int, minSize int, rng *rand.Rand) {
	size := make([]int, sp.k)
	for _, c := range assign {
		size[c]++
	}
	small := 0
	for c := range sp.k {
		if size[c] < size[small] {
			small = c
		}
	}
	if size[small] >= minSize {
		return
	}
	_, per := sp.objective(assign)
	big, worst := -1, -1.0
	for c := range sp.k {
		if c != small && size[c] >= 2 && per[c] > worst {
			big, worst = c, per[c]
		}
	}
	if big < 0 {
		return
	}
	moveHalf(assign, big, small, rng)
}

// fit runs the paper's batch algorithm in sketch space, as Cluster does
// on the Gram matrix (k-means++ seeding, then rounds of the weighted
// A-step, split and mean update; a round that would raise the sketch
// objective is undone; unless NoMoves, single-example moves that lower
// it follow), and returns the assignment of sp.idx and the sketch
// objective's history.
func (sp *sketchSpace) fit(opts GCOptions, rng *rand.Rand) ([]int, []float64) {
	assign := sp.seed(rng)
	if sp.k > 1 && !opts.NoMoves {
		sp.refine(assign, refinePassesSeed)
	}
	best, _ := sp.objective(assign)
	hist := []float64{best}
	for r := 0; r < opts.Rounds && sp.k > 1; r++ {
		c, size := sp.centroids(assign)
		next := sp.assign(sp.idx, c, size)
		sp.split(next, opts.MinSize, rng)
		if slices.Equal(next, assign) {
			// A fixed point: later rounds would repeat this one.
			for ; r < opts.Rounds; r++ {
				hist = append(hist, best)
			}
			break
		}
		if j, _ := sp.objective(next); j <= best {
			assign, best = next, j
		}
		hist = append(hist, best)
	}
	if sp.k > 1 && !opts.NoMoves {
		sp.refine(assign, refinePassesEnd)
		best, _ = sp.objective(assign)
		hist[len(hist)-1] = min(hist[len(hist)-1], best)
	}
	return assign, hist
}

// Passes of single-example moves after seeding and after the rounds:
// each costs about one round.
var refinePassesSeed, refinePassesEnd = 2, 6

// refine moves single examples to the cluster that lowers the weighted
// sketch objective Σ_c (N_c s_c − |S_c|²) most (s_c: the members' summed
// squared norms, S_c their summed sketch), until a pass moves (almost)
// nothing or maxPasses passes are done. Examples are visited in blocks:
// one product gives a block's x_i·S_c, and a move corrects the rest of
// the block with the block's own inner products.
func (sp *sketchSpace) refine(assign []int, maxPasses int) {
	dim, k, n := sp.sk.dim, sp.k, len(sp.idx)
	size, s, sum := sp.clusterSums(assign)
	sq := make([]float64, k)
	const blk = 64
	x := make([]float64, blk*dim)
	dots := make([]float64, blk*k)
	gram := make([]float64, blk*blk)
	for range maxPasses {
		total := 0.0
		for c := range k {
			sq[c] = sumSquares(sum[c*dim : (c+1)*dim])
			total += size[c]*s[c] - sq[c]
		}
		moved := 0
		for lo := 0; lo < n; lo += blk {
			hi := min(lo+blk, n)
			m := hi - lo
			for r := lo; r < hi; r++ {
				for j, v := range sp.sk.row(sp.idx[r]) {
					x[(r-lo)*dim+j] = float64(v)
				}
			}
			xb := general(m, dim, x[:m*dim])
			blas64.Gemm(blas.NoTrans, blas.Trans, 1, xb, general(k, dim, sum), 0, general(m, k, dots[:m*k]))
			blas64.Gemm(blas.NoTrans, blas.Trans, 1, xb, xb, 0, general(m, m, gram[:m*m]))
			for r := lo; r < hi; r++ {
				a, q := assign[r], r-lo
				if size[a] <= 1 {
					continue
				}
				d := dots[q*k : (q+1)*k]
				ni := gram[q*m+q]
				loss := (size[a]-1)*(s[a]-ni) - (sq[a] - 2*d[a] + ni) - (size[a]*s[a] - sq[a])
				best, bestDelta := -1, 0.0
				for c := range k {
					if c == a {
						continue
					}
					gain := (size[c]+1)*(s[c]+ni) - (sq[c] + 2*d[c] + ni) - (size[c]*s[c] - sq[c])
					if delta := loss + gain; delta < bestDelta {
						best, bestDelta = c, delta
					}
				}
				if best < 0 || -bestDelta <= 1e-9*total {
					continue
				}
				b := best
				sq[a] += -2*d[a] + ni
				sq[b] += 2*d[b] + ni
				s[a] -= ni
				s[b] += ni
				size[a]--
				size[b]++
				ra, rb := sum[a*dim:(a+1)*dim], sum[b*dim:(b+1)*dim]
				for j, v := range x[q*dim : (q+1)*dim] {
					ra[j] -= v
					rb[j] += v
				}
				for q2 := q + 1; q2 < m; q2++ {
					g := gram[q2*m+q]
					dots[q2*k+a] -= g
					dots[q2*k+b] += g
				}
				assign[r] = b
				moved++
			}
		}
		if moved <= n/2000 {
			return
		}
	}
}

// check reports a sketch whose values are not finite.
func (sk *sketch) check() error {
	for i, v := range sk.norms {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("sketch of example row %d is not finite", i)
		}
	}
	return nil
}

// moveHalf moves a random half of cluster big's members (rows of assign)
// into cluster small: the paper's split.
func moveHalf(assign []int, big, small int, rng *rand.Rand) {
	var members []int
	for r, c := range assign {
		if c == big {
			members = append(members, r)
		}
	}
	rng.Shuffle(len(members), func(a, b int) { members[a], members[b] = members[b], members[a] })
	for _, r := range members[:len(members)/2] {
		assign[r] = small
	}
}

package stats

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"gvdb/db/codec"
)

// The paper's batch Gradient Clustering (Faghri et al. 2020, their code's
// GradientClusterBatch.update_batch and gluster/layer.py), reimplemented
// on gvdb's factors so that gvdb can draw the paper's own GC curve beside
// its exact one:
//
//   - only weights are clustered (Layer.Weight: nn.Linear and nn.Conv2d
//     weights; biases and other parameters are not), and the distances
//     of the layers are summed, so each example has one cluster;
//   - each cluster's centre is rank-1 in each layer, C_k = c^o_k c^iᵀ_k,
//     with c^i_k the members' mean input factor (a convolution's mean over
//     positions too) and c^o_k their mean output-gradient factor (summed
//     over positions): a product of means, not the mean gradient;
//   - the A-step assigns the examples in order, each to the cluster with
//     the least (N′_k + 1)(|C_k|² − 2⟨g_i, C_k⟩ + |g_i|²), N′_k the
//     members assigned so far in this pass (the code's default mul_Nk);
//   - after it, if the smallest cluster has fewer than MinSize members, a
//     random half of the cluster with the largest summed distance moves
//     into it (at most one split a round); then the U-step refits the
//     centres;
//   - the centre factors start U(0,1)/(d_in + d_out), seeded.
//
// Where it departs from the code: float64 throughout; distances are not
// rounded to a 1e-7 grid; examples are taken in dataset-id order rather
// than a data loader's shuffle; a weight stored dense (a convolution whose
// materialized gradient is smaller than its factors) gets its members'
// exact mean as centre, since it has no factors; and the partition found
// is scored exactly over the whole scope (GC.Partition), so the paper's
// method differs from gvdb's only in the partition.

// paperLayer is one weight layer as the paper's algorithm sees it.
type paperLayer struct {
	b   *codec.Block
	cin [][]float64 // per cluster: input factor (factored), or the mean gradient (dense)
	cou [][]float64 // per cluster: output-gradient factor (factored only)
}

// paperChunk bounds the examples whose distances are computed at once.
const paperChunk = 256

// weightLayers returns the layers the paper clusters.
func weightLayers(layers []Layer) []Layer {
	var out []Layer
	for _, l := range layers {
		if l.Weight {
			out = append(out, l)
		}
	}
	return out
}

// paperFit runs rounds of the paper's batch algorithm on the examples rows
// (in that order) and returns each row's cluster and the fitted layers
// (their centres), from which paperAssignHeld assigns other examples.
func paperFit(layers []Layer, rows []int, k, rounds, minSize int, rng *rand.Rand) ([]int, []*paperLayer, error) {
	ws := weightLayers(layers)
	if len(ws) == 0 {
		return nil, nil, fmt.Errorf("the paper's gradient clustering: no weight layer in scope (it clusters the weights of Linear and Conv2d layers only)")
	}
	pls := make([]*paperLayer, len(ws))
	for j, l := range ws {
		pl := &paperLayer{b: l.Block, cin: make([][]float64, k), cou: make([][]float64, k)}
		b := l.Block
		for c := range k {
			if b.Kind == codec.Dense {
				pl.cin[c] = uniform(rng, b.Dim, float64(b.Dim))
				continue
			}
			pl.cin[c] = uniform(rng, b.In, float64(b.In+b.Out))
			pl.cou[c] = uniform(rng, b.Out, float64(b.In+b.Out))
		}
		pls[j] = pl
	}
	sq, err := exampleSqNorms(ws)
	if err != nil {
		return nil, nil, err
	}
	var assign []int
	for range max(rounds, 1) {
		var dist []float64
		assign, dist = paperAStep(pls, sq, rows, k)
		paperSplit(assign, dist, k, minSize, rng)
		for _, pl := range pls {
			pl.update(rows, assign, k)
		}
	}
	return assign, pls, nil
}

// paperAssignHeld assigns the examples rows (in order) to the fitted centres by
// one A-step, as the paper's held-out evaluation and refits do.
func paperAssignHeld(pls []*paperLayer, layers []Layer, rows []int, k int) ([]int, error) {
	sq, err := exampleSqNorms(weightLayers(layers))
	if err != nil {
		return nil, err
	}
	a, _ := paperAStep(pls, sq, rows, k)
	return a, nil
}

func uniform(rng *rand.Rand, n int, div float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.Float64() / div
	}
	return v
}

// paperAStep computes every row's distance to every centre and assigns the
// rows in order with the running-count weight; it returns the clusters and
// each row's distance to its own.
func paperAStep(pls []*paperLayer, sq []float64, rows []int, k int) ([]int, []float64) {
	cn := make([]float64, k) // |C_k|² summed over layers
	for _, pl := range pls {
		for c := range k {
			if pl.b.Kind == codec.Dense {
				cn[c] += sumSquares(pl.cin[c])
			} else {
				cn[c] += sumSquares(pl.cin[c]) * sumSquares(pl.cou[c])
			}
		}
	}
	assign := make([]int, len(rows))
	own := make([]float64, len(rows))
	running := make([]int, k)
	for lo := 0; lo < len(rows); lo += paperChunk {
		chunk := rows[lo:min(lo+paperChunk, len(rows))]
		dot := make([]float64, len(chunk)*k) // ⟨g_i, C_k⟩ summed over layers
		for _, pl := range pls {
			pl.dots(chunk, k, dot)
		}
		for r, i := range chunk {
			best, bd, bdist := 0, math.Inf(1), 0.0
			for c := range k {
				d := cn[c] - 2*dot[r*k+c] + sq[i]
				if w := float64(running[c]+1) * d; w < bd {
					best, bd, bdist = c, w, d
				}
			}
			assign[lo+r], own[lo+r] = best, bdist
			running[best]++
		}
	}
	return assign, own
}

// dots adds ⟨g_i, C_k⟩ for the rows to dot (rows x k).
func (pl *paperLayer) dots(rows []int, k int, dot []float64) {
	b := pl.b
	if b.Kind == codec.Dense {
		for r, i := range rows {
			g := b.Rows[i*b.Dim : (i+1)*b.Dim]
			for c := range k {
				s := 0.0
				for j, v := range g {
					s += float64(v) * pl.cin[c][j]
				}
				dot[r*k+c] += s
			}
		}
		return
	}
	// P = A·Cinᵀ and Q = Δ·Coutᵀ over the rows' positions; ⟨g_i, C_k⟩ =
	// Σ_t P[it,k]·Q[it,k].
	m := len(rows) * b.T
	a, d := factorRows(b, rows)
	cin := make([]float64, 0, k*b.In)
	cou := make([]float64, 0, k*b.Out)
	for c := range k {
		cin = append(cin, pl.cin[c]...)
		cou = append(cou, pl.cou[c]...)
	}
	p := make([]float64, m*k)
	q := make([]float64, m*k)
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, general(m, b.In, a), general(k, b.In, cin), 0, general(m, k, p))
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, general(m, b.Out, d), general(k, b.Out, cou), 0, general(m, k, q))
	for r := range rows {
		for t := range b.T {
			row := (r*b.T + t) * k
			for c := range k {
				dot[r*k+c] += p[row+c] * q[row+c]
			}
		}
	}
}

// paperSplit moves a random half of the cluster with the largest summed
// distance into the smallest cluster when that has fewer than minSize
// members (at most one split a round).
func paperSplit(assign []int, dist []float64, k, minSize int, rng *rand.Rand) {
	if k < 2 {
		return
	}
	size := make([]int, k)
	td := make([]float64, k)
	for r, c := range assign {
		size[c]++
		td[c] += dist[r]
	}
	small, big := 0, 0
	for c := range k {
		if size[c] < size[small] {
			small = c
		}
		if td[c] > td[big] {
			big = c
		}
	}
	if size[small] >= minSize || big == small || size[big] < 2 {
		return
	}
	moveHalf(assign, big, small, rng)
}

// update is the U-step: each cluster's centre factors become its members'
// mean input factor (averaged over positions) and mean output-gradient
// factor (summed over positions); a dense layer's centre its members'
// mean gradient. An empty cluster keeps its centre.
func (pl *paperLayer) update(rows, assign []int, k int) {
	b := pl.b
	n := make([]int, k)
	var sin, sou [][]float64
	if b.Kind == codec.Dense {
		sin = zeros(k, b.Dim)
	} else {
		sin, sou = zeros(k, b.In), zeros(k, b.Out)
	}
	for r, i := range rows {
		c := assign[r]
		n[c]++
		if b.Kind == codec.Dense {
			for j, v := range b.Rows[i*b.Dim : (i+1)*b.Dim] {
				sin[c][j] += float64(v)
			}
			continue
		}
		for t := range b.T {
			off := (i*b.T + t)
			for j, v := range b.A[off*b.In : (off+1)*b.In] {
				sin[c][j] += float64(v) / float64(b.T)
			}
			for j, v := range b.Delta[off*b.Out : (off+1)*b.Out] {
				sou[c][j] += float64(v)
			}
		}
	}
	for c := range k {
		if n[c] == 0 {
			continue
		}
		for j := range sin[c] {
			sin[c][j] /= float64(n[c])
		}
		pl.cin[c] = sin[c]
		if sou != nil {
			for j := range sou[c] {
				sou[c][j] /= float64(n[c])
			}
			pl.cou[c] = sou[c]
		}
	}
}

func zeros(k, n int) [][]float64 {
	out := make([][]float64, k)
	for c := range out {
		out[c] = make([]float64, n)
	}
	return out
}

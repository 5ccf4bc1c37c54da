package stats

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// GCOptions configure Gradient Clustering. Zero values pick the defaults.
type GCOptions struct {
	// Rounds of the paper's batch algorithm (default 10, the paper's
	// gb_citers for MNIST).
	Rounds int
	// Seed makes the initialization and the splits reproducible.
	Seed uint64
	// MinSize: a cluster smaller than this receives half of the
	// highest-distortion cluster (default 1, the paper's min_size).
	MinSize int
	// NoMoves turns off gvdb's exact refinement (single-example moves
	// that strictly lower the weighted objective) after each round (Gram
	// path only).
	NoMoves bool
	// Path picks the Gram matrix or the sketch (default PathAuto).
	Path Path
	// GramMaxN: PathAuto takes the Gram path up to this many examples
	// (default 8192) when it fits MemoryBudget.
	GramMaxN int
	// SketchDim is the sketch dimension of each layer with more
	// parameters (default 256).
	SketchDim int
	// MemoryBudget bounds the bytes the chosen path may take (default
	// DefaultMemoryBudget: half the machine's memory).
	MemoryBudget int64
	// SplitKeys, if set (one per example), decide the held-out halves in
	// place of the example ids: copies of an example (--duplicate) share
	// their source's key and so never straddle the halves.
	SplitKeys []uint64
}

// Clustering is a partition of a snapshot's N examples into K clusters.
type Clustering struct {
	K int
	// Assign is each example's cluster, in the input order.
	Assign []int
	// Sizes are the cluster sizes N_k.
	Sizes []int
	// Objective is the weighted distortion Σ_k N_k Σ_{i∈C_k} |g_i − μ_k|².
	Objective float64
	// History is the objective after initialization and after each
	// round; it never increases.
	History []float64
}

// N returns the number of clustered examples.
func (c *Clustering) N() int { return len(c.Assign) }

// state is the Gram-space view of a partition: for cluster k, its size,
// s_k = Σ_{i∈C_k} K_ii, q_k = Σ_{i,j∈C_k} K_ij and, for every example i,
// R_ik = Σ_{j∈C_k} K_ij. Then <g_i, μ_k> = R_ik/N_k, |μ_k|² = q_k/N_k² and
// N_k Σ_{i∈C_k}|g_i − μ_k|² = N_k s_k − q_k.
type state struct {
	g      *Gram
	k      int
	assign []int
	size   []int
	s, q   []float64
	r      []float64 // N x k
}

func newState(g *Gram, k int, assign []int) *state {
	st := &state{g: g, k: k, assign: assign}
	st.recompute()
	return st
}

func (st *state) recompute() {
	n, k := st.g.N, st.k
	st.size = make([]int, k)
	st.s = make([]float64, k)
	st.q = make([]float64, k)
	st.r = make([]float64, n*k)
	for i := range n {
		a := st.assign[i]
		st.size[a]++
		st.s[a] += st.g.K[i*n+i]
		row := st.g.K[i*n : (i+1)*n]
		ri := st.r[i*k : (i+1)*k]
		for j, v := range row {
			ri[st.assign[j]] += v
		}
	}
	for i := range n {
		st.q[st.assign[i]] += st.r[i*k+st.assign[i]]
	}
}

func (st *state) objective() float64 {
	j := 0.0
	for c := range st.k {
		j += float64(st.size[c])*st.s[c] - st.q[c]
	}
	return max(j, 0)
}

// dist returns |g_i − μ_c|² for a non-empty cluster c.
func (st *state) dist(i, c int) float64 {
	n := float64(st.size[c])
	return st.g.K[i*st.g.N+i] - 2*st.r[i*st.k+c]/n + st.q[c]/(n*n)
}

// clusterCost returns N_c s_c − q_c after adding (sign +1) or removing
// (sign −1) example i.
func (st *state) clusterCost(c, i int, sign float64) float64 {
	kii := st.g.K[i*st.g.N+i]
	n := float64(st.size[c]) + sign
	s := st.s[c] + sign*kii
	q := st.q[c] + sign*2*st.r[i*st.k+c] + kii
	if sign < 0 {
		q = st.q[c] - 2*st.r[i*st.k+c] + kii
	}
	return n*s - q
}

// move moves example i to cluster b, updating the sums in O(N).
func (st *state) move(i, b int) {
	n, k := st.g.N, st.k
	a := st.assign[i]
	kii := st.g.K[i*n+i]
	st.q[a] += -2*st.r[i*k+a] + kii
	st.q[b] += 2*st.r[i*k+b] + kii
	st.s[a] -= kii
	st.s[b] += kii
	st.size[a]--
	st.size[b]++
	row := st.g.K[i*n : (i+1)*n]
	for j, v := range row {
		st.r[j*k+a] -= v
		st.r[j*k+b] += v
	}
	st.assign[i] = b
}

// refine moves single examples to the cluster that lowers the weighted
// objective most, until no move lowers it (at most maxPasses passes).
func (st *state) refine(order []int, maxPasses int) {
	for range maxPasses {
		moved := false
		for _, i := range order {
			a := st.assign[i]
			if st.size[a] <= 1 {
				continue
			}
			base := float64(st.size[a])*st.s[a] - st.q[a]
			loss := st.clusterCost(a, i, -1) - base
			best, bestDelta := -1, 0.0
			for c := range st.k {
				if c == a {
					continue
				}
				delta := loss + st.clusterCost(c, i, +1) - (float64(st.size[c])*st.s[c] - st.q[c])
				if delta < bestDelta {
					best, bestDelta = c, delta
				}
			}
			// Ignore moves within rounding of the objective.
			if best >= 0 && -bestDelta > 1e-12*math.Abs(base) {
				st.move(i, best)
				moved = true
			}
		}
		if !moved {
			return
		}
	}
}

// ErrClusters is returned for a cluster count outside 1..N.
var ErrClusters = errors.New("invalid number of clusters")

// Cluster partitions the examples behind g into k clusters with the paper's
// batch Gradient Clustering algorithm on exact cluster means:
//
//  1. initialize with k-means++ seeding on gradient distances;
//  2. each round, assign every example i (in example-id order) to the
//     cluster minimizing (N'_k + 1)·|g_i − μ_k|², N'_k counting the
//     examples assigned so far in this pass; if a cluster is smaller than
//     MinSize, move a random half of the cluster with the largest weighted
//     distortion into it (at most one split a round); then set each centre
//     to its members' mean;
//  3. a round that would raise the objective is undone; unless NoMoves,
//     single-example moves that strictly lower the objective follow.
//
// ids are the examples' dataset ids: processing in id order makes the
// result independent of the order the examples are stored in.
func Cluster(g *Gram, ids []uint64, k int, opts GCOptions) (*Clustering, error) {
	n := g.N
	if k < 1 || k > n {
		return nil, fmt.Errorf("%w: %d clusters for %d examples (want 1 to %d)", ErrClusters, k, n, n)
	}
	if len(ids) != n {
		return nil, fmt.Errorf("cluster: %d ids for %d examples", len(ids), n)
	}
	if opts.Rounds <= 0 {
		opts.Rounds = 10
	}
	if opts.MinSize <= 0 {
		opts.MinSize = 1
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return ids[order[a]] < ids[order[b]] })
	rng := rand.New(rand.NewPCG(opts.Seed, 0x6763))

	st := newState(g, k, seedPlusPlus(g, order, k, rng))
	if !opts.NoMoves {
		st.refine(order, 50)
	}
	best := st.objective()
	hist := []float64{best}
	for r := 0; r < opts.Rounds; r++ {
		if k == 1 {
			hist = append(hist, best)
			continue
		}
		prev := append([]int(nil), st.assign...)
		next := paperAssign(st, order)
		if slices.Equal(next, prev) && minSize(st) >= opts.MinSize {
			// A fixed point: later rounds would repeat this one.
			for ; r < opts.Rounds; r++ {
				hist = append(hist, best)
			}
			break
		}
		st = newState(g, k, next)
		split(st, order, opts.MinSize, rng)
		if j := st.objective(); j > best {
			st = newState(g, k, prev)
		}
		if !opts.NoMoves {
			st.refine(order, 50)
		}
		best = min(best, st.objective())
		hist = append(hist, st.objective())
	}
	return &Clustering{K: k, Assign: st.assign, Sizes: st.size, Objective: st.objective(), History: hist}, nil
}

// minSize returns the size of the smallest cluster.
func minSize(st *state) int {
	return slices.Min(st.size)
}

// seedPlusPlus picks k centres by k-means++ (in example-id order, seeded)
// and assigns each example to its nearest centre.
func seedPlusPlus(g *Gram, order []int, k int, rng *rand.Rand) []int {
	n := g.N
	kd := func(i, j int) float64 { return max(g.K[i*n+i]-2*g.K[i*n+j]+g.K[j*n+j], 0) }
	centres := []int{order[rng.IntN(n)]}
	nearest := make([]float64, n)
	for i := range nearest {
		nearest[i] = kd(i, centres[0])
	}
	chosen := map[int]bool{centres[0]: true}
	for len(centres) < k {
		total := 0.0
		for _, i := range order {
			if !chosen[i] {
				total += nearest[i]
			}
		}
		pick := -1
		if total > 0 {
			u := rng.Float64() * total
			for _, i := range order {
				if chosen[i] {
					continue
				}
				u -= nearest[i]
				if u < 0 {
					pick = i
					break
				}
			}
		}
		if pick < 0 { // all remaining examples coincide with centres
			for _, i := range order {
				if !chosen[i] {
					pick = i
					break
				}
			}
		}
		centres = append(centres, pick)
		chosen[pick] = true
		for i := range nearest {
			nearest[i] = min(nearest[i], kd(i, pick))
		}
	}
	assign := make([]int, n)
	for i := range assign {
		best, bd := 0, math.Inf(1)
		for c, ctr := range centres {
			if i == ctr {
				best = c
				break
			}
			if d := kd(i, ctr); d < bd {
				best, bd = c, d
			}
		}
		assign[i] = best
	}
	return assign
}

// paperAssign is the paper's A-step: with the current centres fixed, each
// example in turn goes to the cluster minimizing (N'_k + 1)·|g_i − μ_k|².
func paperAssign(st *state, order []int) []int {
	running := make([]int, st.k)
	next := make([]int, len(st.assign))
	for _, i := range order {
		best, bd := st.assign[i], math.Inf(1)
		for c := range st.k {
			if st.size[c] == 0 {
				continue
			}
			if d := float64(running[c]+1) * st.dist(i, c); d < bd {
				best, bd = c, d
			}
		}
		next[i] = best
		running[best]++
	}
	return next
}

// split moves a random half of the cluster with the largest weighted
// distortion into the smallest cluster when that one is below minSize.
func split(st *state, order []int, minSize int, rng *rand.Rand) {
	small := 0
	for c := range st.k {
		if st.size[c] < st.size[small] {
			small = c
		}
	}
	if st.size[small] >= minSize {
		return
	}
	big, worst := -1, -1.0
	for c := range st.k {
		if c == small || st.size[c] < 2 {
			continue
		}
		if d := float64(st.size[c])*st.s[c] - st.q[c]; d > worst {
			big, worst = c, d
		}
	}
	if big < 0 {
		return
	}
	var members []int
	for _, i := range order {
		if st.assign[i] == big {
			members = append(members, i)
		}
	}
	rng.Shuffle(len(members), func(a, b int) { members[a], members[b] = members[b], members[a] })
	for _, i := range members[:len(members)/2] {
		st.move(i, small)
	}
}

package stats

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"gvdb/db/codec"
)

// Path says where Gradient Clustering searches for its partition. Either
// way the partition is scored exactly.
type Path int

// Paths.
const (
	// PathAuto takes the Gram matrix when N <= GCOptions.GramMaxN and it
	// fits the memory budget, and the sketch otherwise.
	PathAuto Path = iota
	// PathGram searches on the exact N x N Gram matrix (8·N² bytes), with
	// exact distances and gvdb's single-example refinement.
	PathGram
	// PathSketch searches on a seeded random projection of the gradients
	// (sketch.go), in memory and time linear in N.
	PathSketch
)

// String returns "auto", "gram" or "sketch".
func (p Path) String() string {
	switch p {
	case PathGram:
		return "gram"
	case PathSketch:
		return "sketch"
	}
	return "auto"
}

// ParsePath parses "auto", "gram" or "sketch".
func ParsePath(s string) (Path, error) {
	for _, p := range []Path{PathAuto, PathGram, PathSketch} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown Gradient Clustering path %q (want auto, gram or sketch)", s)
}

// Defaults of GCOptions.
const (
	DefaultGramMaxN  = 8192
	DefaultSketchDim = 256
)

// ErrNonFinite is returned for gradients with NaN or Inf values where a
// computation cannot give NaN for them.
var ErrNonFinite = errors.New("NaN or Inf gradient")

// ErrBudget is returned when no path of a computation fits the memory
// budget.
var ErrBudget = errors.New("over the memory budget")

// MemoryBudget resolves a memory budget: budget itself when set (> 0),
// else DefaultMemoryBudget. Every memory check in gvdb resolves its budget
// here.
func MemoryBudget(budget int64) int64 {
	if budget > 0 {
		return budget
	}
	return DefaultMemoryBudget()
}

// DefaultMemoryBudget returns half of the machine's physical memory (4 GiB
// when it cannot be read).
func DefaultMemoryBudget() int64 {
	raw, err := os.ReadFile("/proc/meminfo")
	if err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil && kb > 0 {
					return kb * 1024 / 2
				}
			}
		}
	}
	return 4 << 30
}

// GC is one snapshot's examples, over a scope of layers, prepared for
// Gradient Clustering: the Gram matrix or the sketch is built once and
// shared by every K, and partitions are cached by K.
//
// Two populations are supported. InSample fits and scores the partition on
// all N examples: the paper's quantity when the snapshot holds the whole
// training set. HeldOut is for a sample: fit on one half, assign the other
// half by the same weighted rule, score it without bias, swap, average.
type GC struct {
	layers  []Layer
	ids     []uint64
	opts    GCOptions
	path    Path
	gram    *Gram
	sk      *sketch
	sqNorms []float64
	folds   [2][]int
	cache   map[gcKey]*Partition
}

type gcKey struct {
	k       int
	heldOut bool
	method  Method
}

// Method is how a partition is fitted.
type Method int

const (
	// MethodExact is gvdb's fit: the paper's batch algorithm with exact
	// cluster means, k-means++ seeding and single-example moves that
	// lower the exact weighted objective (a local optimum).
	MethodExact Method = iota
	// MethodPaper is the paper's own algorithm (paper.go): rank-1 centres
	// over the weight layers, its initialization and split rule.
	MethodPaper
)

// String is the name the query language uses.
func (m Method) String() string {
	if m == MethodPaper {
		return "paper"
	}
	return "exact"
}

// ParseMethod parses "exact" or "paper".
func ParseMethod(s string) (Method, error) {
	switch s {
	case "exact":
		return MethodExact, nil
	case "paper":
		return MethodPaper, nil
	}
	return 0, fmt.Errorf("unknown clustering method %q (want 'exact' or 'paper')", s)
}

// NewGC prepares the layers' examples for clustering, on the path opts
// asks for (PathAuto: by N and the memory budget). It fails with ErrBudget
// when no path fits.
func NewGC(layers []Layer, opts GCOptions) (*GC, error) {
	if len(layers) == 0 {
		return nil, fmt.Errorf("gradient clustering: no layers in scope")
	}
	opts = opts.withDefaults()
	sqNorms, err := exampleSqNorms(layers)
	if err != nil {
		return nil, fmt.Errorf("gradient clustering: %w", err)
	}
	n := len(sqNorms)
	g := &GC{layers: layers, ids: layers[0].Block.IDs, opts: opts, sqNorms: sqNorms, cache: map[gcKey]*Partition{}}
	gramNeed, sketchNeed := GramBytes(n), sketchBytes(layers, opts.SketchDim)
	g.path = opts.Path
	if g.path == PathAuto {
		g.path = PathSketch
		if n <= opts.GramMaxN && gramNeed <= opts.MemoryBudget {
			g.path = PathGram
		}
	}
	need := gramNeed
	if g.path == PathSketch {
		need = sketchNeed
	}
	if need > opts.MemoryBudget {
		return nil, fmt.Errorf("gradient clustering of %d examples: %w: the %s path needs about %s (Gram %s, sketch %s), the budget is %s; raise the budget (--memory) or select fewer examples or layers",
			n, ErrBudget, g.path, fmtBytes(need), fmtBytes(gramNeed), fmtBytes(sketchNeed), fmtBytes(opts.MemoryBudget))
	}
	if g.path == PathGram {
		if g.gram, err = NewGram(layers); err != nil {
			return nil, err
		}
	} else {
		g.sk = newSketch(layers, opts.SketchDim, opts.Seed)
		if err := g.sk.check(); err != nil {
			return nil, fmt.Errorf("gradient clustering: %w", err)
		}
	}
	return g, nil
}

// exampleSqNorms returns |g_i|² over the layers, exactly from the factors;
// NaN or Inf gradients are an error.
func exampleSqNorms(layers []Layer) ([]float64, error) {
	n := layers[0].Block.N()
	out := make([]float64, n)
	for _, l := range layers {
		b := l.Block
		if b.N() != n {
			return nil, fmt.Errorf("layer %s has %d examples, %s has %d", l.Name, b.N(), layers[0].Name, n)
		}
		if row, bad := b.NonFinite(); bad {
			return nil, fmt.Errorf("%w: layer %s (example row %d)", ErrNonFinite, l.Name, row)
		}
		switch {
		case b.Kind == codec.Dense:
			for i, v := range rowSqNorms(f64(b.Rows), n, b.Dim) {
				out[i] += v
			}
		case b.T == 1:
			an, dn := rowSqNorms(f64(b.A), n, b.In), rowSqNorms(f64(b.Delta), n, b.Out)
			for i := range n {
				out[i] += an[i] * dn[i]
			}
		default:
			g := make([]float64, b.Params())
			for i := range n {
				materialize(b, i, g)
				out[i] += sumSquares(g)
			}
		}
	}
	return out, nil
}

// GramBytes returns the memory the Gram path takes for n examples: the
// matrix and, for held-out estimates, one half's copy.
func GramBytes(n int) int64 { return 10 * int64(n) * int64(n) }

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (o GCOptions) withDefaults() GCOptions {
	if o.Rounds <= 0 {
		o.Rounds = 10
	}
	if o.MinSize <= 0 {
		o.MinSize = 1
	}
	if o.GramMaxN <= 0 {
		o.GramMaxN = DefaultGramMaxN
	}
	if o.SketchDim <= 0 {
		o.SketchDim = DefaultSketchDim
	}
	o.MemoryBudget = MemoryBudget(o.MemoryBudget)
	return o
}

// N returns the number of examples.
func (g *GC) N() int { return len(g.sqNorms) }

// IDs returns the examples' dataset ids, in the blocks' order.
func (g *GC) IDs() []uint64 { return g.ids }

// Path returns the path the partitions are searched on.
func (g *GC) Path() Path { return g.path }

// Describe says which path was used, for --timing and warnings.
func (g *GC) Describe() string {
	if g.path == PathGram {
		return fmt.Sprintf("gram (N = %d, %s)", g.N(), fmtBytes(8*int64(g.N())*int64(g.N())))
	}
	return fmt.Sprintf("sketch (N = %d, %d dims, %s)", g.N(), g.sk.dim, fmtBytes(int64(len(g.sk.x))*4))
}

// Partition is a scored Gradient Clustering partition.
type Partition struct {
	K       int
	HeldOut bool
	N       int
	// VarB is b·V_GC, the variance of the GC estimator times the number
	// b = B/K of examples drawn per cluster: Σ_k W_k² σ_k² with W_k the
	// clusters' shares and σ_k² their total variances. In-sample it is
	// Σ_k N_k Σ_{i∈C_k}|g_i − μ_k|² / N²; held out, the mean over the two
	// halves of Σ_k n_k SS_k / (n(n−1)), unbiased for the partition's
	// population value.
	VarB float64
	// Assign and Sizes are the in-sample partition (nil when held out).
	Assign []int
	Sizes  []int
	// History is the search's objective after initialization and each
	// round (in-sample only; in sketch space on the sketch path).
	History []float64

	folds [2]heldFold
	// strata is a fixed partition scored on a sample (Score): VarB =
	// Σ_k coef_k SS_k over the sample's examples rows in clusters assign.
	strata *strataScore
}

// strataScore is a fixed partition's stratified estimate on a sample:
// each sampled row's cluster, and each cluster's coefficient
// coef_k = W_k² (N_k − 1) / (N_k (n_k − 1)) (0 for a cluster left out),
// so that VarB = Σ_k coef_k SS_k, SS_k the sampled members' scatter.
type strataScore struct {
	rows, assign []int
	coef         []float64
}

// heldFold is one held-out half: its examples in id order, their
// clusters, and the scoring denominator n(n−1).
type heldFold struct {
	rows   []int
	assign []int
}

// Variance returns V_GC / D for batch size B: VarB / (B/K) / D. With K = 1
// in-sample it equals Moments.Variance(B).
func (p *Partition) Variance(b float64, d int) float64 {
	return p.VarB / (b / float64(p.K)) / float64(d)
}

// Distortion returns the weighted distortion Σ_k N_k Σ_{i∈C_k}|g_i − μ_k|²
// (held out: its unbiased estimate, N²·VarB).
func (p *Partition) Distortion() float64 { return p.VarB * float64(p.N) * float64(p.N) }

// idOrder returns the examples rows sorted by dataset id.
func (g *GC) idOrder(rows []int) []int {
	out := append([]int(nil), rows...)
	sort.SliceStable(out, func(a, b int) bool { return g.ids[out[a]] < g.ids[out[b]] })
	return out
}

// Fit fits k clusters by method, in-sample or held out (see InSample and
// HeldOut), and scores them exactly over all the layers in scope.
func (g *GC) Fit(k int, method Method, heldOut bool) (*Partition, error) {
	if method == MethodExact {
		if heldOut {
			return g.HeldOut(k)
		}
		return g.InSample(k)
	}
	key := gcKey{k, heldOut, method}
	if p := g.cache[key]; p != nil {
		return p, nil
	}
	n := g.N()
	rng := rand.New(rand.NewPCG(g.opts.Seed, 0x7061))
	var p *Partition
	if !heldOut {
		if k < 1 || k > n {
			return nil, fmt.Errorf("%w: %d clusters for %d examples (want 1 to %d)", ErrClusters, k, n, n)
		}
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		order := g.idOrder(all)
		a, _, err := paperFit(g.layers, order, k, g.opts.Rounds, g.opts.MinSize, rng)
		if err != nil {
			return nil, err
		}
		p = &Partition{K: k, N: n, Assign: make([]int, n)}
		for r, i := range order {
			p.Assign[i] = a[r]
		}
		obj, sizes := g.scatter(all, p.Assign, k)
		p.Sizes, p.VarB = sizes, obj/float64(n)/float64(n)
	} else {
		f := g.halves()
		if k < 1 || k > len(f[0]) || len(f[1]) < 2 {
			return nil, fmt.Errorf("%w: %d clusters for held-out halves of %d and %d examples (want 1 to %d)", ErrClusters, k, len(f[0]), len(f[1]), len(f[0]))
		}
		p = &Partition{K: k, N: n, HeldOut: true}
		for h := range 2 {
			fit, held := f[h], f[1-h]
			_, pls, err := paperFit(g.layers, fit, k, g.opts.Rounds, g.opts.MinSize, rng)
			if err != nil {
				return nil, err
			}
			assign, err := paperAssignHeld(pls, g.layers, held, k)
			if err != nil {
				return nil, err
			}
			obj, _ := g.scatter(held, assign, k)
			m := float64(len(held))
			p.VarB += obj / (m * (m - 1)) / 2
			p.folds[h] = heldFold{rows: held, assign: assign}
		}
	}
	g.cache[key] = p
	return p, nil
}

// InSample fits k clusters on all N examples and scores them there.
func (g *GC) InSample(k int) (*Partition, error) {
	key := gcKey{k, false, MethodExact}
	if p := g.cache[key]; p != nil {
		return p, nil
	}
	n := g.N()
	if k < 1 || k > n {
		return nil, fmt.Errorf("%w: %d clusters for %d examples (want 1 to %d)", ErrClusters, k, n, n)
	}
	p := &Partition{K: k, N: n}
	if g.path == PathGram {
		c, err := Cluster(g.gram, g.ids, k, g.opts)
		if err != nil {
			return nil, err
		}
		p.Assign, p.Sizes, p.History = c.Assign, c.Sizes, c.History
		p.VarB = c.Objective / float64(n) / float64(n)
	} else {
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		order := g.idOrder(all)
		sp := &sketchSpace{sk: g.sk, idx: order, k: k}
		assign, hist := sp.fit(g.opts, rand.New(rand.NewPCG(g.opts.Seed, 0x6763)))
		p.Assign, p.History = make([]int, n), hist
		for r, i := range order {
			p.Assign[i] = assign[r]
		}
		obj, sizes := g.scatter(all, p.Assign, k)
		p.Sizes = sizes
		p.VarB = obj / float64(n) / float64(n)
	}
	g.cache[key] = p
	return p, nil
}

// halves splits the examples in two by a seeded hash of their ids (so the
// split does not depend on storage order), each half in id order.
func (g *GC) halves() [2][]int {
	if g.folds[0] != nil {
		return g.folds
	}
	n := g.N()
	h := make([]uint64, n)
	all := make([]int, n)
	keys := g.ids
	if len(g.opts.SplitKeys) == n {
		keys = g.opts.SplitKeys
	}
	for i := range n {
		h[i] = splitmix(keys[i] ^ (g.opts.Seed * 0x9e3779b97f4a7c15))
		all[i] = i
	}
	sort.SliceStable(all, func(a, b int) bool { return h[all[a]] < h[all[b]] })
	// Examples with one key (copies) stay in one half.
	cut := n / 2
	for cut > 0 && cut < n && h[all[cut]] == h[all[cut-1]] {
		cut++
	}
	g.folds = [2][]int{g.idOrder(all[:cut]), g.idOrder(all[cut:])}
	return g.folds
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// HeldOut estimates, from a sample, the variance of the GC estimator whose
// k clusters were fitted on the population: for each half, fit k clusters
// on it, assign the other half's examples (in id order) by the paper's
// weighted rule to the fitted centres, and score them without bias,
// Σ_k n_k SS_k / (n(n−1)); VarB is the mean of the two.
func (g *GC) HeldOut(k int) (*Partition, error) {
	key := gcKey{k, true, MethodExact}
	if p := g.cache[key]; p != nil {
		return p, nil
	}
	f := g.halves()
	if k < 1 || k > len(f[0]) || len(f[1]) < 2 {
		return nil, fmt.Errorf("%w: %d clusters for held-out halves of %d and %d examples (want 1 to %d)", ErrClusters, k, len(f[0]), len(f[1]), len(f[0]))
	}
	p := &Partition{K: k, N: g.N(), HeldOut: true}
	for h := range 2 {
		fit, held := f[h], f[1-h]
		opts := g.opts
		opts.Seed += uint64(h) + 1
		var assign []int
		if g.path == PathGram {
			c, err := Cluster(g.gram.sub(fit), subIDs(g.ids, fit), k, opts)
			if err != nil {
				return nil, err
			}
			assign = g.gram.assignHeld(fit, c.Assign, k, held)
		} else {
			sp := &sketchSpace{sk: g.sk, idx: fit, k: k}
			fa, _ := sp.fit(opts, rand.New(rand.NewPCG(opts.Seed, 0x6763)))
			c, size := sp.centroids(fa)
			assign = sp.assign(held, c, size)
		}
		obj, _ := g.scatter(held, assign, k)
		n := float64(len(held))
		p.VarB += obj / (n * (n - 1)) / 2
		p.folds[h] = heldFold{rows: held, assign: assign}
	}
	g.cache[key] = p
	return p, nil
}

func subIDs(ids []uint64, rows []int) []uint64 {
	out := make([]uint64, len(rows))
	for r, i := range rows {
		out[r] = ids[i]
	}
	return out
}

// sub returns the Gram matrix of the examples rows.
func (g *Gram) sub(rows []int) *Gram {
	n := len(rows)
	s := &Gram{N: n, K: make([]float64, n*n)}
	for a, i := range rows {
		src := g.K[i*g.N : (i+1)*g.N]
		dst := s.K[a*n : (a+1)*n]
		for b, j := range rows {
			dst[b] = src[j]
		}
	}
	return s
}

// assignHeld assigns the examples held, in order, by the paper's weighted
// rule to the means of the clusters that fitAssign gives the examples fit.
func (g *Gram) assignHeld(fit, fitAssign []int, k int, held []int) []int {
	n := g.N
	size := make([]int, k)
	q := make([]float64, k)
	members := make([][]int, k)
	for r, i := range fit {
		members[fitAssign[r]] = append(members[fitAssign[r]], i)
		size[fitAssign[r]]++
	}
	for c, ms := range members {
		for _, i := range ms {
			row := g.K[i*n : (i+1)*n]
			for _, j := range ms {
				q[c] += row[j]
			}
		}
	}
	running := make([]int, k)
	out := make([]int, len(held))
	for r, i := range held {
		row := g.K[i*n : (i+1)*n]
		best, bd := 0, math.Inf(1)
		for c, ms := range members {
			if size[c] == 0 {
				continue
			}
			s := 0.0
			for _, j := range ms {
				s += row[j]
			}
			nc := float64(size[c])
			d := max(row[i]-2*s/nc+q[c]/(nc*nc), 0)
			if w := float64(running[c]+1) * d; w < bd {
				best, bd = c, w
			}
		}
		out[r] = best
		running[best]++
	}
	return out
}

// scatter returns Σ_k n_k SS_k, SS_k = Σ_{i∈C_k}|g_i − m_k|² around the
// members' own mean m_k, for the examples rows with clusters assign, and
// the cluster sizes: exactly, from the Gram matrix or the factors.
func (g *GC) scatter(rows, assign []int, k int) (float64, []int) {
	ss, sizes := g.clusterScatter(rows, assign, k)
	total := 0.0
	for c, v := range ss {
		total += float64(sizes[c]) * v
	}
	return total, sizes
}

// clusterScatter returns each cluster's SS_k and size.
func (g *GC) clusterScatter(rows, assign []int, k int) ([]float64, []int) {
	members := make([][]int, k)
	for r, i := range rows {
		members[assign[r]] = append(members[assign[r]], i)
	}
	sizes := make([]int, k)
	ss := make([]float64, k)
	for c, ms := range members {
		sizes[c] = len(ms)
		if len(ms) < 2 {
			continue
		}
		sq := 0.0
		for _, i := range ms {
			sq += g.sqNorms[i]
		}
		var sumSq float64
		if g.gram != nil {
			n := g.gram.N
			for _, i := range ms {
				row := g.gram.K[i*n : (i+1)*n]
				for _, j := range ms {
					sumSq += row[j]
				}
			}
		} else {
			sumSq = sumNormSq(g.layers, ms)
		}
		ss[c] = max(sq-sumSq/float64(len(ms)), 0)
	}
	return ss, sizes
}

// MissedClusters is in Score's warning about clusters a sample cannot
// estimate (the estimate is then low).
const MissedClusters = "are left out of the estimate"

// FixedPartition is a partition fitted at another snapshot of the same
// population (a refit every T steps), by example id.
type FixedPartition struct {
	K  int
	Of map[uint64]int
	// Sizes are the clusters' sizes N_k in the population it was fitted
	// on (of N examples).
	Sizes []int
	N     int
}

// Fixed returns p's partition of this snapshot's examples by id (p fitted
// in-sample).
func (g *GC) Fixed(p *Partition) (*FixedPartition, error) {
	if p.Assign == nil {
		return nil, fmt.Errorf("gradient clustering: a held-out partition cannot be reused")
	}
	f := &FixedPartition{K: p.K, Of: make(map[uint64]int, len(g.ids)), Sizes: p.Sizes, N: p.N}
	for i, id := range g.ids {
		f.Of[id] = p.Assign[i]
	}
	return f, nil
}

// Score scores a fixed partition on this snapshot's gradients. When the
// snapshot holds every example of the partition's population (a full
// snapshot), exactly: Σ_k N_k SS_k / N². Otherwise the examples are
// stratified by their clusters and VarB = Σ_k W_k² σ_k² is estimated
// stratum by stratum, W_k = N_k/N from the population, σ_k² by
// (N_k−1)/N_k · s_k² with s_k² the stratum's sample variance: unbiased
// when each stratum's examples are a uniform sample of it (a stratified
// sample, or a uniform one given the strata's counts). A stratum with
// fewer than 2 sampled examples cannot be estimated: it is left out, with
// a warning saying which share of the population that is (the estimate is
// then low); a cluster of one example has no scatter and needs none.
func (g *GC) Score(f *FixedPartition) (*Partition, []string, error) {
	n := g.N()
	assign := make([]int, n)
	all := make([]int, n)
	for i, id := range g.ids {
		c, ok := f.Of[id]
		if !ok {
			return nil, nil, fmt.Errorf("gradient clustering: example %d is not in the partition's population (%d examples)", id, f.N)
		}
		assign[i], all[i] = c, i
	}
	ss, sizes := g.clusterScatter(all, assign, f.K)
	p := &Partition{K: f.K, N: f.N}
	if n == f.N {
		for c, v := range ss {
			p.VarB += float64(sizes[c]) * v
		}
		p.VarB /= float64(n) * float64(n)
		p.Assign, p.Sizes = assign, sizes
		return p, nil, nil
	}
	p.HeldOut = true
	p.strata = &strataScore{rows: all, assign: assign, coef: make([]float64, f.K)}
	var missed, strata int
	for c, nk := range f.Sizes {
		if nk < 2 {
			continue // empty, or one example: no scatter to estimate
		}
		if sizes[c] < 2 {
			missed += nk
			strata++
			continue
		}
		w := float64(nk) / float64(f.N)
		coef := w * w * float64(nk-1) / float64(nk) / float64(sizes[c]-1)
		p.strata.coef[c] = coef
		p.VarB += coef * ss[c]
	}
	var warnings []string
	if strata > 0 {
		warnings = append(warnings, fmt.Sprintf("%d of the partition's clusters (%.1f%% of the population) have fewer than 2 examples in this sample and "+MissedClusters+", which is therefore low; take samples with at least 2 examples per cluster, or score the partition on full snapshots",
			strata, 100*float64(missed)/float64(f.N)))
	}
	return p, warnings, nil
}

// sumNormSq returns |Σ_{i∈rows} g_i|² exactly from the layers' blocks,
// each factored layer by the cheaper of AᵀΔ and the Gram form.
func sumNormSq(layers []Layer, rows []int) float64 {
	total := 0.0
	for _, l := range layers {
		b := l.Block
		if b.Kind == codec.Dense {
			s := make([]float64, b.Dim)
			for _, i := range rows {
				for j, v := range b.Rows[i*b.Dim : (i+1)*b.Dim] {
					s[j] += float64(v)
				}
			}
			total += sumSquares(s)
			continue
		}
		m := len(rows) * b.T
		a, d := factorRows(b, rows)
		if m*(b.In+b.Out)/2 < b.In*b.Out {
			// Σ_rs (a_r·a_s)(d_r·d_s) over all position rows.
			ka, kd := make([]float64, m*m), make([]float64, m*m)
			blas64.Gemm(blas.NoTrans, blas.Trans, 1, general(m, b.In, a), general(m, b.In, a), 0, general(m, m, ka))
			blas64.Gemm(blas.NoTrans, blas.Trans, 1, general(m, b.Out, d), general(m, b.Out, d), 0, general(m, m, kd))
			for j, v := range ka {
				total += v * kd[j]
			}
			continue
		}
		total += sumSquares(atb(a, d, m, b.In, b.Out))
	}
	return total
}

// NVar returns the normalized variance of the GC estimator with batch size
// B, per coordinate: (1/D) Σ_j V_j / (μ_j² + V_j), V_j the coordinate's
// share of the partition's variance (scored like VarB: in-sample, held
// out, or a fixed partition's stratified estimate) and μ_j the mean over all N examples (m, the same
// snapshot's moments with the summed gradient).
func (g *GC) NVar(p *Partition, m *Moments, b float64) (float64, error) {
	if m.NonFinite {
		return nan(), nil
	}
	if m.N != g.N() || m.Sum == nil {
		return nan(), fmt.Errorf("gc_nvar: moments of %d examples (summed gradient kept: %v), clustering of %d", m.N, m.Sum != nil, g.N())
	}
	per := b / float64(p.K)
	vb := make([]float64, m.D)
	addScaled := func(rows, assign []int, coef []float64, scale float64) {
		off := 0
		for _, l := range g.layers {
			v := coordScatter(l.Block, rows, assign, p.K, coef)
			for j, x := range v {
				vb[off+j] += max(x, 0) * scale
			}
			off += len(v)
		}
	}
	switch {
	case p.strata != nil:
		addScaled(p.strata.rows, p.strata.assign, p.strata.coef, 1)
	case p.HeldOut:
		for _, f := range p.folds {
			n := float64(len(f.rows))
			addScaled(f.rows, f.assign, nil, 1/(n*(n-1))/2)
		}
	default:
		all := make([]int, g.N())
		for i := range all {
			all[i] = i
		}
		n := float64(g.N())
		addScaled(all, p.Assign, nil, 1/(n*n))
	}
	n := float64(m.N)
	sum := 0.0
	for j, x := range vb {
		vj := x / per
		mu := m.Sum[j] / n
		if den := mu*mu + vj; den > 0 {
			sum += vj / den
		}
	}
	return sum / float64(m.D), nil
}

// coordScatter returns Σ_k c_k Σ_{i∈C_k} (g_ij − m_kj)² for each
// coordinate of one layer, over the examples rows with clusters assign:
// Σ_i c_{k(i)} g_ij² − Σ_k (c_k/n_k) (Σ_{i∈C_k} g_ij)². The coefficients
// c_k are coef, or the cluster sizes n_k when coef is nil.
func coordScatter(b *codec.Block, rows, assign []int, k int, coef []float64) []float64 {
	p := b.Params()
	out := make([]float64, p)
	count := make([]float64, k)
	for _, c := range assign {
		count[c]++
	}
	size, sub := count, make([]float64, k)
	if coef != nil {
		size = coef
	}
	for c := range sub {
		if count[c] > 0 {
			sub[c] = size[c] / count[c]
		}
	}
	// Rows sorted by cluster, so that each cluster is a range.
	order := make([]int, len(rows))
	for r := range order {
		order[r] = r
	}
	sort.SliceStable(order, func(x, y int) bool { return assign[order[x]] < assign[order[y]] })
	n := len(rows)
	if b.Kind == codec.Factored && b.T == 1 {
		a := make([]float64, n*b.In)
		d := make([]float64, n*b.Out)
		for s, r := range order {
			i := rows[r]
			for x, v := range b.A[i*b.In : (i+1)*b.In] {
				a[s*b.In+x] = float64(v)
			}
			for y, v := range b.Delta[i*b.Out : (i+1)*b.Out] {
				d[s*b.Out+y] = float64(v)
			}
		}
		// Σ_i n_{k(i)} g_ij² = (A∘A)ᵀ diag(w) (Δ∘Δ).
		a2, d2 := squares(a), squares(d)
		for s, r := range order {
			w := size[assign[r]]
			for y := range b.Out {
				d2[s*b.Out+y] *= w
			}
		}
		if n > 0 {
			blas64.Gemm(blas.Trans, blas.NoTrans, 1, general(n, b.In, a2), general(n, b.Out, d2), 0, general(b.In, b.Out, out))
		}
		sk := make([]float64, p)
		for s0 := 0; s0 < n; {
			s1 := s0
			for s1 < n && assign[order[s1]] == assign[order[s0]] {
				s1++
			}
			m, e := s1-s0, sub[assign[order[s0]]]
			if e != 0 {
				blas64.Gemm(blas.Trans, blas.NoTrans, 1, general(m, b.In, a[s0*b.In:s1*b.In]), general(m, b.Out, d[s0*b.Out:s1*b.Out]), 0, general(b.In, b.Out, sk))
				for j, v := range sk {
					out[j] -= e * v * v
				}
			}
			s0 = s1
		}
		return out
	}
	g := make([]float64, p)
	sk := make([]float64, p)
	for s, r := range order {
		materialize(b, rows[r], g)
		w := size[assign[r]]
		for j, v := range g {
			out[j] += w * v * v
			sk[j] += v
		}
		if s == n-1 || assign[order[s+1]] != assign[r] {
			e := sub[assign[r]]
			for j, v := range sk {
				out[j] -= e * v * v
			}
			clear(sk)
		}
	}
	return out
}

// Curve is the GC distortion against the number of clusters, with D0, the
// one-cluster distortion: GC beats SG-B below D0/K and SG-2B below
// D0/(2K).
type Curve struct {
	K          []int
	Distortion []float64
	D0         float64
	// HeldOut says the distortions are held-out estimates (a sample).
	HeldOut bool
}

// Curve clusters with K = 1, 2, 4, ... up to kmax (and kmax itself),
// in-sample or held out, sharing the Gram matrix or sketch.
func (g *GC) Curve(kmax int, heldOut bool) (*Curve, error) {
	c := &Curve{HeldOut: heldOut}
	for k := 1; ; k *= 2 {
		k = min(k, kmax)
		var p *Partition
		var err error
		if heldOut {
			p, err = g.HeldOut(k)
		} else {
			p, err = g.InSample(k)
		}
		if err != nil {
			return nil, err
		}
		c.K = append(c.K, k)
		c.Distortion = append(c.Distortion, p.Distortion())
		if k == 1 {
			c.D0 = p.Distortion()
		}
		if k == kmax {
			return c, nil
		}
	}
}

// factorRows returns a factored block's input and output-gradient factors
// of the examples rows (all their positions, in order) as float64 rows.
func factorRows(b *codec.Block, rows []int) (a, d []float64) {
	m := len(rows) * b.T
	a = make([]float64, 0, m*b.In)
	d = make([]float64, 0, m*b.Out)
	for _, i := range rows {
		for _, v := range b.A[i*b.T*b.In : (i+1)*b.T*b.In] {
			a = append(a, float64(v))
		}
		for _, v := range b.Delta[i*b.T*b.Out : (i+1)*b.T*b.Out] {
			d = append(d, float64(v))
		}
	}
	return a, d
}

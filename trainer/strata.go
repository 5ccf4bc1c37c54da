package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/ingest"
)

// Stratified sample snapshots (Config.SnapshotStrata = K): at each full
// snapshot whose step is a multiple of SnapshotStrataEvery (T), the
// trainer fits K clusters by SnapshotStrataMethod on exactly what the
// store will hold (the blocks through the codec and back), with the
// query's defaults (seed 1, the auto path, the default memory budget), so
// that it is the partition gc_variance(K, B, method, T) refits there.
// Every later sample snapshot, up to the next such full snapshot, is drawn
// stratified by it: min(2, N_k) examples of each cluster k, the rest of
// the SnapshotExamples in proportion to the clusters' remaining sizes
// (largest remainders), each cluster's share drawn uniformly without
// replacement. Samples record each example's stratum, its stratum's size
// N_k and its inclusion probability n_k/N_k. Before the first full
// snapshot (none in gvdb train, which takes one at step 0) samples are
// uniform.

// strataPlan is the partition samples are drawn by: each cluster's
// members (dataset indices, ascending) and its share of a sample.
type strataPlan struct {
	members [][]int
	alloc   []int
}

// fitStrata fits cfg's stratifying partition on the full snapshot s of
// a net with the given layer schema.
func fitStrata(cfg *Config, s *ingest.Snapshot, schema []db.Layer) (*strataPlan, error) {
	method, err := stats.ParseMethod(cfg.SnapshotStrataMethod)
	if err != nil {
		return nil, err
	}
	enc := codec.Float32
	if cfg.Encoding != "" {
		if enc, err = codec.ParseEncoding(cfg.Encoding); err != nil {
			return nil, err
		}
	}
	weight := map[string]bool{}
	for _, l := range schema {
		weight[l.Name] = l.Kind == db.DenseWeight || l.Kind == db.ConvWeight
	}
	layers := make([]stats.Layer, len(s.Blocks))
	for i, nb := range s.Blocks {
		// What a query decodes: lossy encodings round, and the
		// partition must be the one a query fits on the stored blocks.
		data, err := codec.Encode(nb.Block, enc)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", nb.Layer, err)
		}
		b, err := codec.Decode(data)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", nb.Layer, err)
		}
		layers[i] = stats.Layer{Name: nb.Layer, Block: b, Weight: weight[nb.Layer]}
	}
	g, err := stats.NewGC(layers, stats.GCOptions{Seed: 1})
	if err != nil {
		return nil, err
	}
	p, err := g.Fit(cfg.SnapshotStrata, method, false)
	if err != nil {
		return nil, err
	}
	f, err := g.Fixed(p)
	if err != nil {
		return nil, err
	}
	return newStrataPlan(f, cfg.SnapshotExamples)
}

// newStrataPlan groups f's population by cluster and allocates a sample
// of n examples over the clusters.
func newStrataPlan(f *stats.FixedPartition, n int) (*strataPlan, error) {
	p := &strataPlan{members: make([][]int, f.K)}
	for id, c := range f.Of {
		p.members[c] = append(p.members[c], int(id))
	}
	sizes := make([]int, f.K)
	for c, ms := range p.members {
		sort.Ints(ms)
		sizes[c] = len(ms)
	}
	var err error
	p.alloc, err = allocate(sizes, n)
	return p, err
}

// allocate shares a sample of n examples over strata of the given sizes:
// min(2, N_k) from each, the rest in proportion to what each has left,
// N_k − min(2, N_k), by largest remainders (ties to the lower stratum).
func allocate(sizes []int, n int) ([]int, error) {
	alloc := make([]int, len(sizes))
	left, room := n, 0
	for c, nk := range sizes {
		alloc[c] = min(2, nk)
		left -= alloc[c]
		room += nk - alloc[c]
	}
	if left < 0 {
		return nil, fmt.Errorf("a sample of %d examples cannot hold 2 examples of each of %d clusters", n, len(sizes))
	}
	if left > room {
		return nil, fmt.Errorf("a sample of %d examples is larger than the %d clustered examples", n, n-left+room)
	}
	if left == 0 {
		return alloc, nil
	}
	type rem struct {
		c    int
		frac float64
	}
	var rems []rem
	given := 0
	for c, nk := range sizes {
		q := float64(left) * float64(nk-alloc[c]) / float64(room)
		whole := int(math.Floor(q))
		alloc[c] += whole
		given += whole
		rems = append(rems, rem{c, q - float64(whole)})
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].frac > rems[b].frac })
	for i := 0; given < left; i++ {
		alloc[rems[i].c]++
		given++
	}
	return alloc, nil
}

// draw draws a stratified sample: its dataset indices, and the attribute
// columns that record its design (stratum, stratum_size, inclusion).
func (p *strataPlan) draw(rng *rand.Rand) ([]int, []codec.Column) {
	var ids []int
	var stratum, size []int64
	var incl []float64
	for c, ms := range p.members {
		n := p.alloc[c]
		if n == 0 {
			continue
		}
		pick := append([]int(nil), ms...)
		for i := range n {
			j := i + rng.IntN(len(pick)-i)
			pick[i], pick[j] = pick[j], pick[i]
		}
		ids = append(ids, pick[:n]...)
		for range n {
			stratum = append(stratum, int64(c))
			size = append(size, int64(len(ms)))
			incl = append(incl, float64(n)/float64(len(ms)))
		}
	}
	return ids, []codec.Column{
		{Name: stats.StratumAttr, Type: codec.Int, Ints: stratum},
		{Name: stats.StratumSizeAttr, Type: codec.Int, Ints: size},
		{Name: stats.InclusionAttr, Type: codec.Float, Floats: incl},
	}
}

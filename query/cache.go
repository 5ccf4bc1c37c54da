package query

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"gvdb/db"
	"gvdb/db/stats"
)

// GCCache shares Gradient Clustering work between the queries of one
// program (a report, the demo): the partitions fitted on a snapshot's
// scope (in-sample or held out, by method and K), the partitions fitted
// at full snapshots for refit_every and their scores on other snapshots,
// and the prepared clusterings themselves (stats.GC: the Gram matrix or
// the sketch, with the blocks they were built from), so that the next
// query on the same snapshot neither rebuilds the Gram matrix nor refits.
//
// Every entry is keyed by all that determines it: the store, the run (its
// name, ID and creation time), the step, the layers in scope, the
// examples (a digest of their ids: a WHERE or GROUP BY on example
// attributes selects others), the held-out split keys, K, the method, and
// the clustering options (seed, rounds, path, sketch dimension, memory
// budget: what picks the path). Answers are therefore the same, bit for
// bit, with and without a cache (TestGCCacheIdentical). Snapshots are
// immutable once written, and a run replaced under the same name has
// another ID and creation time; a cache must still not outlive a store
// that is rewritten in place (gvdb recover), so give one to a program's
// own queries, not to a long-lived server.
//
// The prepared clusterings on the Gram path are large (8·N² bytes) and
// slow to build (as long as several fits on them): they are kept under a
// byte budget, the least recently used dropped first. Those on the sketch
// path are rebuilt when needed again (in a fraction of their fits' time),
// so they do not hold their blocks in memory between queries. Partitions
// (a few bytes per example) are kept under a budget of their own. A
// clustering in use by a query is shared, never dropped. Safe for
// concurrent use.
type GCCache struct {
	gcBudget, partBudget int64

	mu         sync.Mutex
	entries    map[string]*cacheEntry
	gcs, parts list.List // kept entries, most recently used at the front
	gcUsed     int64
	partUsed   int64
	stats      CacheStats
}

// CacheStats count a GCCache's work.
type CacheStats struct {
	// Partitions hits and misses: fitted partitions, refit partitions and
	// their scores found in the cache or computed.
	PartitionHits, PartitionMisses int64
	// GCHits and GCBuilds: prepared clusterings found or built (a Gram
	// matrix or a sketch each); GCEvicted: dropped under the budget.
	GCHits, GCBuilds, GCEvicted int64
	// GCBytes and PartitionBytes are what the cache holds now.
	GCBytes, PartitionBytes int64
}

// NewGCCache returns a cache that keeps prepared clusterings up to budget
// bytes (0: an eighth of the default memory budget, stats.MemoryBudget,
// which the Go heap's growth may double in resident memory; negative:
// none between queries) and partitions up to an eighth of that (at least
// 64 MiB).
func NewGCCache(budget int64) *GCCache {
	if budget == 0 {
		budget = stats.MemoryBudget(0) / 8
	}
	return &GCCache{gcBudget: budget, partBudget: max(budget/8, 64<<20), entries: map[string]*cacheEntry{}}
}

// queryCache is one evaluation's own cache when Options.Cache is nil: its
// partitions last as long as the query, and a clustering as long as a
// snapshot uses it.
func queryCache() *GCCache {
	return &GCCache{gcBudget: -1, partBudget: 1 << 62, entries: map[string]*cacheEntry{}}
}

// Stats returns the cache's counts.
func (c *GCCache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.GCBytes, s.PartitionBytes = c.gcUsed, c.partUsed
	return s
}

// cacheEntry is one computed value (or one being computed: ready is open).
type cacheEntry struct {
	key   string
	ready chan struct{}
	val   any
	err   error
	bytes int64
	gc    bool
	refs  int           // clusterings: the users holding it
	elem  *list.Element // in gcs or parts once kept; nil otherwise
}

// gcObj is a prepared clustering; mu serializes the calls that fit on it
// (stats.GC memoizes its partitions in a map of its own). keep says it is
// worth keeping once released: a Gram matrix, which takes as long to build
// as several fits on it; a sketch is rebuilt in a fraction of that (linear
// in N) and is not kept.
type gcObj struct {
	mu   sync.Mutex
	g    *stats.GC
	desc string
	keep bool
}

// fitted is a partition and the path it was searched on.
type fitted struct {
	p    *stats.Partition
	desc string
}

// scored is a fixed partition's score on a snapshot.
type scored struct {
	p        *stats.Partition
	warnings []string
}

// do returns the value under key, computing it once (other callers wait)
// with f, which also returns its size in bytes. Errors are not kept.
func (c *GCCache) do(key string, f func() (any, int64, error)) (any, error) {
	c.mu.Lock()
	if e := c.entries[key]; e != nil {
		c.stats.PartitionHits++
		if e.elem != nil {
			c.parts.MoveToFront(e.elem)
		}
		c.mu.Unlock()
		<-e.ready
		return e.val, e.err
	}
	e := &cacheEntry{key: key, ready: make(chan struct{})}
	c.entries[key] = e
	c.stats.PartitionMisses++
	c.mu.Unlock()
	val, size, err := f()
	c.mu.Lock()
	e.val, e.err, e.bytes = val, err, size
	if err != nil {
		delete(c.entries, key)
	} else {
		e.elem = c.parts.PushFront(e)
		c.partUsed += size
		for c.partUsed > c.partBudget && c.parts.Len() > 1 {
			c.drop(c.parts.Back().Value.(*cacheEntry))
		}
	}
	c.mu.Unlock()
	close(e.ready)
	return val, err
}

// acquireGC returns the prepared clustering under key, building it with
// build if the cache has none; the caller must release it. peek only
// looks: it returns nil rather than build.
func (c *GCCache) acquireGC(key string, build func() (*gcObj, int64, error), peek bool) (*gcObj, *cacheEntry, error) {
	c.mu.Lock()
	if e := c.entries[key]; e != nil {
		e.refs++
		c.stats.GCHits++
		if e.elem != nil {
			c.gcs.MoveToFront(e.elem)
		}
		c.mu.Unlock()
		<-e.ready
		if e.err != nil {
			c.release(e)
			return nil, nil, e.err
		}
		return e.val.(*gcObj), e, nil
	}
	if peek {
		c.mu.Unlock()
		return nil, nil, nil
	}
	e := &cacheEntry{key: key, ready: make(chan struct{}), gc: true, refs: 1}
	c.entries[key] = e
	c.stats.GCBuilds++
	c.mu.Unlock()
	obj, size, err := build()
	c.mu.Lock()
	e.val, e.err, e.bytes = obj, err, size
	switch {
	case err != nil:
		delete(c.entries, key)
	case obj.keep && size <= c.gcBudget:
		e.elem = c.gcs.PushFront(e)
		c.gcUsed += size
		c.evictGCs()
	}
	// Otherwise it stays only while it is held.
	c.mu.Unlock()
	close(e.ready)
	if err != nil {
		c.release(e)
		return nil, nil, err
	}
	return obj, e, nil
}

// release ends a use of a clustering: over the budget, the least recently
// used clusterings no one holds are dropped.
func (c *GCCache) release(e *cacheEntry) {
	if e == nil {
		return
	}
	c.mu.Lock()
	e.refs--
	if e.refs <= 0 && e.elem == nil && c.entries[e.key] == e {
		delete(c.entries, e.key)
		c.stats.GCEvicted++
	}
	c.evictGCs()
	c.mu.Unlock()
}

// evictGCs drops unused clusterings, least recently used first, until
// the rest fit the budget. c.mu is held.
func (c *GCCache) evictGCs() {
	for el := c.gcs.Back(); el != nil && c.gcUsed > c.gcBudget; {
		e := el.Value.(*cacheEntry)
		el = el.Prev()
		if e.refs <= 0 {
			c.drop(e)
			c.stats.GCEvicted++
		}
	}
}

// drop removes a kept entry. c.mu is held.
func (c *GCCache) drop(e *cacheEntry) {
	if e.gc {
		c.gcs.Remove(e.elem)
		c.gcUsed -= e.bytes
	} else {
		c.parts.Remove(e.elem)
		c.partUsed -= e.bytes
	}
	e.elem = nil
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
	}
}

// gcScope is one snapshot scope's Gradient Clustering through a cache:
// the examples of some layers at one step of a run. It holds the
// prepared clustering it acquired until release.
type gcScope struct {
	c      *GCCache
	base   string // the scope: store, run, step, layers, examples, options
	split  string // the held-out split keys' digest ("" for none)
	layers []stats.Layer
	opts   stats.GCOptions
	obj    *gcObj
	entry  *cacheEntry
	light  *stats.GC
	used   func(desc string) // told the path of every partition used
}

// newGCScope describes the scope of layers (decoded blocks of run r's
// snapshot at step; a subset of its examples when a query selects some)
// for clustering with opts.
func newGCScope(c *GCCache, d *db.DB, r *db.Run, step int64, layers []stats.Layer, opts stats.GCOptions) *gcScope {
	var names []string
	for _, l := range layers {
		w := ""
		if l.Weight {
			w = "*"
		}
		names = append(names, l.Name+w)
	}
	var ids []uint64
	if len(layers) > 0 {
		ids = layers[0].Block.IDs
	}
	o := opts
	base := fmt.Sprintf("%s\x00%s\x00%d\x00%d\x00%d\x00%s\x00%d/%d/%d/%d/%d/%d/%t/%d\x00%s", d.Dir(), r.Name, r.ID, r.Created.UnixNano(), step,
		strings.Join(names, ","), o.Seed, o.Rounds, o.Path, o.SketchDim, stats.MemoryBudget(o.MemoryBudget), o.MinSize, o.NoMoves, o.GramMaxN, digest(ids))
	s := &gcScope{c: c, base: base, layers: layers, opts: opts}
	if opts.SplitKeys != nil {
		s.split = digest(opts.SplitKeys)
	}
	return s
}

// digest names a list of example ids or keys.
func digest(xs []uint64) string {
	h := sha256.New()
	var b [8]byte
	for _, x := range xs {
		binary.LittleEndian.PutUint64(b[:], x)
		h.Write(b[:])
	}
	return fmt.Sprintf("%d:%s", len(xs), hex.EncodeToString(h.Sum(nil)[:16]))
}

// ids are the scope's examples' dataset ids.
func (s *gcScope) ids() []uint64 {
	if len(s.layers) == 0 {
		return nil
	}
	return s.layers[0].Block.IDs
}

// gc returns the scope's prepared clustering, from the cache or built.
func (s *gcScope) gc() (*gcObj, error) {
	if s.obj != nil {
		return s.obj, nil
	}
	obj, e, err := s.c.acquireGC("gc\x00"+s.base+"\x00"+s.split, func() (*gcObj, int64, error) {
		g, err := stats.NewGC(s.layers, s.opts)
		if err != nil {
			return nil, 0, err
		}
		return &gcObj{g: g, desc: g.Describe(), keep: g.Path() == stats.PathGram}, gcBytes(g, s.layers, s.opts.SketchDim), nil
	}, false)
	if err != nil {
		return nil, err
	}
	s.obj, s.entry = obj, e
	return obj, nil
}

// release gives the scope's prepared clustering back to the cache.
func (s *gcScope) release() {
	s.c.release(s.entry)
	s.obj, s.entry = nil, nil
}

// fit returns the scope's k-partition fitted by method, in-sample or held
// out (stats.GC.Fit).
func (s *gcScope) fit(k int, method stats.Method, heldOut bool) (*stats.Partition, error) {
	key := fmt.Sprintf("fit\x00%s\x00%d\x00%d\x00%t", s.base, k, method, heldOut)
	if heldOut {
		key += "\x00" + s.split // in-sample fits do not depend on the split
	}
	v, err := s.c.do(key, func() (any, int64, error) {
		obj, err := s.gc()
		if err != nil {
			return nil, 0, err
		}
		obj.mu.Lock()
		p, err := obj.g.Fit(k, method, heldOut)
		obj.mu.Unlock()
		if err != nil {
			return nil, 0, err
		}
		return &fitted{p: p, desc: obj.desc}, partitionBytes(p), nil
	})
	if err != nil {
		return nil, err
	}
	f := v.(*fitted)
	if s.used != nil {
		s.used(f.desc)
	}
	return f.p, nil
}

// score returns the fixed partition f (named fkey) scored on the scope
// (stats.GC.Score), with its warnings.
func (s *gcScope) score(fkey string, f *stats.FixedPartition) (*stats.Partition, []string, error) {
	v, err := s.c.do("score\x00"+s.base+"\x00"+fkey, func() (any, int64, error) {
		obj, err := s.gc()
		if err != nil {
			return nil, 0, err
		}
		obj.mu.Lock()
		p, warnings, err := obj.g.Score(f)
		obj.mu.Unlock()
		if err != nil {
			return nil, 0, err
		}
		return &scored{p: p, warnings: warnings}, partitionBytes(p), nil
	})
	if err != nil {
		return nil, nil, err
	}
	sc := v.(*scored)
	return sc.p, sc.warnings, nil
}

// nvar returns GC's normalized variance for partition p of the scope
// (stats.GC.NVar), which reads the layers' blocks only: on the scope's
// clustering when one is at hand, else on a clustering prepared on a
// one-dimensional sketch (cheap; its own search is never used).
func (s *gcScope) nvar(p *stats.Partition, m *stats.Moments, b float64) (float64, error) {
	g := s.light
	if s.obj == nil && g == nil {
		obj, e, err := s.c.acquireGC("gc\x00"+s.base+"\x00"+s.split, nil, true)
		if err != nil {
			return 0, err
		}
		if obj != nil {
			s.obj, s.entry = obj, e
		}
	}
	if s.obj != nil {
		s.obj.mu.Lock()
		defer s.obj.mu.Unlock()
		return s.obj.g.NVar(p, m, b)
	}
	if g == nil {
		o := s.opts
		o.Path, o.SketchDim = stats.PathSketch, 1
		var err error
		if g, err = stats.NewGC(s.layers, o); err != nil {
			obj, err := s.gc()
			if err != nil {
				return 0, err
			}
			obj.mu.Lock()
			defer obj.mu.Unlock()
			return obj.g.NVar(p, m, b)
		}
		s.light = g
	}
	return g.NVar(p, m, b)
}

// curve clusters the scope with K = 1, 2, 4, ... up to kmax (and kmax
// itself), in-sample or held out: stats.GC.Curve, one partition at a time
// through the cache.
func (s *gcScope) curve(kmax int, heldOut bool) (*stats.Curve, string, error) {
	c := &stats.Curve{HeldOut: heldOut}
	var desc string
	used := s.used
	s.used = func(d string) { desc = d }
	defer func() { s.used = used }()
	for k := 1; ; k *= 2 {
		k = min(k, kmax)
		p, err := s.fit(k, stats.MethodExact, heldOut)
		if err != nil {
			return nil, "", err
		}
		c.K = append(c.K, k)
		c.Distortion = append(c.Distortion, p.Distortion())
		if k == 1 {
			c.D0 = p.Distortion()
		}
		if k == kmax {
			return c, desc, nil
		}
	}
}

// gcBytes estimates the memory a prepared clustering holds: its Gram
// matrix or sketch, the examples' norms and the blocks.
func gcBytes(g *stats.GC, layers []stats.Layer, sketchDim int) int64 {
	n := int64(g.N())
	size := 16 * n
	if g.Path() == stats.PathGram {
		size += 8 * n * n
	} else {
		if sketchDim <= 0 {
			sketchDim = stats.DefaultSketchDim
		}
		dim := 0
		for _, l := range layers {
			dim += min(l.Block.Params(), sketchDim)
		}
		size += 4 * n * int64(dim)
	}
	for _, l := range layers {
		size += 4*int64(l.Block.StoredValues()) + 8*int64(l.Block.N())
	}
	return size
}

// partitionBytes estimates the memory a partition holds.
func partitionBytes(p *stats.Partition) int64 {
	return 256 + 24*int64(p.N) + 8*int64(p.K)
}

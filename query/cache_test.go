package query

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"gvdb/db"
	"gvdb/db/stats"
	"gvdb/db/synth"
	"gvdb/ingest"
	"gvdb/query/parser"
)

// cacheStore builds run "c", an MLP 6-5-3 (batch 8): full snapshots of
// the population (64 examples, ids 0 to 63) at steps 0, 200 and 400 and
// samples of 32 of them at 100 and 300, with testAttributes (so held-out
// halves keep copies with their source: split keys).
func cacheStore(t testing.TB) *db.DB {
	t.Helper()
	d, err := db.Open(t.TempDir(), db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	layers := synth.MLP(6, 5, 3)
	r := &db.Run{Name: "c", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Config: db.Config{Model: "mlp", Dataset: "synthetic", BatchSize: 8, LR: 0.1, Seed: 1, FullSnapshotEvery: 200}}
	r.Layers = synth.Schema(layers)
	if err := d.CreateRun(r); err != nil {
		t.Fatal(err)
	}
	w, err := ingest.NewWriter(d, "c", ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 7))
	for step := int64(0); step <= 400; step += 100 {
		s := &ingest.Snapshot{Step: step}
		n := 32
		if step%200 == 0 {
			n, s.Population = 64, db.Full
		}
		blocks := synth.Snapshot(rng, 64, layers)
		ids := make([]uint64, 64)
		for i := range ids {
			ids[i] = uint64(i)
		}
		if n < 64 {
			ids = synth.IDs(rng, n, 64)
		}
		for _, l := range layers {
			b := blocks[l.Name]
			b.IDs = ids
			if b.A != nil {
				b.A, b.Delta = b.A[:n*b.In], b.Delta[:n*b.Out]
			} else {
				b.Rows = b.Rows[:n*b.Dim]
			}
			s.Blocks = append(s.Blocks, ingest.NamedBlock{Layer: l.Name, Block: b})
		}
		s.Attributes = testAttributes(ids)
		if err := w.Write(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return d
}

// cacheQueries are Gradient Clustering queries of every kind: exact and
// paper, in-sample and held out, refitted, per layer, on examples
// selected by WHERE and GROUP BY, per-example clusters, and the sketch
// path.
var cacheQueries = []struct {
	q    string
	path stats.Path
}{
	{q: "SELECT gc_variance(4, 8), gc_nvar(4, 8), gc_distortion(4) FROM 'c'"},
	{q: "SELECT gc_variance(4, 8, 'paper'), gc_nvar(4, 8, 'paper'), gc_distortion(4, 'paper') FROM 'c'"},
	{q: "SELECT gc_variance(4, 8, 'exact', 200), gc_nvar(4, 8, 'exact', 200), gc_variance(4, 8, 'paper', 200), gc_nvar(4, 8, 'paper', 200), gc_distortion(4, 'paper', 200) FROM 'c'"},
	{q: "SELECT gc_variance(4, 8, 'paper', 400), gc_nvar(4, 8, 'paper', 400) FROM 'c' WHERE population = 'full'"},
	{q: "SELECT gc_variance_insample(4, 8), gc_nvar_insample(4, 8, 'paper') FROM 'c' GROUP BY label"},
	{q: "SELECT gc_variance(2, 8), gc_nvar(2, 8) FROM 'c' WHERE NOT corrupted"},
	{q: "SELECT gc_variance(4, 8), gc_nvar(4, 8) FROM 'c' GROUP BY layer"},
	{q: "SELECT cluster(4), cluster(2) FROM 'c' WHERE step = 200"},
	{q: "SELECT gc_variance(4, 8), gc_nvar(4, 8), gc_variance(4, 8, 'paper', 200) FROM 'c'", path: stats.PathSketch},
	{q: "SELECT gc_variance(4, 8), gc_variance(4, 8, 'exact', 200) FROM 'c'"},
}

// cacheAnswers evaluates cacheQueries (in the order given) and the
// distortion curves and cluster sizes of run "c" with the cache (nil:
// none), each rendered with its numbers' bits.
func cacheAnswers(t *testing.T, d *db.DB, cache *GCCache, order []int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, i := range order {
		cq := cacheQueries[i]
		st, err := parser.ParseStatement(cq.q)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Eval(context.Background(), d, st, Options{Cache: cache, GCPath: cq.path})
		if err != nil {
			t.Fatalf("%s: %v", cq.q, err)
		}
		var b strings.Builder
		fmt.Fprintln(&b, strings.Join(res.Warnings, "\n"), res.Columns, res.Stats.GC)
		for _, row := range res.Rows {
			for _, v := range row {
				if f, ok := v.(float64); ok {
					fmt.Fprintf(&b, "%x ", math.Float64bits(f))
				} else {
					fmt.Fprintf(&b, "%v ", v)
				}
			}
			b.WriteString("\n")
		}
		out[fmt.Sprintf("%d %s", cq.path, cq.q)] = b.String()
	}
	r, err := d.Run("c")
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []int64{100, 400} {
		c, err := DistortionCurve(d, r, step, nil, 16, Options{Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprint("curve ", step)] = fmt.Sprintf("%v %x %x %v %s", c.K, c.Distortion, math.Float64bits(c.D0), c.HeldOut, c.Path)
	}
	steps, sizes, err := ClusterSizes(d, r, 4, []string{"fc1.weight"}, Options{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	out["sizes"] = fmt.Sprint(steps, sizes)
	return out
}

// TestGCCacheIdentical evaluates Gradient Clustering queries of every
// kind without a cache, with a shared cache that keeps the Gram matrices,
// and with one that keeps partitions only (GC's normalized variance then
// reads the blocks through a one-dimensional sketch), in two orders: the
// answers, warnings and paths are the same bit for bit, and a shared
// cache answers a repeated query without building or fitting anything.
func TestGCCacheIdentical(t *testing.T) {
	d := cacheStore(t)
	forward := make([]int, len(cacheQueries))
	backward := make([]int, len(cacheQueries))
	for i := range forward {
		forward[i], backward[i] = i, len(cacheQueries)-1-i
	}
	want := cacheAnswers(t, d, nil, forward)
	for _, c := range []struct {
		name   string
		budget int64
	}{{"gram kept", 1 << 30}, {"partitions only", 1}} {
		for _, order := range [][]int{forward, backward} {
			cache := NewGCCache(c.budget)
			got := cacheAnswers(t, d, cache, order)
			for k, w := range want {
				if got[k] != w {
					t.Errorf("%s, order %v: %s differs from the answer without a cache:\n%s\nwant\n%s", c.name, order[:2], k, got[k], w)
				}
			}
			first := cache.Stats()
			if first.PartitionHits == 0 {
				t.Errorf("%s: no partition was shared between the queries: %+v", c.name, first)
			}
			got = cacheAnswers(t, d, cache, order)
			for k, w := range want {
				if got[k] != w {
					t.Errorf("%s, again: %s differs:\n%s\nwant\n%s", c.name, k, got[k], w)
				}
			}
			again := cache.Stats()
			if again.PartitionMisses != first.PartitionMisses || again.GCBuilds != first.GCBuilds {
				t.Errorf("%s: the same queries again fitted %d partitions and built %d clusterings (%+v, then %+v)",
					c.name, again.PartitionMisses-first.PartitionMisses, again.GCBuilds-first.GCBuilds, first, again)
			}
			if c.budget == 1 && (again.GCBytes != 0 || again.GCEvicted == 0) {
				t.Errorf("%s: keeps %d bytes of clusterings, evicted %d", c.name, again.GCBytes, again.GCEvicted)
			}
			if c.budget > 1 && again.GCHits == 0 {
				t.Errorf("%s: no clustering was shared: %+v", c.name, again)
			}
			t.Logf("%s: %+v", c.name, again)
		}
	}
}

// TestGCCacheConcurrent runs the queries on one cache from several
// goroutines at once (go test -race checks the locking): the answers are
// those without a cache.
func TestGCCacheConcurrent(t *testing.T) {
	d := cacheStore(t)
	order := make([]int, len(cacheQueries))
	for i := range order {
		order[i] = i
	}
	want := cacheAnswers(t, d, nil, order)
	cache := NewGCCache(1 << 30)
	var wg sync.WaitGroup
	got := make([]map[string]string, 4)
	for g := range got {
		wg.Go(func() {
			o := append([]int(nil), order...)
			rand.New(rand.NewPCG(uint64(g), 1)).Shuffle(len(o), func(i, j int) { o[i], o[j] = o[j], o[i] })
			got[g] = cacheAnswers(t, d, cache, o)
		})
	}
	wg.Wait()
	for g := range got {
		for k, w := range want {
			if got[g][k] != w {
				t.Errorf("goroutine %d: %s differs:\n%s\nwant\n%s", g, k, got[g][k], w)
			}
		}
	}
}

// TestGCCacheBudget keeps clusterings under the budget, least recently
// used dropped first, and never one a query still holds.
func TestGCCacheBudget(t *testing.T) {
	c := NewGCCache(100)
	build := func(size int64) func() (*gcObj, int64, error) {
		return func() (*gcObj, int64, error) { return &gcObj{keep: true}, size, nil }
	}
	_, a, _ := c.acquireGC("a", build(60), false)
	_, b, _ := c.acquireGC("b", build(60), false)
	if s := c.Stats(); s.GCBytes != 120 || s.GCEvicted != 0 {
		t.Fatalf("two held clusterings: %+v", s)
	}
	c.release(a)
	if s := c.Stats(); s.GCBytes != 60 || s.GCEvicted != 1 {
		t.Fatalf("a released over the budget: %+v", s)
	}
	c.release(b)
	if obj, e, _ := c.acquireGC("b", nil, true); obj == nil {
		t.Fatal("b was dropped within the budget")
	} else {
		c.release(e)
	}
	if obj, _, _ := c.acquireGC("a", nil, true); obj != nil {
		t.Fatal("a is still there")
	}
	_, big, _ := c.acquireGC("big", build(500), false)
	if obj, e, _ := c.acquireGC("big", nil, true); obj == nil {
		t.Fatal("a clustering in use is not shared")
	} else {
		c.release(e)
	}
	c.release(big)
	if obj, _, _ := c.acquireGC("big", nil, true); obj != nil {
		t.Fatal("a clustering over the whole budget is kept")
	}
	if s := c.Stats(); s.GCBytes != 60 || s.GCBuilds != 3 || s.GCEvicted != 2 {
		t.Fatalf("a clustering over the whole budget displaced others: %+v", s)
	}
}

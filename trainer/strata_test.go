package trainer

import (
	"context"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/ingest"
	"gvdb/query"
	"gvdb/query/parser"
)

func TestAllocate(t *testing.T) {
	sizes := []int{1, 2, 5, 100, 40}
	alloc, err := allocate(sizes, 30)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for c, n := range alloc {
		sum += n
		if n < min(2, sizes[c]) || n > sizes[c] {
			t.Errorf("stratum %d of %d gets %d", c, sizes[c], n)
		}
	}
	// 1 + 2 + 2 + 2 + 2 = 9 taken first; the other 21 in proportion to
	// 0, 0, 3, 98, 38 (of 139): 0.45, 14.8, 5.74 -> 0, 15, 6.
	if want := []int{1, 2, 2, 17, 8}; sum != 30 || !equalInts(alloc, want) {
		t.Errorf("allocation %v, want %v", alloc, want)
	}
	if _, err := allocate(sizes, 7); err == nil {
		t.Error("a sample smaller than 2 per stratum accepted")
	}
	if _, err := allocate(sizes, 149); err == nil {
		t.Error("a sample larger than the population accepted")
	}
	if alloc, err := allocate(sizes, 148); err != nil || !equalInts(alloc, sizes) {
		t.Errorf("the whole population: %v, %v", alloc, err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStrataErrors: the settings of --snapshot-strata are checked.
func TestStrataErrors(t *testing.T) {
	base := Config{Hidden: []int{4}, Train: fakeImages(64, 1), Config: db.Config{Model: "mlp", Steps: 10, BatchSize: 8, LR: 0.1, Seed: 1,
		SnapshotEvery: 5, SnapshotExamples: 16, FullSnapshotEvery: 5, SnapshotStrata: 4, SnapshotStrataMethod: "exact", SnapshotStrataEvery: 10}}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"too many clusters": {func(c *Config) { c.SnapshotStrata = 9 }, "2·9 = 18 is more than --snapshot-examples 16"},
		"no full snapshots": {func(c *Config) { c.FullSnapshotEvery = 0 }, "--full-snapshot-every"},
		"no samples":        {func(c *Config) { c.SnapshotEvery = 0 }, "--snapshot-every"},
		"off the grid":      {func(c *Config) { c.SnapshotStrataEvery = 7 }, "multiple of --full-snapshot-every 5"},
		"method":            {func(c *Config) { c.SnapshotStrataMethod = "kmeans" }, "'exact' or 'paper'"},
		"method alone":      {func(c *Config) { c.SnapshotStrata = 0 }, "need --snapshot-strata"},
	} {
		cfg := base
		c.mut(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// TestStratifiedSamples trains a small MNIST MLP with --snapshot-strata
// (K = 6 clusters refitted every 20 steps, full snapshots every 10) into a
// store and checks: every sample holds at least min(2, N_k) examples of
// each cluster and records its strata, their sizes and the inclusion
// probabilities; the query's refit estimate with the recorded (K,
// method, T) finds the partition the samples record and says nothing,
// another is warned about; and, on a known population (the full snapshot
// at step 10, scored with the partition fitted at step 0), the trainer's
// stratified draws make the refit estimate unbiased: over 300 draws its
// mean is within 2 standard errors of the exact value.
func TestStratifiedSamples(t *testing.T) {
	dir, err := MNISTDir()
	if err != nil {
		t.Fatal(err)
	}
	train, test, err := LoadMNIST(dir)
	if err != nil {
		t.Fatal(err)
	}
	const n, k, m = 600, 6, 48
	cfg := Config{Hidden: []int{16}, Train: train.Head(n), Test: test, EvalExamples: 100, Config: db.Config{Model: "mlp", Dataset: "mnist",
		Steps: 40, BatchSize: 32, LR: 0.1, Momentum: 0.5, Seed: 1, SnapshotEvery: 5, SnapshotExamples: m, FullSnapshotEvery: 10,
		SnapshotStrata: k, SnapshotStrataMethod: "exact", SnapshotStrataEvery: 20}}
	d, err := db.Open(t.TempDir(), db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	schema, _, err := cfg.Plan(0)
	if err != nil {
		t.Fatal(err)
	}
	run := &db.Run{Name: "s", Config: cfg.Config, Layers: schema}
	rec, err := ingest.Record(d, run, false, ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Train(context.Background(), cfg, rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Finish(db.StatusComplete, res.Steps); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	eval := func(q string) *query.Result {
		t.Helper()
		st, err := parser.ParseStatement(q)
		if err != nil {
			t.Fatal(err)
		}
		r, err := query.Eval(ctx, d, st, query.Options{})
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return r
	}

	// The samples' designs.
	rows := eval("SELECT stratum, stratum_size, inclusion FROM 's' WHERE population = 'sample'")
	type design struct {
		count, size map[int64]int64
		incl        map[int64]float64
		n           int
	}
	byStep := map[int64]*design{}
	for _, row := range rows.Rows {
		step, c, size, incl := row[0].(int64), int64(row[2].(float64)), int64(row[3].(float64)), row[4].(float64)
		s := byStep[step]
		if s == nil {
			s = &design{count: map[int64]int64{}, size: map[int64]int64{}, incl: map[int64]float64{}}
			byStep[step] = s
		}
		s.n++
		s.count[c]++
		if old, ok := s.size[c]; ok && (old != size || s.incl[c] != incl) {
			t.Fatalf("step %d: stratum %d recorded with sizes %d and %d", step, c, old, size)
		}
		s.size[c], s.incl[c] = size, incl
	}
	if len(byStep) != 4 {
		t.Fatalf("%d sample snapshots, want 4 (steps 5, 15, 25, 35)", len(byStep))
	}
	for step, s := range byStep {
		total := int64(0)
		for c, size := range s.size {
			total += size
			if s.count[c] < min(2, size) || math.Abs(s.incl[c]-float64(s.count[c])/float64(size)) > 1e-15 {
				t.Errorf("step %d: stratum %d of %d has %d sampled examples, inclusion %g", step, c, size, s.count[c], s.incl[c])
			}
		}
		if s.n != m || total != n || len(s.size) > k {
			t.Errorf("step %d: %d examples in %d strata covering %d of %d examples", step, s.n, len(s.size), total, n)
		}
	}

	// The query checks the design.
	strataWarnings := func(r *query.Result) []string {
		var out []string
		for _, w := range r.Warnings {
			if strings.Contains(w, "stratif") {
				out = append(out, w)
			}
		}
		return out
	}
	same := eval("SELECT gc_variance(6, 32, 'exact', 20), gc_nvar(6, 32, 'exact', 20) FROM 's'")
	if w := strataWarnings(same); len(w) > 0 {
		t.Errorf("the stratifying partition's estimate warns: %q", w)
	}
	for _, row := range same.Rows {
		if v, nv := row[1].(float64), row[2].(float64); !(v > 0) || !(nv > 0 && nv < 1) {
			t.Errorf("step %d: gc_variance %g, gc_nvar %g", row[0], v, nv)
		}
	}
	for _, q := range []string{
		"SELECT gc_variance(6, 32, 'exact', 10) FROM 's'",
		"SELECT gc_variance(6, 32, 'paper', 20) FROM 's'",
		"SELECT gc_variance(5, 32, 'exact', 20) FROM 's'",
		"SELECT variance FROM 's'",
	} {
		if w := strataWarnings(eval(q)); len(w) != 1 {
			t.Errorf("%s: warnings %q, want one about the strata", q, w)
		}
	}
	// The same (K, method, T) over another scope fits another partition.
	if w := strataWarnings(eval("SELECT gc_variance(6, 32, 'exact', 20) FROM 's' WHERE layer GLOB '*.weight'")); len(w) == 0 || !strings.Contains(w[0], "differs from the one the sample was stratified by") {
		t.Errorf("a partition over the weights only: warnings %q", w)
	}

	// Unbiased on a known population: the full snapshot at step 10, with
	// the partition fitted at step 0 (the one samples 5 and 15 used).
	layers := func(step int64) []stats.Layer {
		s, err := d.Snapshot(run, step, db.Select{})
		if err != nil {
			t.Fatal(err)
		}
		var out []stats.Layer
		for _, lb := range s.Blocks {
			b, err := codec.Decode(lb.Data)
			if err != nil {
				t.Fatal(err)
			}
			l, _ := run.Layer(lb.Layer)
			out = append(out, stats.Layer{Name: lb.Layer, Block: b, Weight: l.Kind == db.DenseWeight})
		}
		return out
	}
	g0, err := stats.NewGC(layers(0), stats.GCOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	p0, err := g0.Fit(k, stats.MethodExact, false)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := g0.Fixed(p0)
	if err != nil {
		t.Fatal(err)
	}
	pop := layers(10)
	g10, err := stats.NewGC(pop, stats.GCOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	exact, _, err := g10.Score(fixed)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := newStrataPlan(fixed, m)
	if err != nil {
		t.Fatal(err)
	}
	row := map[uint64]int{}
	for i, id := range g10.IDs() {
		row[id] = i
	}
	rng := rand.New(rand.NewPCG(11, 12))
	const draws = 300
	var sum, sumSq float64
	for range draws {
		ids, _ := plan.draw(rng)
		rs := make([]int, len(ids))
		for i, id := range ids {
			rs[i] = row[uint64(id)]
		}
		gs, err := stats.NewGC(stats.SubsetLayers(pop, rs), stats.GCOptions{Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		est, warnings, err := gs.Score(fixed)
		if err != nil || len(warnings) > 0 {
			t.Fatalf("stratified sample: %v %q", err, warnings)
		}
		sum += est.VarB
		sumSq += est.VarB * est.VarB
	}
	mean := sum / draws
	se := math.Sqrt((sumSq/draws - mean*mean) / (draws - 1))
	t.Logf("partition of step 0 at step 10: exact %.6g, stratified estimates %.6g ± %.2g (SE), allocation %v", exact.VarB, mean, se, plan.alloc)
	if math.Abs(mean-exact.VarB) > 2*se {
		t.Errorf("stratified estimates average %g, %.1f SE from the exact %g", mean, math.Abs(mean-exact.VarB)/se, exact.VarB)
	}
}

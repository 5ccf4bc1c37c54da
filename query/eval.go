package query

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alecthomas/participle/v2/lexer"
	"github.com/dustin/go-humanize"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/query/outfile"
	"gvdb/query/parser"
)

// EvalStats measure an evaluation.
type EvalStats struct {
	Snapshots int
	BytesRead int64
	Read      time.Duration // reading from the store (the scan, and the workers reading rollups: summed)
	Decode    time.Duration // decoding blocks (wall time, decoded in parallel)
	Compute   time.Duration // statistics
	// GC names the Gradient Clustering paths taken (gram or sketch, with
	// N and memory).
	GC []string
	// FromRollups counts the snapshots answered from rollups, without
	// reading blocks.
	FromRollups int
	// PeakHeap is the most heap in use above what was in use before the
	// evaluation (with Options.MeasureMemory; sampled every 2 ms).
	PeakHeap int64
}

// Options tune evaluation.
type Options struct {
	// GCSeed seeds Gradient Clustering (default 1).
	GCSeed uint64
	// GCRounds is the number of GC rounds (default 10).
	GCRounds int
	// GCPath picks where Gradient Clustering searches (default
	// stats.PathAuto: the Gram matrix for small N, else the sketch).
	GCPath stats.Path
	// SketchDim is the sketch dimension per layer (default 256).
	SketchDim int
	// MemoryBudget bounds the memory of large computations (default
	// stats.DefaultMemoryBudget, half the machine's memory).
	MemoryBudget int64
	// Workers bounds the snapshots processed at once (default GOMAXPROCS).
	Workers int
	// MeasureMemory samples the heap while evaluating: EvalStats.PeakHeap.
	MeasureMemory bool
	// NoRollups computes every statistic from the blocks, ignoring
	// rollups (to compare the two paths).
	NoRollups bool
	// NoFileWrites refuses PLOT statements (the only ones that write a
	// file), for programs that run queries from elsewhere. Without it, a
	// PLOT's file must lie beneath the working directory, reached without
	// symbolic links (outfile.Beneath).
	NoFileWrites bool
	// Progress, if set, is told after each snapshot how many of the
	// query's snapshots are done.
	Progress func(done, total int)
	// Cache, if set, shares Gradient Clustering work (fitted partitions,
	// Gram matrices) with the other queries given the same cache; the
	// answers are the same without it.
	Cache *GCCache
}

// Eval evaluates one statement against a store.
func Eval(ctx context.Context, d *db.DB, st parser.Statement, opts Options) (*Result, error) {
	if opts.MeasureMemory {
		stop := sampleHeap()
		res, err := eval(ctx, d, st, opts)
		if peak := stop(); res != nil {
			res.Stats.PeakHeap = peak
		}
		return res, err
	}
	return eval(ctx, d, st, opts)
}

// sampleHeap samples the heap in use every 2 ms until the returned
// function is called; that returns the peak above the first sample.
func sampleHeap() func() int64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() int64 { metrics.Read(sample); return int64(sample[0].Value.Uint64()) }
	base := read()
	var peak atomic.Int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if v := read() - base; v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		<-stopped
		return peak.Load()
	}
}

func eval(ctx context.Context, d *db.DB, st parser.Statement, opts Options) (*Result, error) {
	switch s := st.(type) {
	case *parser.Show:
		return evalShow(d, s)
	case *parser.Select:
		return evalSelect(ctx, d, s, opts)
	case *parser.Plot:
		if opts.NoFileWrites {
			return nil, &parser.Error{Pos: s.To.Pos, Msg: fmt.Sprintf("PLOT writes the file %s, and %v; use SELECT", parser.Quote(s.To.Path), outfile.ErrOff), Err: outfile.ErrOff}
		}
		if err := outfile.CheckBeneath(s.To.Path); err != nil {
			return nil, &parser.Error{Pos: s.To.Pos, Err: err, Msg: fmt.Sprintf("PLOT ... TO %s: %v (hint: a path in a query, which may come from someone else, is relative to the working directory, without '..' or symbolic links; to write elsewhere, give the file as a flag: gvdb plot --out PATH)",
				parser.Quote(s.To.Path), strings.TrimPrefix(err.Error(), outfile.ErrUnsafe.Error()+" "+s.To.Path+": "))}
		}
		res, err := evalSelect(ctx, d, s.AsSelect(), opts)
		if err != nil {
			return nil, err
		}
		res.Plot = &PlotSpec{File: s.To.Path, Scale: strings.ToLower(string(s.Scale)), Query: s.String(), Title: Title(s)}
		return res, nil
	}
	return nil, fmt.Errorf("unknown statement %T", st)
}

// posErr gives a store error (an unknown run, say) the statement's
// position.
func posErr(pos lexer.Position, err error) error {
	var qe *parser.Error
	if errors.As(err, &qe) {
		return err
	}
	return &parser.Error{Pos: pos, Msg: err.Error(), Err: err}
}

// evaluator holds one SELECT's evaluation: the plan, the store, the rows
// being filled, warnings and progress.
type evaluator struct {
	ctx    context.Context
	d      *db.DB
	p      *plan
	opts   Options
	g      *grid
	res    *Result
	warned map[string]bool
	gcSeen map[string]bool
	done   int
	total  int
	// last is the last step with data of each run (index as runs).
	last []int64
	// examples are the per-example values of per-example rows.
	examples []*exampleOut
	// cache holds the Gradient Clustering work: Options.Cache, or the
	// evaluation's own.
	cache *GCCache
	// fulls are each run's full snapshots (refit_every).
	refitMu sync.Mutex
	fulls   map[string][]int64
}

func evalSelect(ctx context.Context, d *db.DB, s *parser.Select, opts Options) (*Result, error) {
	p, err := planSelect(s)
	if err != nil {
		return nil, err
	}
	if opts.GCSeed == 0 {
		opts.GCSeed = 1
	}
	runs, err := resolveRuns(d, s, p)
	if err != nil {
		return nil, err
	}
	e := &evaluator{ctx: ctx, d: d, p: p, opts: opts, g: newGrid(p.window), res: &Result{},
		warned: map[string]bool{}, gcSeen: map[string]bool{}, cache: opts.Cache}
	if e.cache == nil {
		e.cache = queryCache()
	}
	if err := e.countSnapshots(runs); err != nil {
		return nil, err
	}
	var plans []runPlan
	e.last = make([]int64, len(runs))
	for ri, r := range runs {
		e.last[ri] = -1
		rp, err := planRun(r, p)
		if err != nil {
			return nil, err
		}
		plans = append(plans, rp)
		if note := IgnoredNote(r); note != "" && len(p.stats) > 0 && wholeModel(rp) {
			e.warn(fmt.Sprintf("run %s: %s", r.Name, note))
		}
		if len(p.stats) > 0 || p.exampleRows {
			if err := e.scanStats(rp, ri); err != nil {
				return nil, err
			}
		}
		if len(p.scalars) > 0 {
			if err := e.scanScalars(rp, ri); err != nil {
				return nil, err
			}
		}
	}
	if err := e.g.finishPooled(ctx, plans); err != nil {
		return nil, err
	}
	e.partialWindows(runs)
	if err := buildRows(ctx, e.res, s, p, runs, plans, e.g, e.examples); err != nil {
		return nil, err
	}
	if s.Having != nil {
		if err := having(ctx, e.res, s.Having); err != nil {
			return nil, err
		}
	}
	if err := orderAndLimit(e.res, s); err != nil {
		return nil, err
	}
	return e.res, nil
}

// partialWindows warns about windows that extend past a run's data (or
// the WHERE clause's last step): their values cover only part of them.
// The last window of a completed run, which training itself ended, is
// not flagged: no data is missing from it.
func (e *evaluator) partialWindows(runs []*db.Run) {
	if e.g.window == 0 {
		return
	}
	done := map[int]bool{}
	for _, k := range e.g.order {
		end := min(e.last[k.run], e.p.stepHi-1)
		if done[k.run] || k.t+e.g.window-1 <= end || end < k.t {
			continue
		}
		if r := runs[k.run]; end == e.last[k.run] && r.Status == db.StatusComplete && end >= r.Steps {
			continue
		}
		done[k.run] = true
		e.warn(fmt.Sprintf("run %s: the window of steps %d to %d has data only up to step %d: its values cover part of it",
			runs[k.run].Name, k.t, k.t+e.g.window-1, end))
	}
}

// seen records a step with data of run ri.
func (e *evaluator) seen(ri int, step int64) { e.last[ri] = max(e.last[ri], step) }

// warn adds a warning once.
func (e *evaluator) warn(w string) {
	if !e.warned[w] {
		e.warned[w] = true
		e.res.Warnings = append(e.res.Warnings, w)
	}
}

// keep says whether a snapshot passes the WHERE clause.
func (e *evaluator) keep(s *db.Snapshot) bool { return e.p.stepPred(s.Step) && e.p.popOK(s.Population) }

func (e *evaluator) window() db.Window { return db.Window{From: e.p.stepLo, To: e.p.stepHi} }

// scopeLayers returns the decoded blocks of a scope's layers, in schema
// order.
func scopeLayers(r *db.Run, sc scope, blocks map[string]*codec.Block) []stats.Layer {
	var layers []stats.Layer
	for _, l := range sc.layers {
		if b := blocks[l]; b != nil {
			layers = append(layers, stats.Layer{Name: l, Block: b, Weight: isWeight(r, l)})
		}
	}
	return layers
}

// isWeight says a run's layer is a weight of a Linear or Conv2d layer,
// which the paper's Gradient Clustering clusters.
func isWeight(r *db.Run, layer string) bool {
	l, err := r.Layer(layer)
	return err == nil && (l.Kind == db.DenseWeight || l.Kind == db.ConvWeight)
}

// refitPartition returns the partition of k clusters fitted by method at
// the latest full snapshot of rp's run at or before step whose step is a
// multiple of every, over the given layers, and the key it has in the
// cache. A missing full snapshot there is an error naming the nearest
// ones: never an older partition.
func (e *evaluator) refitPartition(rp runPlan, step, every int64, layers []string, k int, method stats.Method) (*stats.FixedPartition, string, error) {
	r := rp.run
	e.refitMu.Lock()
	if e.fulls == nil {
		e.fulls = map[string][]int64{}
	}
	fulls, ok := e.fulls[r.Name]
	if !ok {
		infos, err := e.d.SnapshotInfos(r, db.AllSteps)
		if err != nil {
			e.refitMu.Unlock()
			return nil, "", err
		}
		for _, in := range infos {
			if in.Population == db.Full {
				fulls = append(fulls, in.Step)
			}
		}
		e.fulls[r.Name] = fulls
	}
	e.refitMu.Unlock()
	at := step / every * every
	if !slices.Contains(fulls, at) {
		near := "it has none: " + FullSnapshotHint(r)
		if len(fulls) > 0 {
			i, _ := slices.BinarySearch(fulls, at)
			var ns []string
			for _, j := range []int{i - 1, i} {
				if j >= 0 && j < len(fulls) {
					ns = append(ns, fmt.Sprint(fulls[j]))
				}
			}
			near = "the nearest is at step " + ns[0]
			if len(ns) > 1 {
				near = "the nearest are at steps " + strings.Join(ns, " and ")
			}
		}
		return nil, "", fmt.Errorf("refit_every %d at step %d needs a full snapshot at step %d of run %s; %s", every, step, at, r.Name, near)
	}
	o := e.gcOptions()
	key := fmt.Sprintf("fixed\x00%s\x00%s\x00%d\x00%d\x00%d\x00%s\x00%d\x00%d\x00%d/%d/%d/%d/%d", e.d.Dir(), r.Name, r.ID, r.Created.UnixNano(), at,
		strings.Join(layers, ","), k, method, o.Seed, o.Rounds, o.Path, o.SketchDim, stats.MemoryBudget(o.MemoryBudget))
	v, err := e.cache.do(key, func() (any, int64, error) {
		ls, _, err := loadLayers(e.d, r, at, layers)
		if err != nil {
			return nil, 0, err
		}
		sc := newGCScope(e.cache, e.d, r, at, ls, o)
		defer sc.release()
		p, err := sc.fit(k, method, false)
		if err != nil {
			return nil, 0, fmt.Errorf("fitting at step %d: %w", at, err)
		}
		f, err := fixedPartition(ls[0].Block.IDs, p)
		return f, 2 * partitionBytes(p), err
	})
	if err != nil {
		return nil, "", err
	}
	return v.(*stats.FixedPartition), key, nil
}

// fixedPartition is p, fitted in-sample on the examples ids, by example
// id (stats.GC.Fixed).
func fixedPartition(ids []uint64, p *stats.Partition) (*stats.FixedPartition, error) {
	if p.Assign == nil {
		return nil, fmt.Errorf("gradient clustering: a held-out partition cannot be reused")
	}
	f := &stats.FixedPartition{K: p.K, Of: make(map[uint64]int, len(ids)), Sizes: p.Sizes, N: p.N}
	for i, id := range ids {
		f.Of[id] = p.Assign[i]
	}
	return f, nil
}

// scopeInput is what one scope of one snapshot is computed from: the
// decoded blocks (and anchor blocks), or the layers' rollups.
type scopeInput struct {
	layers, anchor []stats.Layer
	rollups        []stats.LayerRollup
	group          int64    // GROUP BY attribute value (noGroup: none)
	splitKeys      []uint64 // held-out halves' keys (nil: the ids)
	attrs          *codec.Attributes
	rows           []int // the examples of layers, as rows of the snapshot (nil: all)
}

// compute evaluates the run's statistics on one snapshot and scope.
func (e *evaluator) compute(rp runPlan, ri, si int, s *db.Snapshot, in scopeInput, need needs, pooled bool, o *snapOut) error {
	if len(in.layers) == 0 && len(in.rollups) == 0 {
		return nil
	}
	layers, anchor := in.layers, in.anchor
	sneed := stats.Need{Coords: need.coords, Inner: need.inner, Mean: need.mean || pooled}
	var m *stats.Moments
	var err error
	if in.rollups != nil {
		m, err = stats.FromRollups(in.rollups, s.Step, sneed)
	} else {
		m, err = stats.Compute(layers, s.Step, sneed)
	}
	if err != nil {
		return err
	}
	for _, w := range m.Warnings {
		o.warn(fmt.Sprintf("run %s: %s", rp.run.Name, w))
	}
	x := &scopeData{m: m, population: s.Population, run: rp.run,
		warn:    func(w string) { o.warn(fmt.Sprintf("run %s step %d: %s", rp.run.Name, s.Step, w)) },
		warnRun: func(w string) { o.warn(fmt.Sprintf("run %s: %s", rp.run.Name, w)) }}
	if s.Population == db.Sample {
		if x.strata, err = stats.StrataOf(in.attrs); err != nil {
			return err
		}
		if x.strata != nil {
			if w := stratifiedNote(rp.run, rp.refs); w != "" {
				o.warn(w)
			}
		}
	}
	x.refit = func(every int64, k int, method stats.Method) (*stats.FixedPartition, string, error) {
		if in.rows != nil {
			return nil, "", fmt.Errorf("refit_every scores whole snapshots: it does not combine with GROUP BY an example attribute or WHERE on one")
		}
		names := make([]string, len(layers))
		for i, l := range layers {
			names[i] = l.Name
		}
		return e.refitPartition(rp, s.Step, every, names, k, method)
	}
	var sc *gcScope
	x.gc = func() *gcScope {
		if sc == nil {
			opts := e.gcOptions()
			opts.SplitKeys = in.splitKeys
			sc = newGCScope(e.cache, e.d, rp.run, s.Step, layers, opts)
			sc.used = func(d string) {
				if !slices.Contains(o.gc, d) {
					o.gc = append(o.gc, d)
				}
			}
		}
		return sc
	}
	defer func() {
		// After an interrupt a statistic may still be running on it.
		if sc != nil && e.ctx.Err() == nil {
			sc.release()
		}
	}()
	var svrg *stats.Moments
	x.svrg = func() (*stats.Moments, error) {
		if svrg != nil {
			return svrg, nil
		}
		if !s.HasAnchor || len(anchor) != len(layers) {
			o.warn(fmt.Sprintf("run %s has snapshots without SVRG anchor blocks (%s): svrg statistics are NaN there", rp.run.Name, AnchorHint(rp.run)))
			return nil, nil
		}
		diff := make([]stats.Layer, len(layers))
		for i, l := range layers {
			d, err := stats.Difference(l.Block, anchor[i].Block)
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", l.Name, err)
			}
			diff[i] = stats.Layer{Name: l.Name, Block: d}
		}
		dm, err := stats.Compute(diff, s.Step, stats.Need{Coords: need.anchorCoords})
		if err != nil {
			return nil, err
		}
		for _, w := range dm.Warnings {
			o.warn(fmt.Sprintf("run %s: SVRG difference: %s", rp.run.Name, w))
		}
		svrg = dm
		return svrg, nil
	}
	k := e.g.key(ri, si, s.Step)
	k.group = in.group
	for _, ref := range rp.refs {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		if ref.pooled {
			o.pools = append(o.pools, cellAdd{k: k, ref: ref.key(), m: m})
			continue
		}
		def := lookupStat(ref.name)
		if def.need.gc {
			if err := checkClusters(rp, s, m.N, ref, def, o); err != nil {
				return err
			}
		}
		eval := func() (float64, error) { return def.eval(x, ref.evalArgs()) }
		var v float64
		if (def.need.gc && ref.refit == 0) || def.need.anchor {
			v, err = interruptible(e.ctx, eval) // in-memory work without cancellation of its own
		} else {
			v, err = eval()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", ref.text(", "), err)
		}
		o.adds = append(o.adds, cellAdd{k: k, ref: ref.key(), v: v})
	}
	if _, err := interruptible(e.ctx, func() (any, error) { return nil, e.intervals(rp, layers, m, k, o) }); err != nil {
		return err
	}
	if e.p.exampleRows {
		ex, err := interruptible(e.ctx, func() (*exampleOut, error) { return e.exampleValues(layers, m, in, x, rp.run.Name, s.Step) })
		if err != nil {
			return err
		}
		ex.k = k
		o.examples = append(o.examples, ex)
	}
	return nil
}

// intervals computes the query's ci() items on one snapshot and scope.
func (e *evaluator) intervals(rp runPlan, layers []stats.Layer, m *stats.Moments, k rowKey, o *snapOut) error {
	if len(e.p.cis) == 0 || len(layers) == 0 {
		return nil
	}
	budget := stats.MemoryBudget(e.opts.MemoryBudget)
	if need := 8 * int64(m.N) * int64(m.N); need > budget {
		return fmt.Errorf("ci over %d examples needs the %s Gram matrix, over the memory budget of %s", m.N, humanize.IBytes(uint64(need)), humanize.IBytes(uint64(budget)))
	}
	g, err := stats.NewGram(layers)
	if err != nil {
		return err
	}
	for _, ci := range e.p.cis {
		ref := ci.stat.resolve(rp.run.BatchSize)
		def := lookupStat(ref.name)
		lo, hi := math.NaN(), math.NaN()
		if !m.NonFinite {
			lo, hi, err = stats.Bootstrap(g, m.D, ci.level, e.opts.GCSeed, func(b *stats.Moments) (float64, error) {
				return def.eval(&scopeData{m: b}, ref.args)
			})
			if err != nil {
				return err
			}
			if v, err := def.eval(&scopeData{m: m}, ref.args); err == nil && (v < lo || v > hi) {
				side := "above"
				if v > hi {
					side = "below"
				}
				o.warn(fmt.Sprintf("run %s step %d: the interval of ci(%s) lies %s the estimate %.6g: on these %d examples the plug-in %s is biased by more than its spread (the basic bootstrap corrects for that; docs/QUERY.md, Uncertainty)",
					rp.run.Name, k.t, ref.name, side, v, m.N, ref.name))
			}
		}
		key := ciKey(ref, ci.level)
		o.adds = append(o.adds, cellAdd{k: k, ref: "ci_lo:" + key, v: lo}, cellAdd{k: k, ref: "ci_hi:" + key, v: hi})
	}
	return nil
}

// checkClusters refuses more clusters than a partition of the scope's n
// examples can have (checkK: the rule on K everywhere) and warns about
// samples too small for the clusters fitted on them (docs/QUERY.md,
// Populations: the measured biases).
func checkClusters(rp runPlan, s *db.Snapshot, n int, ref statRef, def *statDef, o *snapOut) error {
	heldOut := s.Population == db.Sample && !strings.HasSuffix(def.name, "_insample") && ref.refit == 0
	avail, where := n, fmt.Sprintf("the examples of run %s at step %d", rp.run.Name, s.Step)
	if heldOut {
		avail, where = n/2, fmt.Sprintf("each held-out half of the %d examples of run %s at step %d; or use a full snapshot, or %s_insample", n, rp.run.Name, s.Step, ref.name)
	}
	if err := checkK(ref.pos, ref.name, ref.args[0], avail, where); err != nil {
		return err
	}
	k := int(ref.args[0])
	// A refit estimate is not fitted on the sample: Score warns about the
	// clusters the sample misses instead.
	if s.Population == db.Sample && s.N < 32*k && ref.refit == 0 {
		o.warn(fmt.Sprintf("run %s: Gradient Clustering with K = %d on samples of %d examples (%.1f per cluster, fewer than 32): the estimate is noisy; full snapshots (%s) give the paper's population",
			rp.run.Name, k, s.N, float64(s.N)/float64(k), FullSnapshotHint(rp.run)))
	}
	return nil
}

// interruptible runs f and returns its result, or ctx's error as soon as
// ctx is done (within a second of an interrupt, whatever f is doing). The
// statistics code (Gradient Clustering, Gram matrices, bootstraps) has no
// cancellation of its own: f then finishes in the background, on memory
// only, and its result is dropped.
func interruptible[T any](ctx context.Context, f func() (T, error)) (T, error) {
	if ctx.Done() == nil {
		return f()
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// gcOptions are the Gradient Clustering options of this evaluation.
func (e *evaluator) gcOptions() stats.GCOptions { return gcOptions(e.opts) }

// ciKey names the cells of a ci() interval.
func ciKey(ref statRef, level float64) string { return fmt.Sprintf("%s@%g", ref.key(), level) }

// evalExpr evaluates e, asking leaf for names and calls.
func evalExpr(e *parser.Expr, leaf func(parser.Operand) float64) float64 {
	v := evalTerm(e.Left, leaf)
	for _, o := range e.Ops {
		w := evalTerm(o.Term, leaf)
		if o.Op == "+" {
			v += w
		} else {
			v -= w
		}
	}
	return v
}

func evalTerm(t *parser.Term, leaf func(parser.Operand) float64) float64 {
	v := evalFactor(t.Left, leaf)
	for _, o := range t.Ops {
		w := evalFactor(o.Factor, leaf)
		if o.Op == "*" {
			v *= w
		} else {
			v /= w
		}
	}
	return v
}

func evalFactor(f *parser.Factor, leaf func(parser.Operand) float64) float64 {
	var v float64
	switch x := f.Operand.(type) {
	case *parser.Number:
		v = x.Value
	case *parser.Paren:
		v = evalExpr(x.Expr, leaf)
	default:
		v = leaf(x)
	}
	if f.Neg {
		return -v
	}
	return v
}

// evalCond evaluates c for one value: cmp compares it with a literal, glob
// matches a pattern.
func evalCond(c *parser.Cond, cmp func(parser.Literal) int, glob func(string) bool) bool {
	return c.Holds(func(p *parser.Pred) bool { return evalPred(p, cmp, glob) })
}

// evalPred evaluates one comparison (not a parenthesized condition).
func evalPred(p *parser.Pred, cmp func(parser.Literal) int, glob func(string) bool) bool {
	switch {
	case p.Value != nil:
		c := cmp(*p.Value)
		switch p.Op {
		case "=":
			return c == 0
		case "!=", "<>":
			return c != 0
		case "<":
			return c < 0
		case "<=":
			return c <= 0
		case ">":
			return c > 0
		case ">=":
			return c >= 0
		}
	case p.In != nil:
		for _, l := range p.In {
			if cmp(l) == 0 {
				return true
			}
		}
		return false
	case p.Glob != nil:
		return glob(*p.Glob)
	case p.Lo != nil:
		return cmp(*p.Lo) >= 0 && cmp(*p.Hi) <= 0
	}
	return false
}

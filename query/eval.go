package query

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"path"
	"runtime"
	"runtime/metrics"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alecthomas/participle/v2/lexer"
	"github.com/dustin/go-humanize"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/query/parser"
)

// Result is a statement's answer: a table, warnings beside it (never
// instead of it), and for PLOT where to draw it.
type Result struct {
	Columns []string
	// Labels describe the columns for figures: each statistic with its
	// default arguments filled in (nvar -> nvar(128)) when every run
	// agrees on them.
	Labels []string
	// Kinds name, per column, what its values are for axis labels: the
	// first statistic or scalar of the column's expression (nvar for
	// nvar(128) / 2), or the key's name.
	// ("mean:nvar" and "stddev:nvar" for aggregates over runs,
	// "ci_lo:variance:0.95" and "ci_hi:variance:0.95" for the bounds of
	// ci(variance)).
	Kinds []string
	// Keys counts the leading key columns (config.x groups, run, layer, an
	// example attribute group, step, example_id); the value columns
	// follow.
	Keys     int
	Rows     [][]any // string, int64 or float64 (NaN: no value)
	Warnings []string
	Plot     *PlotSpec
	Stats    EvalStats
}

// PlotSpec says how to draw a PLOT statement's result.
type PlotSpec struct {
	File  string
	Scale string // "log", "linear" or "" (the figure's default)
	Query string
	// Title is the PLOT's TITLE, or a default naming what is plotted.
	Title string
}

// EvalStats measure an evaluation.
type EvalStats struct {
	Snapshots int
	BytesRead int64
	Read      time.Duration // reading blocks from the store
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
	// file), for programs that run queries from elsewhere.
	NoFileWrites bool
	// Progress, if set, is told after each snapshot how many of the
	// query's snapshots are done.
	Progress func(done, total int)
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
			return nil, parser.Errorf(s.Pos, "PLOT writes the file %s, and file writes are off (--no-file-writes); use SELECT", parser.Quote(s.To))
		}
		res, err := evalSelect(ctx, d, s.AsSelect(), opts)
		if err != nil {
			return nil, err
		}
		res.Plot = &PlotSpec{File: s.To, Scale: strings.ToLower(string(s.Scale)), Query: s.String(), Title: Title(s)}
		return res, nil
	}
	return nil, fmt.Errorf("unknown statement %T", st)
}

func evalShow(d *db.DB, s *parser.Show) (*Result, error) {
	what := string(s.What)
	if what != "RUNS" && s.From == nil {
		return nil, parser.Errorf(s.Pos, "SHOW %s needs FROM 'run'", what)
	}
	res := &Result{}
	switch what {
	case "RUNS":
		runs, err := d.Runs()
		if err != nil {
			return nil, err
		}
		res.Columns = []string{"run", "model", "data", "status", "steps", "batch", "lr", "layers", "params", "snapshots", "examples", "full", "created"}
		for _, r := range runs {
			infos, err := d.SnapshotInfos(r, db.AllSteps)
			if err != nil {
				return nil, err
			}
			// examples: per sampled snapshot (the first one's); full: how
			// many snapshots hold the whole training set.
			n, full := int64(0), int64(0)
			for _, in := range infos {
				if in.Population == db.Full {
					full++
				} else if n == 0 {
					n = int64(in.N)
				}
			}
			res.Rows = append(res.Rows, []any{r.Name, r.Model, r.Dataset, r.ShownStatus(), r.Steps, int64(r.BatchSize), r.LR,
				int64(len(r.Layers)), int64(r.TotalParams()), int64(len(infos)), n, full, r.Created.UTC().Format("2006-01-02 15:04:05")})
		}
		return res, nil
	}
	r, err := d.Run(*s.From)
	if err != nil {
		return nil, posErr(s.Pos, err)
	}
	switch what {
	case "LAYERS":
		res.Columns = []string{"layer", "kind", "shape", "params"}
		for _, l := range r.Layers {
			dims := make([]string, len(l.Shape))
			for i, n := range l.Shape {
				dims[i] = fmt.Sprint(n)
			}
			res.Rows = append(res.Rows, []any{l.Name, string(l.Kind), strings.Join(dims, "x"), int64(l.Params)})
		}
	case "STEPS":
		infos, err := d.SnapshotInfos(r, db.AllSteps)
		if err != nil {
			return nil, posErr(s.Pos, err)
		}
		// anchor_step: the step of the SVRG anchor θ̃ whose gradients the
		// snapshot also holds (NaN: none).
		// rollup_bytes: what the rollups that answer moment statistics
		// without reading blocks cost (0: none; gvdb reindex adds them).
		res.Columns = []string{"step", "population", "examples", "layers", "anchor_step", "stored_bytes", "rollup_bytes"}
		for _, in := range infos {
			anchor := math.NaN()
			if in.HasAnchor {
				anchor = float64(in.AnchorStep)
			}
			res.Rows = append(res.Rows, []any{in.Step, in.Population.String(), int64(in.N), int64(len(in.Layers)), anchor, in.StoredBytes(), in.RollupBytes})
		}
	case "SCALARS":
		type agg struct {
			n           int64
			first, last int64
		}
		seen := map[string]*agg{}
		err := d.Scalars(r, db.AllSteps, func(r db.ScalarRow) error {
			for k := range r.Values {
				a := seen[k]
				if a == nil {
					a = &agg{first: r.Step}
					seen[k] = a
				}
				a.n++
				a.last = r.Step
			}
			return nil
		})
		if err != nil {
			return nil, posErr(s.Pos, err)
		}
		res.Columns = []string{"scalar", "steps", "first_step", "last_step"}
		names := make([]string, 0, len(seen))
		for k := range seen {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			a := seen[k]
			res.Rows = append(res.Rows, []any{k, a.n, a.first, a.last})
		}
	}
	return res, nil
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

// rowKey identifies an output row.
type rowKey struct {
	run   int
	scope int
	t     int64 // step, or window start
	group int64 // the example attribute's value under GROUP BY it, else noGroup
}

// noGroup is rowKey.group without GROUP BY an example attribute.
const noGroup = math.MinInt64

// cell accumulates one value over the snapshots or steps of a row.
type cell struct {
	sum float64
	n   int
}

func (c *cell) add(v float64) { c.sum += v; c.n++ }

func (c *cell) mean() float64 {
	if c.n == 0 {
		return math.NaN()
	}
	return c.sum / float64(c.n)
}

type scope struct {
	name   string // layer name, or "" for all layers in scope
	layers []string
}

type runPlan struct {
	run    *db.Run
	scopes []scope
	refs   []statRef // resolved per run, parallel to plan.stats
}

// grid accumulates the values of the output rows.
type grid struct {
	window int64 // 0: one row per step
	values map[rowKey]map[string]*cell
	pooled map[rowKey]map[string]*stats.Moments
	order  []rowKey
}

func newGrid(window int64) *grid {
	return &grid{window: window, values: map[rowKey]map[string]*cell{}, pooled: map[rowKey]map[string]*stats.Moments{}}
}

// key returns the row of a run, scope and step (its window's first step).
func (g *grid) key(run, scope int, step int64) rowKey {
	if g.window > 0 {
		step -= step % g.window
	}
	return rowKey{run, scope, step, noGroup}
}

// row returns a row's cells, creating the row.
func (g *grid) row(k rowKey) map[string]*cell {
	m := g.values[k]
	if m == nil {
		m = map[string]*cell{}
		g.values[k] = m
		g.order = append(g.order, k)
	}
	return m
}

// add adds one value (a snapshot's or a step's) to a row's cell.
func (g *grid) add(k rowKey, ref string, v float64) {
	m := g.row(k)
	if m[ref] == nil {
		m[ref] = &cell{}
	}
	m[ref].add(v)
}

// pool merges a snapshot's moments into a row's pooled moments.
func (g *grid) pool(k rowKey, ref string, m *stats.Moments) error {
	g.row(k)
	if g.pooled[k] == nil {
		g.pooled[k] = map[string]*stats.Moments{}
	}
	if old := g.pooled[k][ref]; old != nil {
		merged, err := stats.Merge(old, m)
		if err != nil {
			return err
		}
		m = merged
	}
	g.pooled[k][ref] = m
	return nil
}

// finishPooled evaluates the pooled statistics of every row.
func (g *grid) finishPooled(plans []runPlan) error {
	for k, byRef := range g.pooled {
		for _, ref := range plans[k.run].refs {
			m := byRef[ref.key()]
			if m == nil {
				continue
			}
			v, err := lookupStat(ref.name).eval(&scopeData{m: m}, ref.args)
			if err != nil {
				return err
			}
			g.add(k, ref.key(), v)
		}
	}
	return nil
}

// sorted returns the rows by run, scope and time.
func (g *grid) sorted() []rowKey {
	sort.SliceStable(g.order, func(a, b int) bool {
		x, y := g.order[a], g.order[b]
		if x.run != y.run {
			return x.run < y.run
		}
		if x.scope != y.scope {
			return x.scope < y.scope
		}
		if x.group != y.group {
			return x.group < y.group
		}
		return x.t < y.t
	})
	return g.order
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
		warned: map[string]bool{}, gcSeen: map[string]bool{}}
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
	if err := e.g.finishPooled(plans); err != nil {
		return nil, err
	}
	e.partialWindows(runs)
	buildRows(e.res, s, p, runs, plans, e.g, e.examples)
	if s.Having != nil {
		if err := having(e.res, s.Having); err != nil {
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

// countSnapshots counts the query's snapshots when progress is asked for.
func (e *evaluator) countSnapshots(runs []*db.Run) error {
	if e.opts.Progress == nil || len(e.p.stats) == 0 {
		return nil
	}
	for _, r := range runs {
		infos, err := e.d.SnapshotInfos(r, e.window())
		if err != nil {
			return err
		}
		for _, in := range infos {
			if e.keep(&db.Snapshot{Step: in.Step, Population: in.Population}) {
				e.total++
			}
		}
	}
	return nil
}

func (e *evaluator) progress() {
	e.done++
	if e.opts.Progress != nil {
		e.opts.Progress(e.done, e.total)
	}
}

// runNeeds merges what a run's statistics need, and whether any is
// pooled.
func runNeeds(refs []statRef) (needs, bool) {
	var n needs
	pooled := false
	for _, ref := range refs {
		d := lookupStat(ref.name).need
		n.coords = n.coords || d.coords
		n.inner = n.inner || d.inner
		n.mean = n.mean || d.mean
		n.gc = n.gc || d.gc
		n.anchor = n.anchor || d.anchor
		n.anchorCoords = n.anchorCoords || d.anchorCoords
		pooled = pooled || ref.pooled
	}
	return n, pooled
}

// scanStats reads the run's snapshots in the plan's window (only the
// layers, anchor blocks or rollups it needs) and computes each statistic
// per snapshot and scope. Snapshots are processed by a bounded pool of
// workers (Options.Workers, default GOMAXPROCS; one for Gradient
// Clustering, which is parallel inside), and their results are applied in
// step order, so answers do not depend on the number of workers.
func (e *evaluator) scanStats(rp runPlan, ri int) error {
	need, pooled := runNeeds(rp.refs)
	var all []string
	seen := map[string]bool{}
	for _, sc := range rp.scopes {
		for _, l := range sc.layers {
			if !seen[l] {
				seen[l] = true
				all = append(all, l)
			}
		}
	}
	// Moment statistics are answered from the snapshots' rollups when
	// every layer has one (with vectors where needed); otherwise, and for
	// Gradient Clustering and SVRG, from the blocks.
	examples := len(e.p.exampleConds) > 0 || e.p.exampleGroup != "" || e.p.exampleRows
	useRollups := !need.gc && !need.anchor && !e.opts.NoRollups && !examples && len(e.p.cis) == 0
	if e.p.perExample["cos_to_mean"] {
		need.inner = true
	}
	sel := db.Select{Layers: all, Anchor: need.anchor, Filter: e.keep, Rollups: useRollups, NoBlocks: useRollups, Attributes: true}
	workers := e.opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if need.gc {
		workers = 1
	}
	// Results are applied in order: out[k] once out[0..k-1] are.
	var (
		mu      sync.Mutex
		outs    = map[int]*snapOut{}
		next    int
		firstEr error
		wg      sync.WaitGroup
	)
	sem := make(chan struct{}, workers)
	apply := func() {
		for o := outs[next]; o != nil; o = outs[next] {
			delete(outs, next)
			next++
			if firstEr == nil {
				firstEr = o.err
			}
			if firstEr == nil {
				firstEr = e.apply(o)
			}
		}
	}
	readStart := time.Now()
	idx := 0
	err := e.d.Snapshots(rp.run, e.window(), sel, func(s *db.Snapshot) error {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		mu.Lock()
		err := firstEr
		mu.Unlock()
		if err != nil {
			return err
		}
		e.res.Stats.Read += time.Since(readStart)
		i := idx
		idx++
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := e.process(rp, ri, s, all, need, pooled, useRollups)
			<-sem
			mu.Lock()
			outs[i] = o
			apply()
			mu.Unlock()
		}()
		readStart = time.Now()
		return nil
	})
	wg.Wait()
	if err == nil {
		err = firstEr
	}
	if err != nil {
		var nf *db.NotFoundError
		if errors.As(err, &nf) {
			return &parser.Error{Pos: e.p.sel.Pos, Msg: err.Error(), Err: err}
		}
		return err
	}
	return nil
}

// snapOut is what processing one snapshot yields, applied to the
// evaluation in step order.
type snapOut struct {
	err      error
	run      int
	step     int64
	warnings []string
	gc       []string
	adds     []cellAdd
	pools    []cellAdd
	examples []*exampleOut
	rollups  bool
	bytes    int64
	decode   time.Duration
	compute  time.Duration
}

type cellAdd struct {
	k   rowKey
	ref string
	v   float64
	m   *stats.Moments
}

func (o *snapOut) warn(w string) { o.warnings = append(o.warnings, w) }

// apply adds one snapshot's results to the evaluation.
func (e *evaluator) apply(o *snapOut) error {
	st := &e.res.Stats
	st.Snapshots++
	st.BytesRead += o.bytes
	st.Decode += o.decode
	st.Compute += o.compute
	if o.rollups {
		st.FromRollups++
	}
	for _, w := range o.warnings {
		e.warn(w)
	}
	for _, d := range o.gc {
		if !e.gcSeen[d] {
			e.gcSeen[d] = true
			st.GC = append(st.GC, d)
		}
	}
	for _, a := range o.adds {
		e.g.add(a.k, a.ref, a.v)
	}
	for _, a := range o.pools {
		if err := e.g.pool(a.k, a.ref, a.m); err != nil {
			return err
		}
	}
	for _, ex := range o.examples {
		e.g.row(ex.k) // the row exists even without statistics
		e.examples = append(e.examples, ex)
	}
	e.seen(o.run, o.step)
	e.progress()
	return nil
}

// process decodes one snapshot (or its rollups) and computes its
// statistics for every scope.
func (e *evaluator) process(rp runPlan, ri int, s *db.Snapshot, all []string, need needs, pooled, useRollups bool) *snapOut {
	o := &snapOut{step: s.Step, run: ri}
	fail := func(err error) *snapOut { o.err = err; return o }
	t0 := time.Now()
	var rolls map[string]*stats.Rollup
	if useRollups {
		var err error
		if rolls, err = readRollups(rp.run, s, all, need.coords || need.mean || pooled); err != nil {
			return fail(err)
		}
		if rolls == nil {
			// Not all there: this snapshot's blocks, then.
			full, err := e.d.Snapshot(rp.run, s.Step, db.Select{Layers: all})
			if err != nil {
				return fail(err)
			}
			s.Blocks = full.Blocks
		}
		o.rollups = rolls != nil
	}
	var blocks, anchors map[string]*codec.Block
	if rolls == nil {
		if err := checkHeaders(rp.run, s); err != nil {
			return fail(err)
		}
		var err error
		if blocks, err = decodeAll(s.Blocks); err != nil {
			return fail(fmt.Errorf("run %q step %d: %w", rp.run.Name, s.Step, err))
		}
		if anchors, err = decodeAll(s.Anchor); err != nil {
			return fail(fmt.Errorf("run %q step %d: anchor: %w", rp.run.Name, s.Step, err))
		}
		if err := checkBlocks(rp.run, s, blocks, all, false); err != nil {
			return fail(err)
		}
		if len(anchors) > 0 {
			if err := checkBlocks(rp.run, s, anchors, all, true); err != nil {
				return fail(err)
			}
		}
	}
	for _, b := range slices.Concat(s.Blocks, s.Anchor, s.Rollups) {
		o.bytes += int64(len(b.Data))
	}
	var attrs *codec.Attributes
	if s.Attributes != nil {
		var err error
		if attrs, err = codec.DecodeAttributes(s.Attributes, s.N); err != nil {
			return fail(fmt.Errorf("run %q step %d: %w", rp.run.Name, s.Step, err))
		}
	}
	groups, err := e.exampleGroups(rp, s, attrs)
	if err != nil {
		return fail(err)
	}
	o.decode = time.Since(t0)
	t1 := time.Now()
	for si, sc := range rp.scopes {
		for _, g := range groups {
			in := scopeInput{layers: scopeLayers(sc, blocks), anchor: scopeLayers(sc, anchors), group: g.value, attrs: attrs, rows: g.rows}
			if len(in.layers) > 0 {
				in.splitKeys = splitKeys(attrs, g.rows, in.layers[0].Block.IDs)
			}
			if g.rows != nil {
				if len(g.rows) == 0 {
					continue
				}
				in.layers, in.anchor = stats.SubsetLayers(in.layers, g.rows), stats.SubsetLayers(in.anchor, g.rows)
			}
			if rolls != nil {
				for _, l := range sc.layers {
					in.rollups = append(in.rollups, stats.LayerRollup{Name: l, Rollup: rolls[l]})
				}
			}
			if err := e.compute(rp, ri, si, s, in, need, pooled, o); err != nil {
				return fail(fmt.Errorf("run %q step %d: %w", rp.run.Name, s.Step, err))
			}
		}
	}
	o.compute = time.Since(t1)
	return o
}

// exampleGroup is the examples (row indexes; nil: all) a statistic is
// computed over, and their GROUP BY attribute value (noGroup: none).
type exampleGroup struct {
	rows  []int
	value int64
}

// exampleGroups applies the WHERE clause's example conditions and the
// GROUP BY attribute to a snapshot's examples.
func (e *evaluator) exampleGroups(rp runPlan, s *db.Snapshot, attrs *codec.Attributes) ([]exampleGroup, error) {
	if len(e.p.exampleConds) == 0 && e.p.exampleGroup == "" {
		return []exampleGroup{{value: noGroup}}, nil
	}
	if attrs == nil {
		return nil, &parser.Error{Pos: e.p.sel.Pos, Msg: fmt.Sprintf("run %q step %d has no example attributes to filter or group by (written before gvdb 0.2, or by an importer that records none)", rp.run.Name, s.Step)}
	}
	names := func() string {
		var out []string
		for _, c := range attrs.Columns {
			out = append(out, c.Name)
		}
		return strings.Join(out, ", ")
	}
	var err error
	get := func(field string, i int) float64 {
		c := attrs.Column(field)
		if c == nil {
			if err == nil {
				msg := fmt.Sprintf("run %q has no example attribute %q (attributes: %s)", rp.run.Name, field, names())
				if n := db.Nearest(field, strings.Split(names(), ", ")); n != "" {
					msg += fmt.Sprintf("; did you mean %q?", n)
				}
				pos, ok := e.p.attrPos[field]
				if !ok {
					pos = e.p.sel.Pos
				}
				err = &parser.Error{Pos: pos, Msg: msg}
			}
			return math.NaN()
		}
		return c.Value(i)
	}
	var rows []int
	for i := range s.N {
		keep := true
		for _, c := range e.p.exampleConds {
			keep = keep && evalExampleCond(c, func(f string) float64 { return get(f, i) })
		}
		if keep {
			rows = append(rows, i)
		}
	}
	if err != nil {
		return nil, err
	}
	if e.p.exampleGroup == "" {
		return []exampleGroup{{rows: rows, value: noGroup}}, nil
	}
	col := attrs.Column(e.p.exampleGroup)
	if col == nil {
		get(e.p.exampleGroup, 0)
		return nil, err
	}
	if col.Type == codec.Float {
		return nil, &parser.Error{Pos: e.p.groupPos, Msg: fmt.Sprintf("GROUP BY %s: a real-valued attribute has no groups (group by an integer or boolean attribute)", col.Name)}
	}
	by := map[int64][]int{}
	for _, i := range rows {
		v := int64(col.Value(i))
		by[v] = append(by[v], i)
	}
	var out []exampleGroup
	for v, rs := range by {
		out = append(out, exampleGroup{rows: rs, value: v})
	}
	slices.SortFunc(out, func(a, b exampleGroup) int { return cmp.Compare(a.value, b.value) })
	return out, nil
}

// splitKeys returns the keys that decide Gradient Clustering's held-out
// halves for the examples rows: a copy's source id (duplicate_of), so
// that copies stay together, else the example's id.
func splitKeys(attrs *codec.Attributes, rows []int, ids []uint64) []uint64 {
	dup := attrs.Column("duplicate_of")
	if dup == nil || dup.Type != codec.Int || ids == nil {
		return nil
	}
	if rows == nil {
		rows = make([]int, len(ids))
		for i := range rows {
			rows[i] = i
		}
	}
	out := make([]uint64, len(rows))
	for r, i := range rows {
		out[r] = ids[i]
		if d := dup.Ints[i]; d >= 0 {
			out[r] = uint64(d)
		}
	}
	return out
}

// evalExampleCond evaluates an example condition for one example; get
// returns an attribute's value.
func evalExampleCond(c *parser.Cond, get func(string) float64) bool {
	return c.Holds(func(p *parser.Pred) bool {
		x := get(string(p.Field))
		if p.Bare() {
			return x != 0
		}
		return evalPred(p, func(l parser.Literal) int { return cmpNum(x, l) }, nil)
	})
}

// checkHeaders checks every block's header against the run's schema and
// the snapshot's manifest before anything is decoded, so that a block
// cannot make a reader allocate more than its layer's shape needs.
func checkHeaders(r *db.Run, s *db.Snapshot) error {
	for _, lb := range append(s.Blocks, s.Anchor...) {
		h, err := codec.ReadHeader(lb.Data)
		if err != nil {
			return fmt.Errorf("run %q step %d layer %s: %w", r.Name, s.Step, lb.Layer, err)
		}
		l, err := r.Layer(lb.Layer)
		if err != nil {
			return err
		}
		if h.Params() != l.Params || h.N != s.N {
			return fmt.Errorf("run %q step %d layer %s: %w: block header says %d examples x %d parameters, the manifest and schema %d x %d",
				r.Name, s.Step, lb.Layer, db.ErrCorruptMetadata, h.N, h.Params(), s.N, l.Params)
		}
	}
	return nil
}

// checkBlocks checks decoded blocks against the run's schema and the
// snapshot's manifest before any statistic uses them: every layer asked
// for is there, with the schema's parameter count, the manifest's number
// of examples and the same example ids in the same order as the others.
func checkBlocks(r *db.Run, s *db.Snapshot, blocks map[string]*codec.Block, want []string, anchor bool) error {
	what := "block"
	if anchor {
		what = "anchor block"
	}
	var ids []uint64
	first := ""
	for _, name := range want {
		b := blocks[name]
		if b == nil {
			return fmt.Errorf("run %q step %d: %w: no %s for layer %s (the snapshot lists %d of the run's %d layers)",
				r.Name, s.Step, db.ErrCorruptMetadata, what, name, len(blocks), len(r.Layers))
		}
		l, err := r.Layer(name)
		if err != nil {
			return err
		}
		switch {
		case b.Params() != l.Params:
			return fmt.Errorf("run %q step %d layer %s: %w: %s has %d parameters, the schema %d", r.Name, s.Step, name, db.ErrCorruptMetadata, what, b.Params(), l.Params)
		case b.N() != s.N:
			return fmt.Errorf("run %q step %d layer %s: %w: %s has %d examples, the manifest %d", r.Name, s.Step, name, db.ErrCorruptMetadata, what, b.N(), s.N)
		case ids == nil:
			ids, first = b.IDs, name
		case !slices.Equal(b.IDs, ids):
			return fmt.Errorf("run %q step %d layer %s: %w: its examples differ from layer %s's (ids or order)", r.Name, s.Step, name, db.ErrCorruptMetadata, first)
		}
	}
	return nil
}

// scopeLayers returns the decoded blocks of a scope's layers, in schema
// order.
func scopeLayers(sc scope, blocks map[string]*codec.Block) []stats.Layer {
	var layers []stats.Layer
	for _, l := range sc.layers {
		if b := blocks[l]; b != nil {
			layers = append(layers, stats.Layer{Name: l, Block: b})
		}
	}
	return layers
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

// readRollups decodes the rollups of the layers of s, or returns nil when
// one is missing or lacks the vectors the query needs.
func readRollups(r *db.Run, s *db.Snapshot, layers []string, vectors bool) (map[string]*stats.Rollup, error) {
	out := map[string]*stats.Rollup{}
	for _, name := range layers {
		raw := s.Rollup(name)
		if raw == nil {
			return nil, nil
		}
		l, err := r.Layer(name)
		if err != nil {
			return nil, err
		}
		ro, err := stats.UnmarshalRollup(raw, s.N, l.Params)
		if err != nil {
			return nil, fmt.Errorf("run %q step %d layer %s: %w", r.Name, s.Step, name, err)
		}
		if vectors && !ro.HasVectors() {
			return nil, nil
		}
		out[name] = ro
	}
	return out, nil
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
	x := &scopeData{m: m, population: s.Population}
	var gc *stats.GC
	x.gc = func() (*stats.GC, error) {
		if gc != nil {
			return gc, nil
		}
		opts := e.gcOptions()
		opts.SplitKeys = in.splitKeys
		g, err := stats.NewGC(layers, opts)
		if err != nil {
			return nil, err
		}
		gc = g
		o.gc = append(o.gc, gc.Describe())
		return gc, nil
	}
	var svrg *stats.Moments
	x.svrg = func() (*stats.Moments, error) {
		if svrg != nil {
			return svrg, nil
		}
		if !s.HasAnchor || len(anchor) != len(layers) {
			o.warn(fmt.Sprintf("run %s has snapshots without SVRG anchor blocks (train with --svrg-every S): svrg statistics are NaN there", rp.run.Name))
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
		if ref.pooled {
			o.pools = append(o.pools, cellAdd{k: k, ref: ref.key(), m: m})
			continue
		}
		def := lookupStat(ref.name)
		if def.need.gc {
			if err := checkClusters(rp, s, ref, def, o); err != nil {
				return err
			}
		}
		v, err := def.eval(x, ref.args)
		if err != nil {
			return fmt.Errorf("%s: %w", ref.text(", "), err)
		}
		o.adds = append(o.adds, cellAdd{k: k, ref: ref.key(), v: v})
	}
	if err := e.intervals(rp, layers, m, k, o); err != nil {
		return err
	}
	if e.p.exampleRows {
		ex, err := e.exampleValues(layers, m, in, x)
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
	budget := e.opts.MemoryBudget
	if budget <= 0 {
		budget = stats.DefaultMemoryBudget()
	}
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

// exampleValues returns the per-example values a query names for the
// examples of one snapshot scope: ids, grad_norm = |g_i|, cos_to_mean =
// g_i·μ / (|g_i| |μ|), attributes, and cluster(K), the example's cluster
// in the K-partition fitted on these examples (in-sample: a label, not an
// estimate).
func (e *evaluator) exampleValues(layers []stats.Layer, m *stats.Moments, in scopeInput, x *scopeData) (*exampleOut, error) {
	n := m.N
	ex := &exampleOut{ids: layers[0].Block.IDs, cols: map[string][]float64{}}
	norm := m.Norm()
	gn, cos := make([]float64, n), make([]float64, n)
	for i := range n {
		gn[i] = math.Sqrt(m.SqNorms[i])
		if m.Inner != nil {
			cos[i] = m.Inner[i] / (gn[i] * norm)
		}
	}
	ex.cols["grad_norm"], ex.cols["cos_to_mean"] = gn, cos
	if in.attrs != nil {
		for _, c := range in.attrs.Columns {
			v := make([]float64, n)
			for j := range n {
				row := j
				if in.rows != nil {
					row = in.rows[j]
				}
				v[j] = c.Value(row)
			}
			ex.cols[c.Name] = v
		}
	}
	for _, k := range e.p.clusterKs {
		v := make([]float64, n)
		if k > n || m.NonFinite {
			for j := range v {
				v[j] = math.NaN()
			}
		} else {
			g, err := x.gc()
			if err != nil {
				return nil, err
			}
			p, err := g.InSample(k)
			if err != nil {
				return nil, err
			}
			for j, a := range p.Assign {
				v[j] = float64(a)
			}
		}
		ex.cols[fmt.Sprintf("cluster(%d)", k)] = v
	}
	return ex, nil
}

// checkClusters refuses more clusters than a partition can have and warns
// about samples too small for their clusters.
func checkClusters(rp runPlan, s *db.Snapshot, ref statRef, def *statDef, o *snapOut) error {
	k := int(ref.args[0])
	if k > s.N {
		return fmt.Errorf("%s: K = %d clusters but the snapshot has %d examples", ref.name, k, s.N)
	}
	heldOut := s.Population == db.Sample && !strings.HasSuffix(def.name, "_insample")
	if heldOut && k > s.N/2 {
		return fmt.Errorf("%s: K = %d clusters but each held-out half of this %d-example sample has %d examples (use K <= %d, a full snapshot, or %s_insample)",
			ref.name, k, s.N, s.N/2, s.N/2, ref.name)
	}
	if s.Population == db.Sample && s.N < 32*k {
		o.warn(fmt.Sprintf("run %s: Gradient Clustering with K = %d on samples of %d examples (%.1f per cluster, fewer than 32): the estimate is noisy; full snapshots (gvdb train --full-snapshot-every) give the paper's population",
			rp.run.Name, k, s.N, float64(s.N)/float64(k)))
	}
	return nil
}

// gcOptions are the Gradient Clustering options of this evaluation.
func (e *evaluator) gcOptions() stats.GCOptions { return gcOptions(e.opts) }

// buildRows lays out the columns (keys, then items) and the rows: one per
// grid row, one per example (per-example items), or one per group of runs
// (aggregates).
func buildRows(res *Result, s *parser.Select, p *plan, runs []*db.Run, plans []runPlan, g *grid, examples []*exampleOut) {
	// A run column whenever the query could cover several runs: a glob
	// that matches one run today still yields one.
	showRun := (p.byRun || len(runs) > 1 || len(s.Runs) > 1 || slices.ContainsFunc(s.Runs, isGlob)) && !p.aggregate
	if p.aggregate {
		res.Columns = append(res.Columns, p.configGroups...)
	}
	if showRun {
		res.Columns = append(res.Columns, "run")
	}
	if p.byLayer {
		res.Columns = append(res.Columns, "layer")
	}
	if p.exampleGroup != "" {
		res.Columns = append(res.Columns, p.exampleGroup)
	}
	res.Columns = append(res.Columns, "step")
	if p.exampleRows {
		res.Columns = append(res.Columns, "example_id")
	}
	res.Labels = append([]string(nil), res.Columns...)
	res.Kinds = append([]string(nil), res.Columns...)
	res.Keys = len(res.Columns)
	batch := runs[0].BatchSize
	for _, r := range runs {
		if r.BatchSize != batch {
			batch = 0 // runs disagree: labels keep the defaults implicit
		}
	}
	for i, it := range p.items {
		name, lbl := it.Expr.String(), label(it.Expr, batch)
		if it.Alias != nil {
			name, lbl = *it.Alias, *it.Alias
		}
		if _, ok := p.cis[i]; ok {
			// ci(stat) is two columns: stat_lo and stat_hi.
			// Named after the statistic as written (ci(variance):
			// variance_lo, variance_hi), so that they pair with its column.
			base, lbl := singleCallArg(it.Expr).String(), label(singleCallArg(it.Expr), batch)
			if it.Alias != nil {
				base, lbl = *it.Alias, *it.Alias
			}
			res.Columns = append(res.Columns, base+"_lo", base+"_hi")
			res.Labels = append(res.Labels, lbl+"_lo", lbl+"_hi")
			lvl := strconv.FormatFloat(p.cis[i].level, 'g', -1, 64)
			res.Kinds = append(res.Kinds, "ci_lo:"+p.cis[i].stat.name+":"+lvl, "ci_hi:"+p.cis[i].stat.name+":"+lvl)
			continue
		}
		res.Columns = append(res.Columns, name)
		res.Labels = append(res.Labels, lbl)
		kind := kindOf(it.Expr)
		if c, ok := singleOperand(it.Expr).(*parser.Call); ok && p.aggregate && (c.Name == "mean" || c.Name == "stddev") {
			kind = string(c.Name) + ":" + kindOf(c.Args[0])
		}
		res.Kinds = append(res.Kinds, kind)
	}
	keyCells := func(k rowKey, rp runPlan) []any {
		var row []any
		if showRun {
			row = append(row, rp.run.Name)
		}
		if p.byLayer {
			row = append(row, rp.scopes[k.scope].name)
		}
		if p.exampleGroup != "" {
			row = append(row, k.group)
		}
		return append(row, k.t)
	}
	items := func(row []any, k rowKey, rp runPlan, vals map[string]*cell, leaf func(parser.Operand) (float64, bool)) []any {
		for i, it := range p.items {
			if ci, ok := p.cis[i]; ok {
				key := ciKey(ci.stat.resolve(rp.run.BatchSize), ci.level)
				row = append(row, vals["ci_lo:"+key].mean(), vals["ci_hi:"+key].mean())
				continue
			}
			row = append(row, evalExpr(it.Expr, func(o parser.Operand) float64 {
				if leaf != nil {
					if v, ok := leaf(o); ok {
						return v
					}
				}
				return leafValue(o, k, rp, vals)
			}))
		}
		return row
	}
	switch {
	case p.exampleRows:
		slices.SortStableFunc(examples, func(a, b *exampleOut) int { return compareKeys(a.k, b.k) })
		for _, ex := range examples {
			rp := plans[ex.k.run]
			vals := g.values[ex.k]
			for j, id := range ex.ids {
				row := append(keyCells(ex.k, rp), int64(id))
				row = items(row, ex.k, rp, vals, func(o parser.Operand) (float64, bool) { return ex.value(o, j) })
				res.Rows = append(res.Rows, row)
			}
		}
	case p.aggregate:
		aggregateRows(res, p, plans, g)
	default:
		for _, k := range g.sorted() {
			rp := plans[k.run]
			res.Rows = append(res.Rows, items(keyCells(k, rp), k, rp, g.values[k], nil))
		}
	}
}

// having keeps the rows whose output columns pass the HAVING condition
// (columns by name or alias; numbers compare as numbers, text as text;
// NaN passes nothing).
func having(res *Result, c *parser.Cond) error {
	col := func(name string) int {
		for i, n := range res.Columns {
			if strings.EqualFold(n, name) {
				return i
			}
		}
		return -1
	}
	var err error
	c.Walk(func(p *parser.Pred) {
		if col(string(p.Field)) < 0 && err == nil {
			err = parser.Errorf(p.Pos, "HAVING %s: not an output column (columns: %s; give an expression a name with AS)", p.Field, strings.Join(res.Columns, ", "))
		}
	})
	if err != nil {
		return err
	}
	var keep [][]any
	for _, row := range res.Rows {
		if havingRow(c, func(f string) any { return row[col(f)] }) {
			keep = append(keep, row)
		}
	}
	res.Rows = keep
	return nil
}

func havingRow(c *parser.Cond, get func(string) any) bool {
	return c.Holds(func(p *parser.Pred) bool {
		x := get(string(p.Field))
		f, isNum := cellNumber(x)
		switch {
		case p.Bare():
			return isNum && f != 0 && !math.IsNaN(f)
		case isNum && math.IsNaN(f):
			return false
		}
		return evalPred(p, func(l parser.Literal) int {
			if l.Num != nil && isNum {
				return cmpNum(f, l)
			}
			if l.Str != nil {
				return strings.Compare(fmt.Sprint(x), *l.Str)
			}
			return strings.Compare(fmt.Sprint(x), strconv.FormatFloat(*l.Num, 'g', -1, 64))
		}, func(g string) bool { ok, _ := path.Match(g, fmt.Sprint(x)); return ok })
	})
}

// cellNumber returns a result cell as a number.
func cellNumber(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	}
	return 0, false
}

// singleCallArg returns the first argument of an item that is one call.
func singleCallArg(e *parser.Expr) *parser.Expr {
	if c, ok := singleOperand(e).(*parser.Call); ok && len(c.Args) > 0 {
		return c.Args[0]
	}
	return e
}

// ciKey names the cells of a ci() interval.
func ciKey(ref statRef, level float64) string { return fmt.Sprintf("%s@%g", ref.key(), level) }

// compareKeys orders row keys by run, scope, group and time.
func compareKeys(x, y rowKey) int {
	return cmp.Or(cmp.Compare(x.run, y.run), cmp.Compare(x.scope, y.scope), cmp.Compare(x.group, y.group), cmp.Compare(x.t, y.t))
}

// exampleOut is one snapshot scope's per-example values, for per-example
// rows.
type exampleOut struct {
	k    rowKey
	ids  []uint64
	cols map[string][]float64
}

// value returns a per-example operand's value for example j.
func (ex *exampleOut) value(o parser.Operand, j int) (float64, bool) {
	switch x := o.(type) {
	case *parser.Name:
		if v, ok := ex.cols[string(x.Name)]; ok {
			return v[j], true
		}
		if exampleNames[string(x.Name)] {
			return math.NaN(), true // an attribute this run does not record
		}
	case *parser.Call:
		if x.Name == "cluster" {
			k, _ := constant(x.Args[0])
			if v, ok := ex.cols[fmt.Sprintf("cluster(%d)", int(k))]; ok {
				return v[j], true
			}
			return math.NaN(), true
		}
	}
	return 0, false
}

// aggregateRows builds the rows of a query that aggregates runs: one per
// group of runs sharing their GROUP BY config.x values (all runs when there
// is none), scope, example group and time.
func aggregateRows(res *Result, p *plan, plans []runPlan, g *grid) {
	type groupKey struct {
		config      string
		scope       int
		group, t    int64
		configCells []any
	}
	members := map[string][]rowKey{}
	var order []groupKey
	for _, k := range g.sorted() {
		var cells []any
		for _, c := range p.configGroups {
			v, ok := ConfigValue(plans[k.run].run, strings.TrimPrefix(c, "config."))
			if !ok {
				v = ""
			}
			cells = append(cells, v)
		}
		gk := groupKey{config: fmt.Sprint(cells...), scope: k.scope, group: k.group, t: k.t, configCells: cells}
		id := fmt.Sprint(gk.config, "|", gk.scope, "|", gk.group, "|", gk.t)
		if members[id] == nil {
			order = append(order, gk)
		}
		members[id] = append(members[id], k)
	}
	sort.SliceStable(order, func(a, b int) bool {
		for i := range order[a].configCells {
			if c := compareCells(order[a].configCells[i], order[b].configCells[i]); c != 0 {
				return c < 0
			}
		}
		return compareKeys(rowKey{scope: order[a].scope, group: order[a].group, t: order[a].t}, rowKey{scope: order[b].scope, group: order[b].group, t: order[b].t}) < 0
	})
	for _, gk := range order {
		ks := members[fmt.Sprint(gk.config, "|", gk.scope, "|", gk.group, "|", gk.t)]
		row := append([]any(nil), gk.configCells...)
		if p.byLayer {
			row = append(row, plans[ks[0].run].scopes[gk.scope].name)
		}
		if p.exampleGroup != "" {
			row = append(row, gk.group)
		}
		row = append(row, gk.t)
		for _, it := range p.items {
			row = append(row, evalExpr(it.Expr, func(o parser.Operand) float64 {
				v, missing := aggregateValue(o, ks, plans, g)
				if len(missing) > 0 {
					res.Warnings = append(res.Warnings, fmt.Sprintf("%s at step %d covers %d of %d runs: no finite value in %s",
						o, gk.t, len(ks)-len(missing), len(ks), strings.Join(missing, ", ")))
				}
				return v
			}))
		}
		res.Rows = append(res.Rows, row)
	}
}

// aggregateValue computes an aggregate over the runs of a group (their
// rows ks): mean and stddev (sample, n−1) of the finite values, count(run)
// of the runs in the group. missing names the runs whose value is NaN or
// Inf, left out of mean and stddev.
func aggregateValue(o parser.Operand, ks []rowKey, plans []runPlan, g *grid) (v float64, missing []string) {
	c, ok := o.(*parser.Call)
	if !ok {
		return math.NaN(), nil
	}
	if c.Name == "count" {
		return float64(len(ks)), nil
	}
	var vals []float64
	for _, k := range ks {
		rp, cells := plans[k.run], g.values[k]
		v := evalExpr(c.Args[0], func(o parser.Operand) float64 { return leafValue(o, k, rp, cells) })
		if math.IsNaN(v) || math.IsInf(v, 0) {
			missing = append(missing, rp.run.Name)
			continue
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return math.NaN(), missing
	}
	mean := 0.0
	for _, v := range vals {
		mean += v / float64(len(vals))
	}
	if c.Name == "mean" {
		return mean, missing
	}
	if len(vals) < 2 {
		return math.NaN(), missing
	}
	ss := 0.0
	for _, v := range vals {
		ss += (v - mean) * (v - mean)
	}
	return math.Sqrt(ss / float64(len(vals)-1)), missing
}

// kindOf returns the first statistic or scalar an expression uses ("" for
// none).
func kindOf(e *parser.Expr) string {
	kind := ""
	e.Walk(func(o parser.Operand) {
		if kind != "" {
			return
		}
		if ref, ok, _ := statRefOf(o); ok {
			kind = ref.name
		} else if n, ok := o.(*parser.Name); ok && n.Name != "step" {
			kind = string(n.Name)
		}
	})
	return kind
}

// leafValue is the value of a name or call in one row.
func leafValue(o parser.Operand, k rowKey, rp runPlan, vals map[string]*cell) float64 {
	ref, isStat, _ := statRefOf(o)
	if !isStat {
		x, ok := o.(*parser.Name)
		switch {
		case !ok:
			return math.NaN()
		case x.Name == "step":
			return float64(k.t)
		}
		if c := vals["scalar:"+string(x.Name)]; c != nil {
			return c.mean()
		}
		return math.NaN()
	}
	if c := vals[ref.resolve(rp.run.BatchSize).key()]; c != nil {
		return c.mean()
	}
	return math.NaN()
}

// isGlob reports whether a FROM name is a pattern.
func isGlob(pat string) bool { return strings.ContainsAny(pat, "*?[") }

// resolveRuns expands FROM (names and globs) and the WHERE run filter.
func resolveRuns(d *db.DB, s *parser.Select, p *plan) ([]*db.Run, error) {
	names, err := d.RunNames()
	if err != nil {
		return nil, err
	}
	var out, named []*db.Run
	seen := map[string]bool{}
	for _, pat := range s.Runs {
		var matched []string
		if isGlob(pat) {
			if _, err := path.Match(pat, ""); err != nil {
				return nil, parser.Errorf(s.Pos, "bad run pattern %q: %v", pat, err)
			}
			for _, n := range names {
				if ok, _ := path.Match(pat, n); ok {
					matched = append(matched, n)
				}
			}
			if len(matched) == 0 {
				return nil, parser.Errorf(s.Pos, "no run matches %q (runs: %s)", pat, strings.Join(names, ", "))
			}
		} else {
			matched = []string{pat}
		}
		for _, n := range matched {
			if seen[n] || !p.runOK(n) {
				continue
			}
			seen[n] = true
			r, err := d.Run(n)
			if err != nil {
				return nil, &parser.Error{Pos: s.Pos, Msg: err.Error(), Err: err}
			}
			named = append(named, r)
		}
	}
	if err := checkConfigKeys(p, named); err != nil {
		return nil, err
	}
	for _, r := range named {
		if p.configOK == nil || p.configOK(r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, parser.Errorf(s.Pos, "the WHERE clause leaves no run")
	}
	return out, nil
}

// planRun resolves the layer scopes and statistic defaults for one run.
func planRun(r *db.Run, p *plan) (runPlan, error) {
	rp := runPlan{run: r}
	for _, lit := range p.layerLit {
		if _, err := r.Layer(lit.name); err != nil {
			return rp, &parser.Error{Pos: lit.pos, Msg: err.Error(), Err: err}
		}
	}
	var layers []string
	for _, l := range r.Layers {
		if p.layerOK(l.Name) {
			layers = append(layers, l.Name)
		}
	}
	if len(layers) == 0 {
		return rp, parser.Errorf(p.sel.Pos, "no layer of run %q passes the WHERE clause (layers: %s)", r.Name, strings.Join(r.LayerNames(), ", "))
	}
	if p.byLayer {
		for _, l := range layers {
			rp.scopes = append(rp.scopes, scope{name: l, layers: []string{l}})
		}
	} else {
		rp.scopes = []scope{{layers: layers}}
	}
	batch := r.BatchSize
	if batch <= 0 {
		batch = 1
	}
	for _, s := range p.stats {
		rp.refs = append(rp.refs, s.resolve(batch))
	}
	return rp, nil
}

// decodeAll decodes blocks in parallel.
func decodeAll(blocks []db.LayerBlock) (map[string]*codec.Block, error) {
	out := make([]*codec.Block, len(blocks))
	errs := make([]error, len(blocks))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, b := range blocks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = codec.Decode(b.Data)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("layer %s: %w", b.Layer, errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m := make(map[string]*codec.Block, len(out))
	for i, b := range blocks {
		m[b.Layer] = out[i]
	}
	return m, nil
}

// scanScalars reads the step scalars the query names into the grid. When
// the query also computes statistics, rows come from snapshots: a scalar
// only fills rows that exist.
func (e *evaluator) scanScalars(rp runPlan, ri int) error {
	p, g := e.p, e.g
	// Grouped by an example attribute, a step's scalar goes to each of its
	// rows, one per group.
	var rows map[rowKey][]rowKey
	if len(p.stats) > 0 && p.exampleGroup != "" {
		rows = map[rowKey][]rowKey{}
		for k := range g.values {
			if k.run == ri {
				base := k
				base.group = noGroup
				rows[base] = append(rows[base], k)
			}
		}
	}
	add := func(step int64, name string, v float64) {
		for si := range rp.scopes {
			k := g.key(ri, si, step)
			switch {
			case rows != nil:
				for _, rk := range rows[k] {
					g.add(rk, "scalar:"+name, v)
				}
			case len(p.stats) == 0 || g.values[k] != nil: // with statistics, only rows that exist
				g.add(k, "scalar:"+name, v)
			}
		}
	}
	found := map[string]bool{}
	err := e.d.Scalars(rp.run, e.window(), func(r db.ScalarRow) error {
		if !p.stepPred(r.Step) {
			return nil
		}
		e.seen(ri, r.Step)
		for _, n := range p.scalars {
			if v, ok := r.Values[n]; ok {
				found[n] = true
				add(r.Step, n, v)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, n := range p.scalars {
		if !found[n] {
			// Not in this window: an error only if the run never recorded it.
			return checkScalar(e.d, rp.run, n, p.scalarAt[n])
		}
	}
	return nil
}

// checkScalar returns an error naming the nearest scalar or statistic if
// run never recorded the scalar name.
func checkScalar(d *db.DB, r *db.Run, name string, pos lexer.Position) error {
	run := r.Name
	all := map[string]bool{}
	err := d.Scalars(r, db.AllSteps, func(r db.ScalarRow) error {
		for k := range r.Values {
			all[k] = true
		}
		return nil
	})
	if err != nil || all[name] {
		return err
	}
	names := make([]string, 0, len(all))
	for k := range all {
		names = append(names, k)
	}
	sort.Strings(names)
	msg := fmt.Sprintf("unknown statistic or scalar %q in run %q", name, run)
	if s := db.Nearest(name, append(append([]string(nil), names...), statNames()...)); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	if len(names) > 0 {
		msg += " (scalars: " + strings.Join(names, ", ") + ")"
	} else {
		msg += " (the run has no scalars)"
	}
	return &parser.Error{Pos: pos, Msg: msg}
}

// orderAndLimit applies ORDER BY and LIMIT to a result's rows.
func orderAndLimit(res *Result, s *parser.Select) error {
	if len(s.Order) > 0 {
		type key struct {
			col  int
			desc bool
		}
		var ks []key
		for _, o := range s.Order {
			name := o.Expr.String()
			col := -1
			for i, c := range res.Columns {
				if strings.EqualFold(c, name) {
					col = i
				}
			}
			// An expression that has an alias sorts by the aliased column.
			for _, it := range s.Items {
				if it.Expr.String() == name && it.Alias != nil {
					for j, c := range res.Columns {
						if c == *it.Alias {
							col = j
						}
					}
				}
			}
			if col < 0 {
				return parser.Errorf(s.Pos, "ORDER BY %s: not an output column (columns: %s)", name, strings.Join(res.Columns, ", "))
			}
			ks = append(ks, key{col, o.Desc})
		}
		sort.SliceStable(res.Rows, func(a, b int) bool {
			for _, k := range ks {
				c := compareCells(res.Rows[a][k.col], res.Rows[b][k.col])
				if c != 0 {
					return (c < 0) != k.desc
				}
			}
			return false
		})
	}
	if s.Limit != nil && *s.Limit < float64(len(res.Rows)) {
		res.Rows = res.Rows[:int(*s.Limit)]
	}
	return nil
}

// compareCells orders numbers (NaN last) and strings.
func compareCells(a, b any) int {
	num := func(v any) (float64, bool) {
		switch x := v.(type) {
		case float64:
			return x, true
		case int64:
			return float64(x), true
		}
		return 0, false
	}
	x, xn := num(a)
	y, yn := num(b)
	if xn && yn {
		switch {
		case math.IsNaN(x) && math.IsNaN(y):
			return 0
		case math.IsNaN(x):
			return 1
		case math.IsNaN(y):
			return -1
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

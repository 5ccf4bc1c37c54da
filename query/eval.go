package query

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/participle/v2/lexer"

	"gvdb/db"
	"gvdb/ingest/codec"
	"gvdb/query/stats"
)

// Result is a statement's answer: a table, warnings beside it (never
// instead of it), and for PLOT where to draw it.
type Result struct {
	Columns []string
	// Labels describe the columns for figures: each statistic with its
	// default arguments filled in (nvar -> nvar(128)) when every run
	// agrees on them.
	Labels   []string
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
}

// EvalStats measure an evaluation.
type EvalStats struct {
	Snapshots int
	BytesRead int64
	Read      time.Duration // reading blocks from the store
	Decode    time.Duration // decoding blocks (wall time, decoded in parallel)
	Compute   time.Duration // statistics
}

// Options tune evaluation.
type Options struct {
	// GCSeed seeds Gradient Clustering (default 1).
	GCSeed uint64
	// GCRounds is the number of GC rounds (default 10).
	GCRounds int
	// Progress, if set, is told after each snapshot how many of the
	// query's snapshots are done.
	Progress func(done, total int)
}

// Eval evaluates one statement against a store.
func Eval(ctx context.Context, d *db.DB, st Statement, opts Options) (*Result, error) {
	switch s := st.(type) {
	case *Show:
		return evalShow(d, s)
	case *Select:
		return evalSelect(ctx, d, s, opts)
	case *Plot:
		res, err := evalSelect(ctx, d, s.AsSelect(), opts)
		if err != nil {
			return nil, err
		}
		res.Plot = &PlotSpec{File: s.To, Scale: strings.ToLower(string(s.Scale)), Query: s.String()}
		return res, nil
	}
	return nil, fmt.Errorf("unknown statement %T", st)
}

func evalShow(d *db.DB, s *Show) (*Result, error) {
	what := string(s.What)
	if what != "RUNS" && s.From == nil {
		return nil, errorf(s.Pos, "SHOW %s needs FROM 'run'", what)
	}
	res := &Result{}
	switch what {
	case "RUNS":
		runs, err := d.Runs()
		if err != nil {
			return nil, err
		}
		res.Columns = []string{"run", "model", "data", "status", "steps", "batch", "lr", "layers", "params", "snapshots", "examples", "created"}
		for _, r := range runs {
			infos, err := d.SnapshotInfos(r.Name, db.AllSteps)
			if err != nil {
				return nil, err
			}
			n := int64(0)
			if len(infos) > 0 {
				n = int64(infos[0].N)
			}
			res.Rows = append(res.Rows, []any{r.Name, r.Model, r.Dataset, r.ShownStatus(), r.Steps, int64(r.BatchSize), r.LR,
				int64(len(r.Layers)), int64(r.TotalParams()), int64(len(infos)), n, r.Created.UTC().Format("2006-01-02 15:04:05")})
		}
	case "LAYERS":
		r, err := d.Run(*s.From)
		if err != nil {
			return nil, posErr(s.Pos, err)
		}
		res.Columns = []string{"layer", "kind", "shape", "params"}
		for _, l := range r.Layers {
			dims := make([]string, len(l.Shape))
			for i, n := range l.Shape {
				dims[i] = fmt.Sprint(n)
			}
			res.Rows = append(res.Rows, []any{l.Name, string(l.Kind), strings.Join(dims, "x"), int64(l.Params)})
		}
	case "STEPS":
		infos, err := d.SnapshotInfos(*s.From, db.AllSteps)
		if err != nil {
			return nil, posErr(s.Pos, err)
		}
		res.Columns = []string{"step", "examples", "layers", "stored_bytes"}
		for _, in := range infos {
			var b int64
			for _, x := range in.Bytes {
				b += x
			}
			res.Rows = append(res.Rows, []any{in.Step, int64(in.N), int64(len(in.Layers)), b})
		}
	case "SCALARS":
		type agg struct {
			n           int64
			first, last int64
		}
		seen := map[string]*agg{}
		err := d.Scalars(*s.From, db.AllSteps, func(r db.ScalarRow) error {
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
	var qe *Error
	if errors.As(err, &qe) {
		return err
	}
	return &Error{Pos: pos, Msg: err.Error()}
}

// rowKey identifies an output row.
type rowKey struct {
	run   int
	scope int
	t     int64 // step, or window start
}

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
	return rowKey{run, scope, step}
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
			v, err := statValue(ref, m)
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
		return x.t < y.t
	})
	return g.order
}

func evalSelect(ctx context.Context, d *db.DB, s *Select, opts Options) (*Result, error) {
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
	res := &Result{}
	warned := map[string]bool{}
	warn := func(w string) {
		if !warned[w] {
			warned[w] = true
			res.Warnings = append(res.Warnings, w)
		}
	}
	progress, err := progressFunc(d, p, runs, opts)
	if err != nil {
		return nil, err
	}
	g := newGrid(p.window)
	var plans []runPlan
	for ri, r := range runs {
		rp, err := planRun(r, p)
		if err != nil {
			return nil, err
		}
		plans = append(plans, rp)
		if len(p.stats) > 0 {
			if err := scanStats(ctx, d, p, rp, ri, g, opts, &res.Stats, progress, warn); err != nil {
				return nil, err
			}
		}
		if len(p.scalars) > 0 {
			if err := scanScalars(d, p, rp, ri, g); err != nil {
				return nil, err
			}
		}
	}
	if err := g.finishPooled(plans); err != nil {
		return nil, err
	}
	buildRows(res, p, runs, plans, g)
	if err := orderAndLimit(res, s); err != nil {
		return nil, err
	}
	return res, nil
}

// progressFunc returns what to call after each snapshot, counting the
// query's snapshots first when opts asks for progress.
func progressFunc(d *db.DB, p *plan, runs []*db.Run, opts Options) (func(), error) {
	if opts.Progress == nil || len(p.stats) == 0 {
		return func() {}, nil
	}
	total, done := 0, 0
	for _, r := range runs {
		infos, err := d.SnapshotInfos(r.Name, db.Window{From: p.stepLo, To: p.stepHi})
		if err != nil {
			return nil, err
		}
		for _, in := range infos {
			if p.stepPred(in.Step) {
				total++
			}
		}
	}
	return func() {
		done++
		opts.Progress(done, total)
	}, nil
}

// buildRows lays out the columns (keys, then items) and one row per grid
// row.
func buildRows(res *Result, p *plan, runs []*db.Run, plans []runPlan, g *grid) {
	showRun := p.byRun || len(runs) > 1
	if showRun {
		res.Columns = append(res.Columns, "run")
	}
	if p.byLayer {
		res.Columns = append(res.Columns, "layer")
	}
	res.Columns = append(res.Columns, "step")
	res.Labels = append([]string(nil), res.Columns...)
	batch := runs[0].BatchSize
	for _, r := range runs {
		if r.BatchSize != batch {
			batch = 0 // runs disagree: labels keep the defaults implicit
		}
	}
	for _, it := range p.items {
		name, lbl := it.Expr.String(), label(it.Expr, batch)
		if it.Alias != nil {
			name, lbl = *it.Alias, *it.Alias
		}
		res.Columns = append(res.Columns, name)
		res.Labels = append(res.Labels, lbl)
	}
	for _, k := range g.sorted() {
		rp := plans[k.run]
		vals := g.values[k]
		var row []any
		if showRun {
			row = append(row, rp.run.Name)
		}
		if p.byLayer {
			row = append(row, rp.scopes[k.scope].name)
		}
		row = append(row, k.t)
		for _, it := range p.items {
			row = append(row, evalExpr(it.Expr, func(o Operand) float64 { return leafValue(o, k, rp, vals) }))
		}
		res.Rows = append(res.Rows, row)
	}
}

// leafValue is the value of a name or call in one row.
func leafValue(o Operand, k rowKey, rp runPlan, vals map[string]*cell) float64 {
	var ref statRef
	switch x := o.(type) {
	case *Name:
		n := string(x.Name)
		if n == "step" {
			return float64(k.t)
		}
		if !isStat(n) {
			if c := vals["scalar:"+n]; c != nil {
				return c.mean()
			}
			return math.NaN()
		}
		ref = statRef{name: n}
	case *Call:
		n := string(x.Name)
		pooledCall := false
		if n == "pooled" {
			pooledCall = true
			arg := x.Args[0]
			if bn := bareName(arg); bn != "" {
				ref = statRef{name: bn, pooled: true}
				break
			}
			c, _ := singleCall(arg)
			x, n = c, string(c.Name)
		}
		ref = statRef{name: n, pooled: pooledCall}
		for _, a := range x.Args {
			v, _ := constant(a)
			ref.args = append(ref.args, v)
		}
	default:
		return math.NaN()
	}
	if c := vals[ref.resolve(rp.run.BatchSize).key()]; c != nil {
		return c.mean()
	}
	return math.NaN()
}

// resolveRuns expands FROM (names and globs) and the WHERE run filter.
func resolveRuns(d *db.DB, s *Select, p *plan) ([]*db.Run, error) {
	names, err := d.RunNames()
	if err != nil {
		return nil, err
	}
	var out []*db.Run
	seen := map[string]bool{}
	for _, pat := range s.Runs {
		var matched []string
		if strings.ContainsAny(pat, "*?[") {
			if _, err := path.Match(pat, ""); err != nil {
				return nil, errorf(s.Pos, "bad run pattern %q: %v", pat, err)
			}
			for _, n := range names {
				if ok, _ := path.Match(pat, n); ok {
					matched = append(matched, n)
				}
			}
			if len(matched) == 0 {
				return nil, errorf(s.Pos, "no run matches %q (runs: %s)", pat, strings.Join(names, ", "))
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
				return nil, &Error{Pos: s.Pos, Msg: err.Error()}
			}
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, errorf(s.Pos, "the WHERE clause leaves no run")
	}
	return out, nil
}

// planRun resolves the layer scopes and statistic defaults for one run.
func planRun(r *db.Run, p *plan) (runPlan, error) {
	rp := runPlan{run: r}
	for _, lit := range p.layerLit {
		if _, err := r.Layer(lit.name); err != nil {
			return rp, &Error{Pos: lit.pos, Msg: err.Error()}
		}
	}
	var layers []string
	for _, l := range r.Layers {
		if p.layerOK(l.Name) {
			layers = append(layers, l.Name)
		}
	}
	if len(layers) == 0 {
		return rp, errorf(p.sel.Pos, "no layer of run %q passes the WHERE clause (layers: %s)", r.Name, strings.Join(r.LayerNames(), ", "))
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

// scanStats reads the run's snapshots in the plan's window, decodes the
// blocks it needs in parallel, and reports each statistic per snapshot and
// scope (or, for pooled ones, the snapshot's moments).
func scanStats(ctx context.Context, d *db.DB, p *plan, rp runPlan, ri int, g *grid, opts Options, st *EvalStats,
	progress func(), warn func(string)) error {
	var need stats.Need
	gram := false
	for _, ref := range rp.refs {
		def := statistics[ref.name]
		need.Coords = need.Coords || def.coords
		need.Inner = need.Inner || def.inner
		need.Mean = need.Mean || ref.pooled
		gram = gram || def.gram
	}
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
	readStart := time.Now()
	err := d.Snapshots(rp.run.Name, db.Window{From: p.stepLo, To: p.stepHi}, all, func(s *db.Snapshot) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !p.stepPred(s.Step) {
			readStart = time.Now()
			return nil
		}
		st.Read += time.Since(readStart)
		st.Snapshots++
		t0 := time.Now()
		blocks, err := decodeAll(s)
		if err != nil {
			return fmt.Errorf("run %q step %d: %w", rp.run.Name, s.Step, err)
		}
		for _, b := range s.Blocks {
			st.BytesRead += int64(len(b.Data))
		}
		st.Decode += time.Since(t0)
		t1 := time.Now()
		for si, sc := range rp.scopes {
			var layers []stats.Layer
			for _, l := range sc.layers {
				if b := blocks[l]; b != nil {
					layers = append(layers, stats.Layer{Name: l, Block: b})
				}
			}
			if len(layers) == 0 {
				continue
			}
			m, err := stats.Compute(layers, s.Step, need)
			if err != nil {
				return fmt.Errorf("run %q step %d: %w", rp.run.Name, s.Step, err)
			}
			for _, w := range m.Warnings {
				warn(fmt.Sprintf("run %s: %s", rp.run.Name, w))
			}
			var gram *stats.Gram
			clusterings := map[int]*stats.Clustering{}
			for _, ref := range rp.refs {
				if ref.pooled {
					if err := g.pool(g.key(ri, si, s.Step), ref.key(), m); err != nil {
						return err
					}
					continue
				}
				def := statistics[ref.name]
				var v float64
				if def.gram {
					if m.NonFinite {
						v = math.NaN()
					} else {
						if gram == nil {
							if gram, err = stats.NewGram(layers); err != nil {
								return fmt.Errorf("run %q step %d: %w", rp.run.Name, s.Step, err)
							}
						}
						k := int(ref.args[0])
						if k > m.N {
							return fmt.Errorf("run %q step %d: %s: K = %d clusters but the snapshot has %d examples", rp.run.Name, s.Step, ref.name, k, m.N)
						}
						c := clusterings[k]
						if c == nil {
							if c, err = stats.Cluster(gram, layers[0].Block.IDs, k, stats.GCOptions{Seed: opts.GCSeed, Rounds: opts.GCRounds}); err != nil {
								return err
							}
							clusterings[k] = c
						}
						switch ref.name {
						case "gc_variance":
							v = c.Variance(ref.args[1], m.D)
						case "gc_nvar":
							if v, err = stats.GCNVar(layers, c, m, ref.args[1]); err != nil {
								return err
							}
						case "gc_distortion":
							v = c.Objective
						}
					}
				} else if v, err = statValue(ref, m); err != nil {
					return err
				}
				g.add(g.key(ri, si, s.Step), ref.key(), v)
			}
		}
		st.Compute += time.Since(t1)
		progress()
		readStart = time.Now()
		return nil
	})
	if err != nil {
		var nf *db.NotFoundError
		if errors.As(err, &nf) {
			return &Error{Pos: p.sel.Pos, Msg: err.Error()}
		}
		return err
	}
	return nil
}

// statValue evaluates a moment-based statistic.
func statValue(ref statRef, m *stats.Moments) (float64, error) {
	arg := func(i int) float64 { return ref.args[i] }
	switch ref.name {
	case "variance":
		return m.Variance(arg(0)), nil
	case "nvar":
		return m.NVar(arg(0))
	case "gns":
		return m.GNS(), nil
	case "snr":
		return m.SNR(arg(0))
	case "norm":
		return m.Norm(), nil
	case "example_norm":
		return m.ExampleNorm(), nil
	case "norm_test":
		return m.NormTest(arg(0)), nil
	case "inner_test":
		return m.InnerTest(arg(0))
	case "ortho_test":
		return m.OrthoTest(arg(0))
	case "examples":
		return float64(m.N), nil
	case "params":
		return float64(m.D), nil
	}
	return math.NaN(), fmt.Errorf("statistic %s has no moment form", ref.name)
}

// decodeAll decodes a snapshot's blocks in parallel.
func decodeAll(s *db.Snapshot) (map[string]*codec.Block, error) {
	out := make([]*codec.Block, len(s.Blocks))
	errs := make([]error, len(s.Blocks))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, b := range s.Blocks {
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
	for i, b := range s.Blocks {
		m[b.Layer] = out[i]
	}
	return m, nil
}

// scanScalars reads the step scalars the query names into the grid. When
// the query also computes statistics, rows come from snapshots: a scalar
// only fills rows that exist.
func scanScalars(d *db.DB, p *plan, rp runPlan, ri int, g *grid) error {
	add := func(step int64, name string, v float64) {
		for si := range rp.scopes {
			k := g.key(ri, si, step)
			if len(p.stats) > 0 && g.values[k] == nil {
				continue
			}
			g.add(k, "scalar:"+name, v)
		}
	}
	found := map[string]bool{}
	err := d.Scalars(rp.run.Name, db.Window{From: p.stepLo, To: p.stepHi}, func(r db.ScalarRow) error {
		if !p.stepPred(r.Step) {
			return nil
		}
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
			return checkScalar(d, rp.run.Name, n, p.scalarAt[n])
		}
	}
	return nil
}

// checkScalar returns an error naming the nearest scalar or statistic if
// run never recorded the scalar name.
func checkScalar(d *db.DB, run, name string, pos lexer.Position) error {
	all := map[string]bool{}
	err := d.Scalars(run, db.AllSteps, func(r db.ScalarRow) error {
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
	return &Error{Pos: pos, Msg: msg}
}

// orderAndLimit applies ORDER BY and LIMIT to a result's rows.
func orderAndLimit(res *Result, s *Select) error {
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
				return errorf(s.Pos, "ORDER BY %s: not an output column (columns: %s)", name, strings.Join(res.Columns, ", "))
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
	if s.Limit != nil {
		if *s.Limit < 0 {
			return errorf(s.Pos, "LIMIT must be >= 0")
		}
		if *s.Limit < len(res.Rows) {
			res.Rows = res.Rows[:*s.Limit]
		}
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

package query

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"gvdb/db"
	"gvdb/db/bufpool"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/query/parser"
)

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
	// The workers read the rollups (Later), in parallel.
	sel := db.Select{Layers: all, Anchor: need.anchor, Filter: e.keep, Rollups: useRollups, NoBlocks: useRollups, Attributes: true,
		Buffer: rollupBuffers.Get, Later: true}
	if !need.mean && !pooled {
		// Per-snapshot statistics need no float32 sds: about half the
		// bytes of the rollups.
		sel.Head = stats.RollupHead
	}
	workers := e.opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if need.gc {
		workers = 1
	}
	if workers > 1 {
		// The workers are the parallelism: one OpenBLAS thread each.
		defer stats.SerialBLAS()()
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
		// Stats are also added to by the workers' apply: under mu.
		mu.Lock()
		err := firstEr
		e.res.Stats.Read += time.Since(readStart)
		mu.Unlock()
		if err != nil {
			return err
		}
		i := idx
		idx++
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := e.process(rp, ri, s, sel, all, need, pooled, useRollups)
			// Nothing refers to the rollups' bytes once the snapshot is
			// processed (statistics hold no raw bytes; pooled moments
			// are float64 copies).
			for _, lb := range s.Rollups {
				rollupBuffers.Put(lb.Data)
			}
			s.Rollups = nil
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
	read     time.Duration
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
	st.Read += o.read
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
func (e *evaluator) process(rp runPlan, ri int, s *db.Snapshot, sel db.Select, all []string, need needs, pooled, useRollups bool) *snapOut {
	o := &snapOut{step: s.Step, run: ri}
	fail := func(err error) *snapOut { o.err = err; return o }
	var rolls map[string]*stats.Rollup
	if useRollups {
		t := time.Now()
		if err := e.d.ReadRollups(s, sel); err != nil {
			return fail(fmt.Errorf("run %q: %w", rp.run.Name, err))
		}
		o.read = time.Since(t)
	}
	t0 := time.Now()
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
			if err := e.ctx.Err(); err != nil {
				return fail(err)
			}
			in := scopeInput{layers: scopeLayers(rp.run, sc, blocks), anchor: scopeLayers(rp.run, sc, anchors), group: g.value, attrs: attrs, rows: g.rows}
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
				if qe := (*parser.Error)(nil); errors.As(err, &qe) && qe.Pos.Line > 0 {
					return fail(err) // positioned, and it names the run and step
				}
				return fail(fmt.Errorf("run %q step %d: %w", rp.run.Name, s.Step, err))
			}
		}
	}
	o.compute = time.Since(t1)
	return o
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
		if err := e.ctx.Err(); err != nil {
			return err
		}
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

// rollupBuffers holds the buffers rollups are read into.
var rollupBuffers bufpool.Pool[byte]

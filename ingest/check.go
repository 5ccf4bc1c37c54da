package ingest

import (
	"fmt"
	"math"
	"slices"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
)

// CheckReport is what Check found.
type CheckReport struct {
	Runs, Snapshots, Blocks, ScalarRows int
	Bytes                               int64
	// Faults describe damage; Notes what is expected but worth saying
	// (a killed writer's invisible leftovers).
	Faults, Notes []string
}

// Check reads every key, run, step-scalar row, snapshot manifest and block
// of a store, verifying checksums and decoding every block, and checks
// each block's shape and examples against its run's schema, its
// snapshot's manifest and the snapshot's other blocks. It reports every
// fault it finds rather than stopping at the first; progress, if set, is
// told after each run.
func Check(d *db.DB, progress func(done, total int)) (*CheckReport, error) {
	rep := &CheckReport{}
	faults, notes, err := d.KeyFaults()
	if err != nil {
		return nil, err
	}
	rep.Faults, rep.Notes = faults, notes
	runs, err := d.Runs()
	if err != nil {
		rep.Faults = append(rep.Faults, err.Error())
		return rep, nil
	}
	for ri, r := range runs {
		rep.Runs++
		if err := d.Scalars(r, db.AllSteps, func(db.ScalarRow) error { rep.ScalarRows++; return nil }); err != nil {
			rep.Faults = append(rep.Faults, fmt.Sprintf("run %s: %v", r.Name, err))
		}
		err := d.Snapshots(r, db.AllSteps, db.Select{Anchor: true, Rollups: true}, func(s *db.Snapshot) error {
			rep.Snapshots++
			checkSnapshot(rep, r, s)
			return nil
		})
		if err != nil {
			rep.Faults = append(rep.Faults, fmt.Sprintf("run %s: %v", r.Name, err))
		}
		if progress != nil {
			progress(ri+1, len(runs))
		}
	}
	return rep, nil
}

func checkSnapshot(rep *CheckReport, r *db.Run, s *db.Snapshot) {
	fault := func(format string, args ...any) {
		rep.Faults = append(rep.Faults, fmt.Sprintf("%s@%d: ", r.Name, s.Step)+fmt.Sprintf(format, args...))
	}
	if len(s.Blocks) != len(r.Layers) {
		fault("%d blocks for the schema's %d layers", len(s.Blocks), len(r.Layers))
	}
	if s.HasAnchor && len(s.Anchor) != len(s.Blocks) {
		fault("%d anchor blocks for %d blocks", len(s.Anchor), len(s.Blocks))
	}
	var ids []uint64
	decoded := map[string]*codec.Block{}
	for i, lb := range append(s.Blocks, s.Anchor...) {
		rep.Blocks++
		rep.Bytes += int64(len(lb.Data))
		what := lb.Layer
		if i >= len(s.Blocks) {
			what += " (anchor)"
		}
		b, err := codec.Decode(lb.Data)
		if err != nil {
			fault("%s: %v", what, err)
			continue
		}
		l, err := r.Layer(lb.Layer)
		switch {
		case err != nil:
			fault("%s: %v", what, err)
		case b.Params() != l.Params:
			fault("%s: %d parameters, the schema says %d", what, b.Params(), l.Params)
		case b.N() != s.N:
			fault("%s: %d examples, the manifest says %d", what, b.N(), s.N)
		case ids == nil:
			ids = b.IDs
		case !slices.Equal(ids, b.IDs):
			fault("%s: example ids differ from the snapshot's first block", what)
		}
		if i < len(s.Blocks) {
			decoded[lb.Layer] = b
		}
	}
	// Rollups agree with their blocks (to rounding: 1e-12 relative; float32
	// vectors are recomputed and rounded the same way).
	for _, rl := range s.Rollups {
		rep.Bytes += int64(len(rl.Data))
		b := decoded[rl.Layer]
		l, err := r.Layer(rl.Layer)
		if err != nil || b == nil {
			fault("rollup of %s without a readable block", rl.Layer)
			continue
		}
		got, err := stats.UnmarshalRollup(rl.Data, s.N, l.Params)
		if err != nil {
			fault("%s rollup: %v", rl.Layer, err)
			continue
		}
		if _, _, err := got.Sums(); err != nil {
			fault("%s rollup: %v", rl.Layer, err)
			continue
		}
		want, err := stats.Recompute(stats.Layer{Name: rl.Layer, Block: b}, got)
		if err != nil {
			fault("%s rollup: %v", rl.Layer, err)
			continue
		}
		if !rollupsAgree(got, want) {
			fault("%s rollup disagrees with its block", rl.Layer)
		}
	}
}

// rollupsAgree compares two rollups to 1e-12 relative (NaN equal to NaN).
func rollupsAgree(a, b *stats.Rollup) bool {
	// NaN equals NaN here, and ±Inf itself: a gradient with NaN or Inf
	// (kept with a warning) gives the same non-finite sums both ways.
	near := func(x, y, scale float64) bool {
		if math.IsNaN(x) || math.IsNaN(y) {
			return math.IsNaN(x) && math.IsNaN(y)
		}
		return x == y || math.Abs(x-y) <= 1e-12*scale
	}
	vec := func(x, y []float64) bool {
		if len(x) != len(y) {
			return false
		}
		scale := 0.0
		for _, v := range y {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				scale = max(scale, math.Abs(v))
			}
		}
		for i := range x {
			if !near(x[i], y[i], scale) {
				return false
			}
		}
		return true
	}
	as, aq, err := a.Sums()
	if err != nil {
		return false
	}
	bs, bq, err := b.Sums()
	if err != nil {
		return false
	}
	return a.NonFinite == b.NonFinite && a.Vectors() == b.Vectors() && near(a.SumSqNorm, b.SumSqNorm, math.Abs(b.SumSqNorm)) &&
		near(a.SumNormSq, b.SumNormSq, math.Abs(b.SumNormSq)) && vec(a.SqNorms, b.SqNorms) && vec(a.Inner, b.Inner) &&
		vec(as, bs) && vec(aq, bq)
}

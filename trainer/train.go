package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/ingest"
)

// Config is a training run.
type Config struct {
	// Config holds the model's name (a row of Models), the data set's, the
	// optimizer's settings and the snapshot schedule: SnapshotEvery takes
	// a snapshot of SnapshotExamples training examples drawn at random at
	// every multiple of it (0: none); FullSnapshotEvery a full snapshot
	// (every training example, in dataset order; at a step with both, the
	// full snapshot is taken: it contains the sample); SVRGEvery keeps an
	// SVRG anchor θ̃, refreshed to the current parameters at every
	// multiple of it, and stores every snapshot's examples' gradients at
	// θ̃ too (0: none). SnapshotStrata K draws the samples stratified by
	// the K clusters fitted (by SnapshotStrataMethod) at the full
	// snapshots at multiples of SnapshotStrataEvery (strata.go).
	db.Config
	// Hidden are the model's hidden widths (Spec).
	Hidden      []int
	Train, Test *Dataset
	// EvalExamples bounds the test examples used for test accuracy (0:
	// the whole test set).
	EvalExamples int
}

// Spec is the model the configuration trains.
func (c *Config) Spec() Spec { return Spec{Kind: c.Model, Hidden: c.Hidden} }

// Validate checks the configuration before any work starts.
func (c *Config) Validate() error {
	switch {
	case c.Train == nil || c.Train.Len() == 0:
		return errors.New("no training data")
	case c.Steps < 1:
		return fmt.Errorf("steps must be at least 1, got %d", c.Steps)
	case c.BatchSize < 1 || c.BatchSize > c.Train.Len():
		return fmt.Errorf("batch must be from 1 to the %d training examples, got %d", c.Train.Len(), c.BatchSize)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("lr must be positive, got %g", c.LR)
	case c.Momentum < 0 || c.Momentum >= 1:
		return fmt.Errorf("momentum must be in [0, 1), got %g", c.Momentum)
	case c.WeightDecay < 0:
		return fmt.Errorf("weight decay must be >= 0, got %g", c.WeightDecay)
	case c.SnapshotEvery < 0:
		return fmt.Errorf("snapshot-every must be >= 0, got %d", c.SnapshotEvery)
	case c.SnapshotEvery > 0 && (c.SnapshotExamples < 1 || c.SnapshotExamples > c.Train.Len()):
		return fmt.Errorf("snapshot-examples must be from 1 to the %d training examples, got %d", c.Train.Len(), c.SnapshotExamples)
	case c.FullSnapshotEvery < 0:
		return fmt.Errorf("full-snapshot-every must be >= 0, got %d", c.FullSnapshotEvery)
	case c.SVRGEvery < 0:
		return fmt.Errorf("svrg-every must be >= 0, got %d", c.SVRGEvery)
	case c.EvalExamples < 0:
		return fmt.Errorf("eval-examples must be >= 0, got %d", c.EvalExamples)
	}
	return c.validateStrata()
}

// validateStrata checks the stratified-sample settings (SnapshotStrata).
func (c *Config) validateStrata() error {
	k, t, f := c.SnapshotStrata, c.SnapshotStrataEvery, c.FullSnapshotEvery
	switch {
	case k < 0:
		return fmt.Errorf("snapshot-strata must be >= 0 (0: uniform samples), got %d", k)
	case k == 0 && (c.SnapshotStrataMethod != "" || t != 0):
		return fmt.Errorf("snapshot-strata-method and snapshot-strata-every need --snapshot-strata K")
	case k == 0:
		return nil
	case c.SnapshotEvery == 0:
		return fmt.Errorf("snapshot-strata stratifies sample snapshots: set --snapshot-every too")
	case f == 0:
		return fmt.Errorf("snapshot-strata needs full snapshots to fit its partition on: set --full-snapshot-every (the partition is refitted at every multiple of --snapshot-strata-every)")
	case 2*k > c.SnapshotExamples:
		return fmt.Errorf("snapshot-strata %d takes at least 2 examples of each of its %d clusters in every sample: 2·%d = %d is more than --snapshot-examples %d; raise --snapshot-examples or lower --snapshot-strata", k, k, k, 2*k, c.SnapshotExamples)
	case k > c.Train.Len():
		return fmt.Errorf("snapshot-strata %d is more clusters than the %d training examples", k, c.Train.Len())
	case t < 1 || t%f != 0:
		return fmt.Errorf("snapshot-strata-every must be a positive multiple of --full-snapshot-every %d (the partition is fitted at the full snapshot at each of its multiples, as refit_every reads it), got %d", f, t)
	}
	if _, err := stats.ParseMethod(c.SnapshotStrataMethod); err != nil {
		return fmt.Errorf("snapshot-strata-method: %w", err)
	}
	return nil
}

// Sink receives what a run produces.
type Sink interface {
	// Snapshot stores the per-example gradients of one step.
	Snapshot(ctx context.Context, s *ingest.Snapshot) error
	// Scalars records the named scalars of one step.
	Scalars(step int64, vals map[string]float64) error
}

// Progress is told about each finished step.
type Progress func(step, total int64, loss float64)

// Result summarizes a finished (or interrupted) run.
type Result struct {
	Steps        int64 // optimizer steps taken
	Snapshots    int
	Loss         float64 // mean loss of the last batch
	TestAccuracy float64 // NaN for regression
	TestLoss     float64
	Interrupted  bool
}

// Train runs cfg, sending snapshots and scalars to sink. When ctx is
// cancelled it stops after the current step and returns a Result with
// Interrupted set and ctx's error; what was sent so far stays sent.
func Train(ctx context.Context, cfg Config, sink Sink, progress Progress) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	net, err := NewNet(cfg.Spec(), cfg.Train, cfg.BatchSize, cfg.Seed)
	if err != nil {
		return nil, err
	}
	defer net.Close()
	dataRng := rand.New(rand.NewPCG(cfg.Seed, 1))
	snapRng := rand.New(rand.NewPCG(cfg.Seed, 2))
	perm := dataRng.Perm(cfg.Train.Len())
	pos := 0
	res := &Result{TestAccuracy: math.NaN(), TestLoss: math.NaN()}
	start := time.Now()
	// fail reports err, or an interruption when ctx ended meanwhile (a
	// sink that waits on ctx fails with ctx's error).
	fail := func(err error) (*Result, error) {
		if ctx.Err() != nil {
			res.Interrupted = true
			return res, ctx.Err()
		}
		return res, err
	}

	var anchor *Net
	var anchorStep int64
	if cfg.SVRGEvery > 0 {
		if anchor, err = NewNet(cfg.Spec(), cfg.Train, cfg.BatchSize, cfg.Seed); err != nil {
			return nil, err
		}
		defer anchor.Close()
	}
	every := func(k, step int64) bool { return k > 0 && step%k == 0 }
	var strata *strataPlan // the partition samples are drawn by (nil: uniform)
	for step := int64(0); ; step++ {
		if err := ctx.Err(); err != nil {
			res.Interrupted = true
			return res, err
		}
		if anchor != nil && every(cfg.SVRGEvery, step) {
			anchor.CopyParams(net)
			anchorStep = step
		}
		sampled, full := every(cfg.SnapshotEvery, step), every(cfg.FullSnapshotEvery, step)
		if sampled || full {
			var ids []int
			var design []codec.Column
			switch {
			case full:
				ids = allIDs(cfg.Train.Len())
				if sampled && strata == nil {
					// Drawn all the same, so that the later uniform
					// samples do not depend on the full schedule.
					sampleIDs(snapRng, cfg.Train.Len(), cfg.SnapshotExamples)
				}
			case sampled && strata != nil:
				ids, design = strata.draw(snapRng)
			case sampled:
				ids = sampleIDs(snapRng, cfg.Train.Len(), cfg.SnapshotExamples)
			}
			s, err := snapshot(net, anchor, anchorStep, cfg.Train, ids)
			if err != nil {
				return fail(fmt.Errorf("snapshot at step %d: %w", step, err))
			}
			s.Step = step
			if full {
				s.Population = db.Full
			}
			if s.Attributes != nil {
				s.Attributes.Columns = append(s.Attributes.Columns, design...)
			}
			if err := sink.Snapshot(ctx, s); err != nil {
				return fail(fmt.Errorf("snapshot at step %d: %w", step, err))
			}
			res.Snapshots++
			if full && every(cfg.SnapshotStrataEvery, step) && cfg.SnapshotStrata > 0 && step < cfg.Steps {
				if strata, err = fitStrata(&cfg, s, net.Schema()); err != nil {
					return fail(fmt.Errorf("fitting the partition of --snapshot-strata %d at step %d: %w", cfg.SnapshotStrata, step, err))
				}
			}
		}
		final := step == cfg.Steps
		if sampled || full || final {
			if cfg.Test != nil && cfg.Test.Len() > 0 {
				acc, loss, err := net.Evaluate(cfg.Test, cfg.EvalExamples)
				if err != nil {
					return fail(fmt.Errorf("evaluate at step %d: %w", step, err))
				}
				vals := map[string]float64{"test_loss": loss}
				if !math.IsNaN(acc) {
					vals["test_accuracy"] = acc
				}
				if err := sink.Scalars(step, vals); err != nil {
					return fail(err)
				}
				res.TestAccuracy, res.TestLoss = acc, loss
			}
		}
		if pos+cfg.BatchSize > len(perm) {
			perm = dataRng.Perm(cfg.Train.Len()) // a new epoch; the partial batch is dropped
			pos = 0
		}
		idx := perm[pos : pos+cfg.BatchSize]
		pos += cfg.BatchSize
		if final {
			// No update at the last step, but its scalars exist: the
			// loss and accuracy of the batch the next step would take.
			loss, acc, err := net.Loss(cfg.Train, idx)
			if err != nil {
				return fail(fmt.Errorf("step %d: %w", step, err))
			}
			vals := map[string]float64{"loss": loss, "lr": cfg.LR, "wall_time": time.Since(start).Seconds()}
			if !math.IsNaN(acc) {
				vals["accuracy"] = acc
			}
			if err := sink.Scalars(step, vals); err != nil {
				return fail(err)
			}
			return res, nil
		}
		t0 := time.Now()
		loss, acc, err := net.Step(cfg.Train, idx, cfg.LR, cfg.Momentum, cfg.WeightDecay)
		if err != nil {
			return fail(fmt.Errorf("step %d: %w", step, err))
		}
		res.Steps, res.Loss = step+1, loss
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return res, fmt.Errorf("step %d: loss is %g (diverged; try a smaller --lr)", step, loss)
		}
		vals := map[string]float64{"loss": loss, "lr": cfg.LR, "step_time": time.Since(t0).Seconds(), "wall_time": time.Since(start).Seconds()}
		if !math.IsNaN(acc) {
			vals["accuracy"] = acc
		}
		if err := sink.Scalars(step, vals); err != nil {
			return fail(err)
		}
		if progress != nil {
			progress(step+1, cfg.Steps, loss)
		}
	}
}

// snapshot captures the examples ids at the current parameters and, with
// an SVRG anchor, at the anchor's too.
func snapshot(net, anchor *Net, anchorStep int64, d *Dataset, ids []int) (*ingest.Snapshot, error) {
	s, err := net.Capture(d, ids)
	if err != nil || anchor == nil {
		return s, err
	}
	a, err := anchor.Capture(d, ids)
	if err != nil {
		return nil, fmt.Errorf("at the SVRG anchor: %w", err)
	}
	s.Anchor, s.AnchorStep = a.Blocks, anchorStep
	return s, nil
}

// allIDs returns 0, 1, ..., n-1: a full snapshot's examples.
func allIDs(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// sampleIDs draws m distinct indices from [0, n) uniformly.
func sampleIDs(rng *rand.Rand, n, m int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := range m {
		j := i + rng.IntN(n-i)
		p[i], p[j] = p[j], p[i]
	}
	return p[:m]
}

// Step runs one SGD step on the examples idx: the mean loss gradient plus
// weight decay, with PyTorch's momentum (v = μv + g; w -= lr·v). It
// returns the batch's mean loss and accuracy (NaN for regression).
func (n *Net) Step(d *Dataset, idx []int, lr, momentum, wd float64) (loss, acc float64, err error) {
	if err := n.run(d, idx); err != nil {
		return 0, 0, err
	}
	return n.update(d, idx, lr, momentum, wd)
}

// Loss returns the mean loss and accuracy (NaN for regression) of the
// examples idx at the current parameters, without an update.
func (n *Net) Loss(d *Dataset, idx []int) (loss, acc float64, err error) {
	if err := n.run(d, idx); err != nil {
		return 0, 0, err
	}
	loss = float64(n.costVal.Data().(float32)) / float64(len(idx))
	return loss, n.accuracy(d, idx), n.zeroGrads()
}

// update applies the gradients of the last pass over idx.
func (n *Net) update(d *Dataset, idx []int, lr, momentum, wd float64) (loss, acc float64, err error) {
	loss = float64(n.costVal.Data().(float32)) / float64(len(idx))
	acc = n.accuracy(d, idx)
	inv := float32(1 / float64(len(idx)))
	for _, l := range n.layers {
		gw, gb, err := n.grads(l)
		if err != nil {
			return 0, 0, err
		}
		for k, p := range [2][]float32{l.wT.Data().([]float32), l.bT.Data().([]float32)} {
			g := [2][]float32{gw, gb}[k]
			v := l.vel[k]
			for j := range p {
				gj := g[j]*inv + float32(wd)*p[j]
				v[j] = float32(momentum)*v[j] + gj
				p[j] -= float32(lr) * v[j]
			}
		}
	}
	return loss, acc, n.zeroGrads()
}

// accuracy is the fraction of idx whose largest output is the label.
func (n *Net) accuracy(d *Dataset, idx []int) float64 {
	if d.Classes == 0 {
		return math.NaN()
	}
	out := n.outVal.Data().([]float32)
	right := 0
	for r, i := range idx {
		row := out[r*d.Classes : (r+1)*d.Classes]
		best := 0
		for c, v := range row {
			if v > row[best] {
				best = c
			}
		}
		if best == d.Labels[i] {
			right++
		}
	}
	return float64(right) / float64(len(idx))
}

// Evaluate returns accuracy (NaN for regression) and mean loss over the
// first limit examples of d (all when limit is 0).
func (n *Net) Evaluate(d *Dataset, limit int) (acc, loss float64, err error) {
	m := d.Len()
	if limit > 0 {
		m = min(m, limit)
	}
	right, total := 0.0, 0.0
	for lo := 0; lo < m; lo += n.batch {
		idx := make([]int, 0, n.batch)
		for i := lo; i < min(lo+n.batch, m); i++ {
			idx = append(idx, i)
		}
		if err := n.run(d, idx); err != nil {
			return 0, 0, err
		}
		total += float64(n.costVal.Data().(float32))
		right += n.accuracy(d, idx) * float64(len(idx))
	}
	if err := n.zeroGrads(); err != nil {
		return 0, 0, err
	}
	if d.Classes == 0 {
		return math.NaN(), total / float64(m), nil
	}
	return right / float64(m), total / float64(m), nil
}

// SnapshotBytes returns the float32 bytes one snapshot of m examples
// holds before encoding (factors, or materialized weights where smaller,
// and bias rows).
func (n *Net) SnapshotBytes(m int) int64 {
	var per int64
	for _, l := range n.layers {
		t := int64(l.positions())
		per += min(t*int64(l.in+l.out), int64(l.in*l.out)) + int64(l.out)
	}
	return 4 * int64(m) * per
}

// Capture computes the per-example gradients of examples ids at the current
// parameters (one forward/backward pass per batch of them) and returns
// them as a snapshot: for each layer a weight block (factors, or the
// materialized gradient for a convolution where that is smaller) and a
// bias block. Parameters and their gradients are left as they were.
func (n *Net) Capture(d *Dataset, ids []int) (*ingest.Snapshot, error) {
	bufs := n.newFactors(len(ids))
	losses := make([]float64, 0, len(ids))
	for lo := 0; lo < len(ids); lo += n.batch {
		hi := min(lo+n.batch, len(ids))
		if err := n.run(d, ids[lo:hi]); err != nil {
			return nil, err
		}
		n.copyFactors(bufs, lo, hi)
		losses = append(losses, n.exampleLosses(d, ids[lo:hi])...)
	}
	if err := n.zeroGrads(); err != nil {
		return nil, err
	}
	s := n.snapshot(ids, bufs)
	s.Attributes = attributes(d, ids, losses)
	return s, nil
}

// StepCapture is Step that also returns the per-example gradients of the
// batch, taken from the same forward/backward pass.
func (n *Net) StepCapture(d *Dataset, idx []int, lr, momentum, wd float64) (loss, acc float64, s *ingest.Snapshot, err error) {
	bufs := n.newFactors(len(idx))
	if err := n.run(d, idx); err != nil {
		return 0, 0, nil, err
	}
	n.copyFactors(bufs, 0, len(idx))
	losses := n.exampleLosses(d, idx)
	loss, acc, err = n.update(d, idx, lr, momentum, wd)
	s = n.snapshot(idx, bufs)
	s.Attributes = attributes(d, idx, losses)
	return loss, acc, s, err
}

// attributes are the examples ids' per-example values: label (classes),
// example_loss, and true_label and corrupted (corrupted labels) and
// duplicate_of (copies: the source's id, -1 for an original) when the
// data set has them.
func attributes(d *Dataset, ids []int, losses []float64) *codec.Attributes {
	a := &codec.Attributes{N: len(ids)}
	ints := func(name string, f func(i int) int) {
		c := codec.Column{Name: name, Type: codec.Int, Ints: make([]int64, len(ids))}
		for r, i := range ids {
			c.Ints[r] = int64(f(i))
		}
		a.Columns = append(a.Columns, c)
	}
	if d.Classes > 0 {
		ints("label", func(i int) int { return d.Labels[i] })
	}
	a.Columns = append(a.Columns, codec.Column{Name: "example_loss", Type: codec.Float, Floats: losses})
	if d.TrueLabels != nil {
		ints("true_label", func(i int) int { return d.TrueLabels[i] })
		c := codec.Column{Name: "corrupted", Type: codec.Bool, Bools: make([]bool, len(ids))}
		for r, i := range ids {
			c.Bools[r] = d.Corrupted[i]
		}
		a.Columns = append(a.Columns, c)
	}
	if d.DuplicateOf != nil {
		ints("duplicate_of", func(i int) int { return d.DuplicateOf[i] })
	}
	return a
}

// factors holds each layer's captured layer inputs and output gradients.
type factors []struct{ a, dz []float32 }

func (n *Net) newFactors(m int) factors {
	f := make(factors, len(n.layers))
	for k, l := range n.layers {
		t := l.positions()
		f[k].a, f[k].dz = make([]float32, m*t*l.in), make([]float32, m*t*l.out)
	}
	return f
}

// copyFactors copies rows lo..hi of the last pass (its first hi-lo rows).
func (n *Net) copyFactors(f factors, lo, hi int) {
	for k, l := range n.layers {
		t := l.positions()
		copy(f[k].a[lo*t*l.in:hi*t*l.in], l.aVal.Data().([]float32)[:(hi-lo)*t*l.in])
		copy(f[k].dz[lo*t*l.out:hi*t*l.out], l.dzVal.Data().([]float32)[:(hi-lo)*t*l.out])
	}
}

// snapshot turns captured factors into blocks.
func (n *Net) snapshot(ids []int, f factors) *ingest.Snapshot {
	m := len(ids)
	uids := make([]uint64, m)
	for i, id := range ids {
		uids[i] = uint64(id)
	}
	s := &ingest.Snapshot{}
	for k, l := range n.layers {
		t := l.positions()
		a, dz := f[k].a, f[k].dz
		w := &codec.Block{Kind: codec.Factored, IDs: uids, T: t, In: l.in, Out: l.out, A: a, Delta: dz}
		if t*(l.in+l.out) > l.in*l.out {
			w = w.Materialized()
		}
		bias := dz
		if t > 1 {
			bias = make([]float32, m*l.out)
			for i := range m {
				for p := range t {
					row := dz[(i*t+p)*l.out : (i*t+p+1)*l.out]
					for q, v := range row {
						bias[i*l.out+q] += v
					}
				}
			}
		}
		s.Blocks = append(s.Blocks,
			ingest.NamedBlock{Layer: l.name + ".weight", Block: w},
			ingest.NamedBlock{Layer: l.name + ".bias", Block: &codec.Block{Kind: codec.Dense, IDs: uids, Dim: l.out, Rows: bias}})
	}
	return s
}

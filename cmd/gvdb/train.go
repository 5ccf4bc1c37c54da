package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/ingest"
	"gvdb/trainer"
)

func init() {
	register("train", "train a model and store its per-example gradients", (*Main).train)
}

// trainFlags are gvdb train's settings, shared with the demo: the store
// and run, and the trainer's Setup the flags fill in directly.
type trainFlags struct {
	dir, run, serve string
	overwrite       bool
	trainer.Setup
}

func (m *Main) train(ctx context.Context, args []string) error {
	fs := m.newFlags("train --run NAME [flags]", trainer.Help+"\n\n"+trainTables(), `  gvdb train --run mlp --steps 2000
  gvdb train --run lr-0.1 --model mlp --hidden 128 --lr 0.1 --steps 1000 --snapshot-every 100
  gvdb train --run cnn --model cnn --steps 500 --snapshot-examples 256
  gvdb train --run lin --data linreg --model logreg --lr 0.001 --batch 10
  gvdb train --run paper --hidden 256,256 --steps 4000 --full-snapshot-every 2000 --svrg-every 2000 --data-size 10000
  gvdb train --run strata --hidden 128 --data-size 10000 --full-snapshot-every 500 --snapshot-every 100 --snapshot-strata 128 --snapshot-strata-method paper`)
	var f trainFlags
	fs.StringVar(&f.dir, "db", db.DefaultDir, "store directory")
	fs.StringVar(&f.run, "run", "", "run name (required)")
	fs.StringVar(&f.Model, "model", "mlp", "model: "+strings.Join(trainer.ModelNames(), ", "))
	fs.StringVar(&f.Hidden, "hidden", "", "hidden widths, comma-separated (default: per model)")
	fs.StringVar(&f.Dataset, "data", "mnist", "data set: mnist, linreg or rf")
	fs.IntVar(&f.DataSize, "data-size", 0, "training examples: MNIST's first N (default all 60000), linreg (default 10000), rf (default 1000)")
	fs.Int64Var(&f.Steps, "steps", 1000, "optimizer steps")
	fs.IntVar(&f.BatchSize, "batch", 128, "batch size")
	fs.Float64Var(&f.LR, "lr", 0.02, "learning rate")
	fs.Float64Var(&f.Momentum, "momentum", 0.5, "momentum")
	fs.Float64Var(&f.WeightDecay, "wd", 5e-4, "weight decay (not part of the measured gradient)")
	fs.Int64Var(&f.SnapshotEvery, "snapshot-every", 500, "steps between snapshots (0: none)")
	fs.IntVar(&f.SnapshotExamples, "snapshot-examples", 1024, "examples per snapshot")
	fs.Int64Var(&f.FullSnapshotEvery, "full-snapshot-every", 0, "steps between full snapshots of every training example (0: none; the paper re-clusters every 2000)")
	fs.IntVar(&f.SnapshotStrata, "snapshot-strata", 0, "K: draw each sample with at least 2 examples of every cluster of the K-partition fitted at the last full snapshot, recording the weights (0: uniform samples)")
	fs.StringVar(&f.SnapshotStrataMethod, "snapshot-strata-method", "", "how --snapshot-strata's partition is fitted: exact (default) or paper")
	fs.Int64Var(&f.SnapshotStrataEvery, "snapshot-strata-every", 0, "T: refit --snapshot-strata's partition at the full snapshots at multiples of T (default: --full-snapshot-every), as refit_every reads it")
	fs.Int64Var(&f.SVRGEvery, "svrg-every", 0, "refresh period of the SVRG anchor; each snapshot also stores its examples' gradients at the anchor (0: none; the paper: 2000)")
	fs.IntVar(&f.EvalExamples, "eval-examples", 0, "test examples for test accuracy (0: all)")
	fs.StringVar(&f.Duplicate, "duplicate", "", "n,c: c extra copies of each of n random training examples (the paper's --duplicate; copies record their source)")
	fs.Float64Var(&f.CorruptLabels, "corrupt-labels", 0, "replace the labels of this percentage of the training examples with random classes (the paper's --corrupt_perc)")
	fs.Float64Var(&f.LabelSmoothing, "label-smoothing", 0, "label smoothing e of the loss's targets: (1-e)·onehot + e/classes")
	fs.StringVar(&f.Imbalance, "imbalance", "", "c,r: repeat class c's training examples r times (0.01 keeps 1%, 10 makes ten copies), the paper's --imbalance")
	fs.StringVar(&f.Encoding, "encoding", "float32", "block encoding: float32 (lossless), float16, bfloat16 or int8")
	fs.StringVar(&f.Rollups, "rollups", "auto", "per-snapshot rollups that answer moment statistics without reading blocks: auto (per-example table always, float32 per-coordinate vectors when a snapshot's rollups then take at most its blocks' bytes), vectors, scalars or none")
	fs.Uint64Var(&f.Seed, "seed", 1, "random seed (initialization, data order, snapshot examples)")
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace a run of the same name")
	fs.StringVar(&f.serve, "serve", "", "also serve the store over HTTP while training, as gvdb serve (e.g. 127.0.0.1:8080; token: GVDB_TOKEN)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	return m.runTraining(ctx, f)
}

// trainTables describes the data sets and models for -h, from the
// trainer's tables.
func trainTables() string {
	var b strings.Builder
	b.WriteString("Data sets (--data):\n")
	for _, d := range trainer.DataSets {
		fmt.Fprintf(&b, "  %-7s %s\n", d.Name, d.Doc)
	}
	b.WriteString("\nModels (--model; --hidden overrides the default widths):\n")
	for _, md := range trainer.Models {
		def := "none"
		if len(md.Hidden) > 0 {
			def = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(md.Hidden)), ","), "[]")
		}
		fmt.Fprintf(&b, "  %-7s %s; --hidden: %s (default %s)\n", md.Name, md.Doc, md.HiddenDoc, def)
	}
	return strings.TrimRight(b.String(), "\n")
}

// prepare checks the flags and loads the data, before any store is touched.
func (f *trainFlags) prepare() (*trainer.Config, codec.Encoding, error) {
	if f.run == "" {
		return nil, 0, usagef("train: --run is required")
	}
	if err := db.ValidateName("run", f.run); err != nil {
		return nil, 0, usageError{err}
	}
	enc, err := codec.ParseEncoding(f.Encoding)
	if err != nil {
		return nil, 0, usageError{err}
	}
	if f.Rollups == "" {
		f.Rollups = string(ingest.RollupsAuto)
	}
	if _, err := ingest.ParseRollupPolicy(f.Rollups); err != nil {
		return nil, 0, usageError{fmt.Errorf("train: --rollups: %w", err)}
	}
	f.Optimizer = "sgd"
	cfg, err := f.Prepare()
	if errors.Is(err, trainer.ErrSetup) {
		return nil, 0, usageError{fmt.Errorf("train: %w", err)}
	}
	return cfg, enc, err
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
	stop, err := m.serveWhile(ctx, d, f.serve)
	if err != nil {
		return err
	}
	defer stop()
	if _, err := d.Run(f.run); err == nil && !f.overwrite {
		return fmt.Errorf("train: run %q already exists in %s (use --overwrite to replace it)", f.run, f.dir)
	}
	schema, params, err := cfg.Plan(f.MemoryBudget)
	if errors.Is(err, trainer.ErrSetup) {
		return usageError{fmt.Errorf("train: %w", err)}
	} else if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	run := &db.Run{Name: f.run, Config: cfg.Config, Layers: schema, Version: Version}
	rec, err := ingest.Record(d, run, f.overwrite, ingest.Options{Encoding: enc, Rollups: ingest.RollupPolicy(f.Rollups)})
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	model := f.Model
	if len(cfg.Hidden) > 0 {
		model += fmt.Sprint(cfg.Hidden)
	}
	fmt.Fprintf(m.Stderr, "training %s: %s on %s (%d parameters), %d steps, batch %d, lr %g\n",
		f.run, model, f.Dataset, params, f.Steps, f.BatchSize, f.LR)
	bar := m.newProgress(f.run, f.Steps)
	start := time.Now()
	res, trainErr := trainer.Train(ctx, *cfg, rec, func(step, total int64, loss float64) {
		bar.update(step, fmt.Sprintf("loss %.4f", loss))
	})
	bar.finish()

	// Whatever happened, keep what was captured.
	status, steps := ingest.StatusFor(trainErr), int64(0)
	if res != nil && res.Interrupted {
		status = db.StatusInterrupted
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
		return fmt.Errorf("train: %w (run %q kept with %d snapshots, status %s)", trainErr, f.run, st.Snapshots, status)
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

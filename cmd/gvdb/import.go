package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/ingest"
	"gvdb/ingest/interchange"
)

func init() {
	register("import", "ingest a run directory (from python/gvdb_capture.py or gvdb export) into the store", (*Main).importRun)
}

func (m *Main) importRun(ctx context.Context, args []string) error {
	fs := m.newFlags("import DIR --run NAME [flags]", `Ingest a run directory into the store through the same Writer as gvdb
train: run.json (configuration and layer schema), scalars.jsonl (step
scalars), and one step-<step> directory per snapshot (manifest.json and
.npy files; format in docs/INTERCHANGE.md). python/gvdb_capture.py writes
such a directory from a PyTorch training script; gvdb export writes one
from a stored run. Every file is checked against the schema (dtypes,
shapes, C order, ids); float32 values are stored bit-exact (--encoding
float32). NaN or Inf gradients are kept and warned about.

With --follow, import watches DIR while the training script writes it
(waiting for run.json if the script has not written it yet): each snapshot is ingested once its directory appears (the capture module
writes it elsewhere and renames it into place), scalars as their lines
are completed, until the file DONE appears or Ctrl-C (the run is then
marked interrupted).`, `  gvdb import ./runs/my-mlp --run my-mlp
  python train.py & gvdb import ./runs/my-mlp --run my-mlp --follow
  gvdb export --run mlp --out ./mlp-run && gvdb import ./mlp-run --run mlp-copy`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	run := fs.String("run", "", "name of the run to create (required)")
	follow := fs.Bool("follow", false, "keep ingesting new snapshots and scalars until DONE appears or Ctrl-C")
	overwrite := fs.Bool("overwrite", false, "replace a run of the same name")
	serve := fs.String("serve", "", "also serve the store over HTTP meanwhile, as gvdb serve (token: GVDB_TOKEN)")
	encoding := fs.String("encoding", "float32", "block encoding: float32 (lossless), float16, bfloat16 or int8")
	rollups := fs.String("rollups", "auto", "rollups: auto, vectors, scalars or none (as gvdb train)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usagef("import: give one run directory (got %d arguments)", len(pos))
	case *run == "":
		return usagef("import: --run is required")
	}
	enc, err := codec.ParseEncoding(*encoding)
	if err != nil {
		return usagef("import: %v", err)
	}
	policy, err := ingest.ParseRollupPolicy(*rollups)
	if err != nil {
		return usagef("import: %v", err)
	}
	src := pos[0]
	cfg, err := interchange.ReadRunConfig(src)
	if *follow {
		cfg, err = interchange.WaitRunConfig(ctx, src, func() {
			fmt.Fprintf(m.Stderr, "import %s: waiting for %s (Ctrl-C stops)\n", *run, filepath.Join(src, "run.json"))
		})
	}
	if err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	r, err := cfg.Run(*run)
	if err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	r.Version, r.Created, r.Rollups, r.Encoding = Version, time.Now().UTC(), string(policy), enc.String()
	d, err := openWriter(*dir, true)
	if err != nil {
		return err
	}
	defer d.Close()
	stop, err := m.serveWhile(ctx, d, *serve)
	if err != nil {
		return err
	}
	defer stop()
	rec, err := ingest.Record(d, r, *overwrite, ingest.Options{Encoding: enc, Rollups: policy})
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	var bar *progress
	im := &interchange.Import{Dir: src, Config: cfg, Run: r, Follow: *follow,
		Warn: func(w string) { fmt.Fprintf(m.Stderr, "warning: %s\n", w) },
		Snapshot: func(step int64, examples, stored, total int) {
			if *follow {
				fmt.Fprintf(m.Stderr, "import %s: snapshot at step %d (%d examples)\n", *run, step, examples)
				return
			}
			if bar == nil {
				bar = m.newProgress("import "+*run, int64(total))
			}
			bar.update(int64(stored), "snapshots")
		}}
	res, err := im.Into(ctx, rec)
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	st := rec.Stats()
	fmt.Fprintf(m.Stderr, "imported %s: %d snapshots, %d examples, %s stored (+ %s of rollups), status %s\n",
		*run, st.Snapshots, st.Examples, humanBytes(st.StoredBytes), humanBytes(st.RollupBytes), res.Status)
	return nil
}

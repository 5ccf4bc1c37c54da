package ingest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/db/synth"
)

var testLayers = synth.MLP(20, 16, 4)

func testRun(name string) *db.Run {
	r := &db.Run{Name: name, Config: db.Config{Model: "mlp", Dataset: "synthetic"}}
	r.Layers = synth.Schema(testLayers)
	return r
}

// testSnapshot is a deterministic function of step, so a reader can check
// what a (killed) writer wrote.
func testSnapshot(step int64, n int) *Snapshot {
	rng := rand.New(rand.NewPCG(uint64(step), 99))
	blocks := synth.Snapshot(rng, n, testLayers)
	s := &Snapshot{Step: step}
	for _, l := range testLayers {
		s.Blocks = append(s.Blocks, NamedBlock{Layer: l.Name, Block: blocks[l.Name]})
	}
	return s
}

func openStore(t *testing.T, dir string) *db.DB {
	t.Helper()
	d, err := db.Open(dir, db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// runOf returns the named run's metadata.
func runOf(t *testing.T, d *db.DB, name string) *db.Run {
	t.Helper()
	r, err := d.Run(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkStored asserts that the stored snapshot at step decodes bit-exactly
// to testSnapshot(step, n).
func checkStored(t *testing.T, d *db.DB, run string, step int64, n int) {
	t.Helper()
	r, err := d.Run(run)
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.Snapshot(r, step, db.Select{})
	if err != nil {
		t.Fatal(err)
	}
	want := testSnapshot(step, n)
	if len(s.Blocks) != len(want.Blocks) {
		t.Fatalf("step %d: %d blocks, want %d", step, len(s.Blocks), len(want.Blocks))
	}
	for i, lb := range s.Blocks {
		got, err := codec.Decode(lb.Data)
		if err != nil {
			t.Fatalf("step %d %s: %v", step, lb.Layer, err)
		}
		wb := want.Blocks[i].Block
		for _, pair := range [][2][]float32{{got.A, wb.A}, {got.Delta, wb.Delta}, {got.Rows, wb.Rows}} {
			if len(pair[0]) != len(pair[1]) {
				t.Fatalf("step %d %s: %d values, want %d", step, lb.Layer, len(pair[0]), len(pair[1]))
			}
			for k := range pair[0] {
				if math.Float32bits(pair[0][k]) != math.Float32bits(pair[1][k]) {
					t.Fatalf("step %d %s: value %d differs", step, lb.Layer, k)
				}
			}
		}
	}
}

func TestWriter(t *testing.T) {
	d := openStore(t, t.TempDir())
	defer d.Close()
	if err := d.CreateRun(testRun("r")); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(d, "r", Options{Queue: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for step := int64(0); step < 50; step += 5 {
		if err := w.Write(ctx, testSnapshot(step, 8)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Snapshots != 10 || st.Examples != 80 || st.StoredBytes <= 0 || st.InputBytes <= st.StoredBytes/2 {
		t.Fatalf("stats %+v", st)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, testSnapshot(99, 8)); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	for step := int64(0); step < 50; step += 5 {
		checkStored(t, d, "r", step, 8)
	}
}

// TestWriterAnchorPopulation writes a full snapshot with SVRG anchor
// blocks: both come back bit-exact, with the population and anchor step;
// malformed anchors are refused.
func TestWriterAnchorPopulation(t *testing.T) {
	d := openStore(t, t.TempDir())
	defer d.Close()
	if err := d.CreateRun(testRun("r")); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(d, "r", Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := testSnapshot(10, 6)
	anchor := testSnapshot(10, 6) // the same blocks: a fresh anchor
	s.Population, s.Anchor, s.AnchorStep = db.Full, anchor.Blocks, 10
	if err := w.Write(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	bad := testSnapshot(20, 6)
	bad.Anchor, bad.AnchorStep = bad.Blocks[:1], 20
	if err := w.Write(context.Background(), bad); err == nil {
		t.Error("anchor blocks for fewer layers accepted")
	}
	late := testSnapshot(30, 6)
	late.Anchor, late.AnchorStep = testSnapshot(30, 6).Blocks, 31
	if err := w.Write(context.Background(), late); err == nil {
		t.Error("anchor after the snapshot's step accepted")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := d.Snapshot(runOf(t, d, "r"), 10, db.Select{Anchor: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.Population != db.Full || !got.HasAnchor || got.AnchorStep != 10 || len(got.Anchor) != len(testLayers) {
		t.Fatalf("read back %+v", got)
	}
	want := testSnapshot(10, 6)
	for i, lb := range got.Anchor {
		b, err := codec.Decode(lb.Data)
		if err != nil {
			t.Fatal(err)
		}
		wb := want.Blocks[i].Block
		if lb.Layer != want.Blocks[i].Layer || !slices.Equal(b.A, wb.A) || !slices.Equal(b.Delta, wb.Delta) || !slices.Equal(b.Rows, wb.Rows) {
			t.Fatalf("anchor block %s differs", lb.Layer)
		}
	}
}

func TestWriterErrors(t *testing.T) {
	d := openStore(t, t.TempDir())
	defer d.Close()
	if err := d.CreateRun(testRun("r")); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(d, "nope", Options{}); !errors.Is(err, db.ErrRunNotFound) {
		t.Fatalf("unknown run: %v", err)
	}
	w, err := NewWriter(d, "r", Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bad := testSnapshot(1, 4)
	bad.Blocks[0].Layer = "fc9.weight"
	if err := w.Write(ctx, bad); err == nil || !strings.Contains(err.Error(), "fc9.weight") {
		t.Fatalf("unknown layer: %v", err)
	}
	mixed := testSnapshot(1, 4)
	mixed.Blocks[1].Block.IDs = append([]uint64(nil), mixed.Blocks[1].Block.IDs...)
	mixed.Blocks[1].Block.IDs[0]++
	if err := w.Write(ctx, mixed); err == nil || !strings.Contains(err.Error(), "example ids") {
		t.Fatalf("mismatched ids: %v", err)
	}
	// A commit failure (the step exists) sticks and comes back.
	if err := w.Write(ctx, testSnapshot(1, 4)); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, testSnapshot(1, 4)); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); !errors.Is(err, db.ErrSnapshotExists) {
		t.Fatalf("flush: got %v, want ErrSnapshotExists", err)
	}
	if err := w.Write(ctx, testSnapshot(2, 4)); !errors.Is(err, db.ErrSnapshotExists) {
		t.Fatalf("write after failure: %v", err)
	}
	if err := w.Close(); !errors.Is(err, db.ErrSnapshotExists) {
		t.Fatalf("close after failure: %v", err)
	}

	// A lossy encoding that cannot hold a value fails the snapshot.
	w2, err := NewWriter(d, "r", Options{Encoding: codec.Float16})
	if err != nil {
		t.Fatal(err)
	}
	big := testSnapshot(3, 4)
	big.Blocks[0].Block.A[0] = 1e9
	if err := w2.Write(ctx, big); err != nil {
		t.Fatal(err)
	}
	if err := w2.Close(); !errors.Is(err, codec.ErrUnrepresentable) {
		t.Fatalf("float16 overflow: %v", err)
	}
	if _, err := d.Snapshot(runOf(t, d, "r"), 3, db.Select{}); !errors.Is(err, db.ErrStepNotFound) {
		t.Fatalf("failed snapshot is visible: %v", err)
	}
}

// TestWriterBackpressure holds commits and checks that Write waits once
// the queue is full instead of accepting more.
func TestWriterBackpressure(t *testing.T) {
	d := openStore(t, t.TempDir())
	defer d.Close()
	if err := d.CreateRun(testRun("r")); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(d, "r", Options{Queue: 2})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	w.beforeCommit = func() { <-release }
	ctx := context.Background()
	// One job is taken by the (held) committer, two fill the queue.
	for step := int64(0); step < 3; step++ {
		if err := w.Write(ctx, testSnapshot(step, 4)); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := w.Write(short, testSnapshot(3, 4)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write to a full queue: got %v, want to wait", err)
	}
	close(release)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if steps, _ := d.Steps(runOf(t, d, "r")); len(steps) != 3 {
		t.Fatalf("stored steps %v, want the 3 accepted", steps)
	}
}

// TestKilledWriter runs a writer in a child process, kills it with SIGKILL
// mid-stream, and checks that every flushed snapshot survives bit-exactly
// and that no partial snapshot is visible.
func TestKilledWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWriterChild$", "-test.v")
	cmd.Env = append(os.Environ(), "GVDB_KILL_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var flushed []int64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "flushed "); ok {
			step, _ := strconv.ParseInt(s, 10, 64)
			flushed = append(flushed, step)
			if len(flushed) == 6 {
				// Let it get well into the next (unflushed) snapshots.
				time.Sleep(time.Duration(20+rand.IntN(40)) * time.Millisecond)
				break
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(flushed) < 6 {
		t.Fatalf("child flushed only %v", flushed)
	}

	d := openStore(t, dir)
	defer d.Close()
	steps, err := d.Steps(runOf(t, d, "killed"))
	if err != nil {
		t.Fatal(err)
	}
	visible := map[int64]bool{}
	for _, s := range steps {
		visible[s] = true
	}
	for _, s := range flushed {
		if !visible[s] {
			t.Fatalf("flushed step %d lost (visible: %v)", s, steps)
		}
	}
	// Every visible snapshot, flushed or not, is whole and exact.
	for _, s := range steps {
		checkStored(t, d, "killed", s, 64)
	}
	t.Logf("flushed %d snapshots, %d visible after SIGKILL", len(flushed), len(steps))
}

// TestKilledWriterChild is the child of TestKilledWriter: it writes
// snapshots forever, printing each step once a Flush covering it returns.
func TestKilledWriterChild(t *testing.T) {
	dir := os.Getenv("GVDB_KILL_CHILD_DIR")
	if dir == "" {
		t.Skip("run by TestKilledWriter")
	}
	d := openStore(t, dir)
	if err := d.CreateRun(testRun("killed")); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(d, "killed", Options{Queue: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for step := int64(0); ; step++ {
		if err := w.Write(ctx, testSnapshot(step, 64)); err != nil {
			t.Fatal(err)
		}
		if step%3 == 2 {
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			for s := step - 2; s <= step; s++ {
				fmt.Printf("flushed %d\n", s)
			}
		}
	}
}

// TestRecorder records a run: it refuses to replace a run unless told,
// makes each snapshot's predecessors and scalars durable before it, and
// records the final status and steps.
func TestRecorder(t *testing.T) {
	d := openStore(t, t.TempDir())
	defer d.Close()
	rec, err := Record(d, testRun("r"), false, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := d.Run("r"); r.Status != db.StatusRunning {
		t.Fatalf("status while recording: %q", r.Status)
	}
	if err := rec.Scalars(0, map[string]float64{"loss": 2}); err != nil {
		t.Fatal(err)
	}
	if err := rec.Snapshot(context.Background(), testSnapshot(0, 4)); err != nil {
		t.Fatal(err)
	}
	// The snapshot's scalars went to the store before the snapshot.
	var rows int
	_ = d.Scalars(runOf(t, d, "r"), db.AllSteps, func(db.ScalarRow) error { rows++; return nil })
	if rows != 1 {
		t.Fatalf("%d scalar rows stored before the snapshot", rows)
	}
	if err := rec.Scalars(1, map[string]float64{"loss": 1}); err != nil {
		t.Fatal(err)
	}
	if err := rec.Finish(db.StatusInterrupted, 2); err != nil {
		t.Fatal(err)
	}
	r := runOf(t, d, "r")
	steps, _ := d.Steps(r)
	if r.Status != db.StatusInterrupted || r.Steps != 2 || len(steps) != 1 {
		t.Fatalf("after Finish: %+v, steps %v", r, steps)
	}
	if _, err := Record(d, testRun("r"), false, Options{}); err == nil {
		t.Fatal("replaced a run without being told to")
	}
	rec, err = Record(d, testRun("r"), true, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Finish(db.StatusComplete, 0); err != nil {
		t.Fatal(err)
	}
	if steps, _ := d.Steps(runOf(t, d, "r")); len(steps) != 0 {
		t.Fatalf("replaced run kept %d snapshots", len(steps))
	}
}

// TestRollupsAgreeNonFinite: check compares a rollup with NaN and Inf
// entries (a gradient kept with a warning) equal to the same rollup, and
// still finds a finite entry that differs.
func TestRollupsAgreeNonFinite(t *testing.T) {
	r := func(x float64) *stats.Rollup {
		return &stats.Rollup{SumSqNorm: math.NaN(), SumNormSq: math.Inf(1), SqNorms: []float64{1, math.NaN()},
			Sum: []float64{math.NaN(), 2, x}, SumSq: []float64{math.Inf(1), 4, 1}}
	}
	if !rollupsAgree(r(3), r(3)) {
		t.Error("a rollup with NaN and Inf disagrees with itself")
	}
	if rollupsAgree(r(3), r(3.5)) {
		t.Error("a finite difference beside NaN went unnoticed")
	}
}

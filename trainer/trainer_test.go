package trainer

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"

	"gvdb/db"
	"gvdb/ingest"
)

// fakeImages is a seeded MNIST-shaped data set: 28x28 images, 10 classes.
func fakeImages(n int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 3))
	d := &Dataset{Name: "fake", Dim: 784, C: 1, H: 28, W: 28, Classes: 10, X: make([]float32, n*784), Labels: make([]int, n)}
	for i := range d.X {
		if rng.Float64() < 0.3 {
			d.X[i] = float32(rng.NormFloat64())
		}
	}
	for i := range d.Labels {
		d.Labels[i] = rng.IntN(10)
	}
	return d
}

// TestPerExampleGradients checks, for every model kind, that the gradients
// captured from one batched pass equal those of separate batch-size-1
// backward passes, and that their mean is the batch gradient.
func TestPerExampleGradients(t *testing.T) {
	lin, _ := LinReg(5, 64, 20)
	rf, _ := RandomFeatures(6, 64, 10, 20, 30)
	cases := []struct {
		name string
		spec Spec
		data *Dataset
	}{
		{"logreg", Spec{Kind: "logreg"}, fakeImages(64, 1)},
		{"mlp", Spec{Kind: "mlp", Hidden: []int{16, 8}}, fakeImages(64, 2)},
		{"cnn", Spec{Kind: "cnn", Hidden: []int{3, 4, 8}}, fakeImages(64, 3)},
		{"linreg", Spec{Kind: "logreg"}, lin},
		{"rf", Spec{Kind: "mlp", Hidden: []int{6}}, rf},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const batch = 8
			net, err := NewNet(c.spec, c.data, batch, 7)
			if err != nil {
				t.Fatal(err)
			}
			defer net.Close()
			// Move off the initialization first.
			for s := 0; s < 3; s++ {
				if _, _, err := net.Step(c.data, []int{s * 8, s*8 + 1, s*8 + 2, s*8 + 3, s*8 + 4, s*8 + 5, s*8 + 6, s*8 + 7}, 0.05, 0.5, 5e-4); err != nil {
					t.Fatal(err)
				}
			}
			ids := []int{40, 3, 17, 9, 33, 21} // fewer than a batch: exercises padding
			snap, err := net.Capture(c.data, ids)
			if err != nil {
				t.Fatal(err)
			}
			one, err := NewNet(c.spec, c.data, 1, 99)
			if err != nil {
				t.Fatal(err)
			}
			defer one.Close()
			one.CopyParams(net)
			mean := map[string][]float64{}
			for i, id := range ids {
				if err := one.run(c.data, []int{id}); err != nil {
					t.Fatal(err)
				}
				for li, l := range one.layers {
					gw, gb, _ := one.grads(l)
					for k, want := range [][]float32{gw, gb} {
						nb := snap.Blocks[2*li+k]
						got := nb.Block.Gradient(i, make([]float64, nb.Block.Params()))
						compare(t, nb.Layer, i, got, want)
						if mean[nb.Layer] == nil {
							mean[nb.Layer] = make([]float64, len(got))
						}
						for j, v := range got {
							mean[nb.Layer][j] += v / float64(len(ids))
						}
					}
				}
				if err := one.zeroGrads(); err != nil {
					t.Fatal(err)
				}
			}
			// The batch gradient of the same examples is their mean (sum loss / N).
			if err := net.run(c.data, ids); err != nil {
				t.Fatal(err)
			}
			for li, l := range net.layers {
				gw, gb, _ := net.grads(l)
				for k, g := range [][]float32{gw, gb} {
					name := snap.Blocks[2*li+k].Layer
					batchMean := make([]float32, len(g))
					for j, v := range g {
						batchMean[j] = v / float32(len(ids))
					}
					compare(t, name+" mean", -1, mean[name], batchMean)
				}
			}
			if err := net.zeroGrads(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func compare(t *testing.T, layer string, i int, got []float64, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s example %d: %d values, want %d", layer, i, len(got), len(want))
	}
	scale := 0.0
	for _, v := range want {
		scale = max(scale, math.Abs(float64(v)))
	}
	for j := range got {
		if d := math.Abs(got[j] - float64(want[j])); d > 1e-5*scale+1e-12 {
			t.Fatalf("%s example %d coordinate %d: %g vs batch-size-1 %g (scale %g)", layer, i, j, got[j], want[j], scale)
		}
	}
}

type memSink struct {
	mu      sync.Mutex
	snaps   []*ingest.Snapshot
	scalars map[int64]map[string]float64
}

func (m *memSink) Snapshot(_ context.Context, s *ingest.Snapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snaps = append(m.snaps, s)
	return nil
}

func (m *memSink) Scalars(step int64, vals map[string]float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.scalars == nil {
		m.scalars = map[int64]map[string]float64{}
	}
	if m.scalars[step] == nil {
		m.scalars[step] = map[string]float64{}
	}
	for k, v := range vals {
		m.scalars[step][k] = v
	}
	return nil
}

func TestTrainReproducible(t *testing.T) {
	data := fakeImages(256, 4)
	test := fakeImages(64, 5)
	cfg := Config{Hidden: []int{12}, Train: data, Test: test, Config: db.Config{Model: "mlp", Steps: 20, BatchSize: 16, LR: 0.05, Momentum: 0.5, WeightDecay: 5e-4, SnapshotEvery: 10, SnapshotExamples: 24, Seed: 3}}
	var sinks [2]*memSink
	for r := range sinks {
		sinks[r] = &memSink{}
		res, err := Train(context.Background(), cfg, sinks[r], nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Steps != 20 || res.Snapshots != 3 || math.IsNaN(res.TestAccuracy) {
			t.Fatalf("result %+v", res)
		}
	}
	a, b := sinks[0], sinks[1]
	if len(a.snaps) != 3 || a.snaps[2].Step != 20 || len(a.snaps[0].Blocks) != 4 {
		t.Fatalf("snapshots: %d, last step %d", len(a.snaps), a.snaps[len(a.snaps)-1].Step)
	}
	for s := range a.snaps {
		for k, nb := range a.snaps[s].Blocks {
			x, y := nb.Block, b.snaps[s].Blocks[k].Block
			for j := range x.A {
				if math.Float32bits(x.A[j]) != math.Float32bits(y.A[j]) {
					t.Fatalf("run not reproducible: snapshot %d %s A[%d]", s, nb.Layer, j)
				}
			}
			for j := range x.Delta {
				if math.Float32bits(x.Delta[j]) != math.Float32bits(y.Delta[j]) {
					t.Fatalf("run not reproducible: snapshot %d %s Delta[%d]", s, nb.Layer, j)
				}
			}
		}
	}
	for step := int64(0); step <= 20; step++ {
		if a.scalars[step]["loss"] != b.scalars[step]["loss"] || a.scalars[step]["lr"] != 0.05 || math.IsNaN(a.scalars[step]["loss"]) {
			t.Fatalf("step %d scalars differ: %v vs %v", step, a.scalars[step], b.scalars[step])
		}
	}
	if _, ok := a.scalars[20]["test_accuracy"]; !ok {
		t.Fatalf("no final test accuracy: %v", a.scalars[20])
	}
}

// TestFullSnapshotsAndSVRG trains with full snapshots and an SVRG anchor:
// full snapshots hold every training example in order and replace the
// sample at a shared step; each snapshot holds its examples' gradients at
// the last anchor, equal to the current ones at the anchor's own step;
// and the samples are those of a run without either.
func TestFullSnapshotsAndSVRG(t *testing.T) {
	data := fakeImages(96, 4)
	base := Config{Hidden: []int{6}, Train: data, Config: db.Config{Model: "mlp", Steps: 12, BatchSize: 8, LR: 0.05, SnapshotEvery: 4, SnapshotExamples: 16, Seed: 2}}
	cfg := base
	cfg.FullSnapshotEvery, cfg.SVRGEvery = 8, 6
	var plain, both memSink
	if _, err := Train(context.Background(), base, &plain, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Train(context.Background(), cfg, &both, nil); err != nil {
		t.Fatal(err)
	}
	steps := []int64{0, 4, 8, 12}
	anchors := []int64{0, 0, 6, 12}
	if len(both.snaps) != len(steps) {
		t.Fatalf("%d snapshots, want %d", len(both.snaps), len(steps))
	}
	for i, s := range both.snaps {
		full := s.Step%8 == 0
		if s.Step != steps[i] || (s.Population == db.Full) != full || s.AnchorStep != anchors[i] || len(s.Anchor) != len(s.Blocks) {
			t.Fatalf("snapshot %d: step %d population %v anchor %d (%d blocks)", i, s.Step, s.Population, s.AnchorStep, len(s.Anchor))
		}
		ids := s.Blocks[0].Block.IDs
		if full && (len(ids) != 96 || ids[95] != 95) {
			t.Fatalf("full snapshot at %d has %d examples", s.Step, len(ids))
		}
		if !full && !slices.Equal(ids, plain.snaps[i].Blocks[0].Block.IDs) {
			t.Fatalf("sample at %d differs from the run without full snapshots", s.Step)
		}
		same := true
		for k, nb := range s.Blocks {
			a := s.Anchor[k].Block
			if !slices.Equal(nb.Block.A, a.A) || !slices.Equal(nb.Block.Delta, a.Delta) || !slices.Equal(nb.Block.Rows, a.Rows) {
				same = false
			}
		}
		if same != (s.Step == s.AnchorStep) {
			t.Fatalf("step %d, anchor %d: anchor gradients equal to current ones: %v", s.Step, s.AnchorStep, same)
		}
	}
}

func TestTrainInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sink := &memSink{}
	cfg := Config{Train: fakeImages(128, 1), Config: db.Config{Model: "logreg", Steps: 1000, BatchSize: 8, LR: 0.01, Seed: 1}}
	res, err := Train(ctx, cfg, sink, func(step, _ int64, _ float64) {
		if step == 5 {
			cancel()
		}
	})
	if err == nil || !res.Interrupted || res.Steps != 5 {
		t.Fatalf("interrupted run: %+v, %v", res, err)
	}
}

func TestConfigErrors(t *testing.T) {
	data := fakeImages(32, 1)
	base := Config{Hidden: []int{4}, Train: data, Config: db.Config{Model: "mlp", Steps: 10, BatchSize: 8, LR: 0.1, Seed: 1}}
	for name, mut := range map[string]func(*Config){
		"steps":     func(c *Config) { c.Steps = 0 },
		"batch":     func(c *Config) { c.BatchSize = 33 },
		"lr":        func(c *Config) { c.LR = -1 },
		"momentum":  func(c *Config) { c.Momentum = 1 },
		"snapshots": func(c *Config) { c.SnapshotEvery, c.SnapshotExamples = 5, 0 },
	} {
		c := base
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: bad config accepted", name)
		}
	}
	if _, err := NewNet(Spec{Kind: "cnn", Hidden: []int{4}}, data, 4, 1); err == nil {
		t.Error("cnn with one width accepted")
	}
	if _, err := NewNet(Spec{Kind: "rnn"}, data, 4, 1); err == nil {
		t.Error("unknown model accepted")
	}
	lin, _ := LinReg(1, 10, 5)
	if _, err := NewNet(Spec{Kind: "cnn", Hidden: []int{2, 2, 2}}, lin, 4, 1); err == nil {
		t.Error("cnn on non-image data accepted")
	}
}

func TestMNIST(t *testing.T) {
	dir, err := MNISTDir()
	if err != nil {
		t.Fatal(err)
	}
	train, test, err := LoadMNIST(dir)
	if err != nil {
		t.Fatal(err)
	}
	if train.Len() != 60000 || test.Len() != 10000 || train.Classes != 10 {
		t.Fatalf("MNIST sizes %d/%d", train.Len(), test.Len())
	}
	counts := make([]int, 10)
	for _, l := range train.Labels {
		counts[l]++
	}
	for c, n := range counts {
		if n < 5000 || n > 7000 {
			t.Fatalf("class %d has %d training examples", c, n)
		}
	}
}

// TestStepCapture checks that the factors captured during a training step
// are those of Capture at the same parameters.
func TestStepCapture(t *testing.T) {
	data := fakeImages(64, 8)
	a, _ := NewNet(Spec{Kind: "mlp", Hidden: []int{8}}, data, 16, 3)
	b, _ := NewNet(Spec{Kind: "mlp", Hidden: []int{8}}, data, 16, 3)
	defer a.Close()
	defer b.Close()
	idx := []int{5, 1, 9, 33, 2, 60, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17}
	want, err := a.Capture(data, idx)
	if err != nil {
		t.Fatal(err)
	}
	_, _, got, err := b.StepCapture(data, idx, 0.1, 0.5, 0)
	if err != nil {
		t.Fatal(err)
	}
	for k := range want.Blocks {
		w, g := want.Blocks[k].Block, got.Blocks[k].Block
		for j := range w.Delta {
			if w.Delta[j] != g.Delta[j] {
				t.Fatalf("%s Delta[%d]: %g vs %g", want.Blocks[k].Layer, j, g.Delta[j], w.Delta[j])
			}
		}
	}
}

// ctxSink's snapshot at step 8 times out, as a writer waiting on a full
// queue does when the context ends meanwhile.
type ctxSink struct {
	memSink
	ctx    context.Context
	cancel context.CancelFunc
}

func (c *ctxSink) Snapshot(ctx context.Context, s *ingest.Snapshot) error {
	if s.Step == 8 {
		c.cancel()
		return c.ctx.Err()
	}
	return c.memSink.Snapshot(ctx, s)
}

// TestInterruptedInSink: a cancellation that surfaces as a sink error is
// an interruption, not a failure.
func TestInterruptedInSink(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sink := &ctxSink{ctx: ctx, cancel: cancel}
	cfg := Config{Train: fakeImages(128, 1), Config: db.Config{Model: "logreg", Steps: 1000, BatchSize: 8, LR: 0.01, SnapshotEvery: 4, SnapshotExamples: 8, Seed: 1}}
	res, err := Train(ctx, cfg, sink, nil)
	if !errors.Is(err, context.Canceled) || !res.Interrupted || res.Steps != 8 || len(sink.snaps) != 2 {
		t.Fatalf("got %+v, %v (%d snapshots); want an interruption at step 8", res, err, len(sink.snaps))
	}
}

// TestAttributesAndPerturbations checks the per-example attributes of a
// snapshot (each example's loss: their mean is the batch loss, smoothed
// targets included) and the paper's data perturbations.
func TestAttributesAndPerturbations(t *testing.T) {
	data := fakeImages(60, 9)
	dup, err := data.Duplicate(3, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if dup.Len() != 72 || dup.DuplicateOf[0] != -1 {
		t.Fatalf("duplicate: %d examples", dup.Len())
	}
	for r := 60; r < 72; r++ {
		src := dup.DuplicateOf[r]
		if src < 0 || src >= 60 || !slices.Equal(dup.Row(r), data.Row(src)) || dup.Labels[r] != data.Labels[src] {
			t.Fatalf("copy %d of %d is not its source", r, src)
		}
	}
	if err := dup.CorruptLabels(25, 2); err != nil {
		t.Fatal(err)
	}
	changed := 0
	for i := range dup.Len() {
		if dup.Corrupted[i] != (i < 18) || dup.TrueLabels[i] != data.Labels[min(i, 59)] && i < 60 {
			t.Fatalf("corruption of example %d", i)
		}
		if dup.Labels[i] != dup.TrueLabels[i] {
			changed++
		}
	}
	if changed == 0 || changed > 18 {
		t.Errorf("%d labels changed of 18 corrupted", changed)
	}
	imb, err := data.Imbalance(data.Labels[0], 2.5, 3)
	if err != nil {
		t.Fatal(err)
	}
	class := 0
	for _, y := range data.Labels {
		if y == data.Labels[0] {
			class++
		}
	}
	if imb.Len() != 60-class+2*class+class/2 {
		t.Errorf("imbalance 2.5 of a class of %d: %d examples", class, imb.Len())
	}
	if _, err := data.Imbalance(10, 2, 1); err == nil {
		t.Error("imbalance of class 10 of 10 accepted")
	}

	dup.Smoothing = 0.1
	net, err := NewNet(Spec{Kind: "mlp", Hidden: []int{8}}, dup, 16, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	idx := []int{0, 5, 20, 61, 70, 3, 9, 11, 13, 14, 15, 16, 17, 18, 19, 21}
	loss, _, s, err := net.StepCapture(dup, idx, 0.01, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := s.Attributes
	if a == nil || a.N != 16 || a.Column("duplicate_of").Ints[3] != int64(dup.DuplicateOf[61]) || !a.Column("corrupted").Bools[0] ||
		a.Column("label").Ints[1] != int64(dup.Labels[5]) || a.Column("true_label").Ints[1] != int64(dup.TrueLabels[5]) {
		t.Fatalf("attributes %+v", a)
	}
	mean := 0.0
	for _, l := range a.Column("example_loss").Floats {
		mean += l / 16
	}
	if math.Abs(mean-loss) > 1e-5*loss {
		t.Errorf("mean example loss %g, batch loss %g", mean, loss)
	}
}

// TestTrainingSetFreed: a finished training keeps no reference to its
// training set (Gorgonia keeps its graph, and so the Net, reachable after
// the VM closes), so a process that trains again, like the demo, does not
// hold every training set it used.
func TestTrainingSetFreed(t *testing.T) {
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	before := heap()
	func() {
		const n = 16000 // 50 MB of images
		data := &Dataset{Name: "big", Dim: 784, C: 1, H: 28, W: 28, Classes: 10, X: make([]float32, n*784), Labels: make([]int, n)}
		cfg := Config{Hidden: []int{8}, Train: data, Test: fakeImages(64, 5), Config: db.Config{Model: "mlp", Steps: 3, BatchSize: 16, LR: 0.05, Seed: 1}}
		if _, err := Train(context.Background(), cfg, &memSink{}, nil); err != nil {
			t.Fatal(err)
		}
	}()
	if grew := heap() - before; grew > 20<<20 {
		t.Errorf("the heap kept %d MiB after training on a 50 MB training set", grew>>20)
	}
}

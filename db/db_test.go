package db

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// runDBTest gives fn a fresh store in a temporary directory.
func runDBTest(t *testing.T, fn func(t *testing.T, d *DB)) {
	t.Helper()
	d, err := Open(t.TempDir(), Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	}()
	fn(t, d)
}

func testRun(name string) *Run {
	return &Run{Name: name, Model: "mlp", Dataset: "mnist", Layers: []Layer{
		{Name: "fc1.weight", Kind: DenseWeight, Shape: []int{4, 3}, Params: 12},
		{Name: "fc1.bias", Kind: Bias, Shape: []int{3}, Params: 3},
		{Name: "fc2.weight", Kind: DenseWeight, Shape: []int{3, 2}, Params: 6},
	}, LR: 0.02, BatchSize: 128, Seed: 1}
}

func snap(step int64, layers ...string) *Snapshot {
	s := &Snapshot{Step: step, N: 2}
	for _, l := range layers {
		s.Blocks = append(s.Blocks, LayerBlock{Layer: l, Data: []byte(fmt.Sprintf("%s@%d", l, step))})
	}
	return s
}

func TestRuns(t *testing.T) {
	runDBTest(t, func(t *testing.T, d *DB) {
		for _, name := range []string{"mlp", "lr-0.1", "lr-0.01"} {
			if err := d.CreateRun(testRun(name)); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.CreateRun(testRun("mlp")); !errors.Is(err, ErrRunExists) {
			t.Fatalf("duplicate run: got %v, want ErrRunExists", err)
		}
		r, err := d.Run("mlp")
		if err != nil {
			t.Fatal(err)
		}
		if r.ID == 0 || r.Created.IsZero() || r.TotalParams() != 21 || r.LR != 0.02 {
			t.Fatalf("run read back as %+v", r)
		}
		_, err = d.Run("mpl")
		var nf *NotFoundError
		if !errors.Is(err, ErrRunNotFound) || !errors.As(err, &nf) {
			t.Fatalf("unknown run: got %v", err)
		}
		if msg := err.Error(); !strings.Contains(msg, `did you mean "mlp"`) || !strings.Contains(msg, "lr-0.01") {
			t.Fatalf("unhelpful message: %s", msg)
		}
		names, err := d.RunNames()
		if err != nil || !reflect.DeepEqual(names, []string{"lr-0.01", "lr-0.1", "mlp"}) {
			t.Fatalf("RunNames = %v, %v", names, err)
		}
		r.Status = StatusComplete
		if err := d.UpdateRun(r); err != nil {
			t.Fatal(err)
		}
		if r2, _ := d.Run("mlp"); r2.Status != StatusComplete {
			t.Fatalf("status not updated: %q", r2.Status)
		}
		if _, err := r.Layer("fc1.wieght"); !errors.Is(err, ErrLayerNotFound) || !strings.Contains(err.Error(), `did you mean "fc1.weight"`) {
			t.Fatalf("unknown layer: %v", err)
		}
		for _, bad := range []string{"", "a'b", "tab\tname", strings.Repeat("x", 201)} {
			if err := d.CreateRun(testRun(bad)); !errors.Is(err, ErrInvalidName) {
				t.Errorf("name %q: got %v, want ErrInvalidName", bad, err)
			}
		}
	})
}

func TestSnapshots(t *testing.T) {
	runDBTest(t, func(t *testing.T, d *DB) {
		if err := d.CreateRun(testRun("a")); err != nil {
			t.Fatal(err)
		}
		if err := d.CreateRun(testRun("b")); err != nil {
			t.Fatal(err)
		}
		// Steps written out of order; b's snapshots must not leak into a's.
		for _, step := range []int64{500, 0, 1000, 256, 1 << 40} {
			if err := d.PutSnapshot("a", snap(step, "fc1.weight", "fc1.bias", "fc2.weight")); err != nil {
				t.Fatal(err)
			}
			if err := d.PutSnapshot("b", snap(step+1, "fc1.weight")); err != nil {
				t.Fatal(err)
			}
		}
		steps, err := d.Steps("a")
		if err != nil || !reflect.DeepEqual(steps, []int64{0, 256, 500, 1000, 1 << 40}) {
			t.Fatalf("Steps = %v, %v", steps, err)
		}
		var got []string
		err = d.Snapshots("a", Window{256, 1001}, []string{"fc2.weight", "fc1.bias"}, func(s *Snapshot) error {
			for _, b := range s.Blocks {
				got = append(got, string(b.Data))
			}
			return nil
		})
		want := []string{"fc1.bias@256", "fc2.weight@256", "fc1.bias@500", "fc2.weight@500", "fc1.bias@1000", "fc2.weight@1000"}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("window scan = %v, %v; want %v", got, err, want)
		}
		if err := d.PutSnapshot("a", snap(500, "fc1.weight")); !errors.Is(err, ErrSnapshotExists) {
			t.Fatalf("rewrite: got %v", err)
		}
		if err := d.PutSnapshot("a", snap(7, "fc3.weight")); !errors.Is(err, ErrLayerNotFound) {
			t.Fatalf("unknown layer: got %v", err)
		}
		if err := d.PutSnapshot("a", snap(7, "fc1.bias", "fc1.bias")); !errors.Is(err, ErrInvalidSnapshot) {
			t.Fatalf("duplicate layer: got %v", err)
		}
		if err := d.PutSnapshot("a", snap(-1, "fc1.bias")); !errors.Is(err, ErrNegativeStep) {
			t.Fatalf("negative step: got %v", err)
		}
		if err := d.Snapshots("a", AllSteps, []string{"fc9"}, func(*Snapshot) error { return nil }); !errors.Is(err, ErrLayerNotFound) {
			t.Fatalf("unknown layer in scan: got %v", err)
		}
		_, err = d.Snapshot("a", 501, nil)
		if !errors.Is(err, ErrStepNotFound) || !strings.Contains(err.Error(), `did you mean "500"`) {
			t.Fatalf("unknown step: %v", err)
		}
		s, err := d.Snapshot("a", 1000, nil)
		if err != nil || len(s.Blocks) != 3 || s.N != 2 || string(s.Block("fc1.bias")) != "fc1.bias@1000" {
			t.Fatalf("Snapshot = %+v, %v", s, err)
		}
		infos, err := d.SnapshotInfos("a", Window{0, 1})
		if err != nil || len(infos) != 1 || infos[0].Bytes[0] != int64(len("fc1.weight@0")) {
			t.Fatalf("SnapshotInfos = %+v, %v", infos, err)
		}
		stop := errors.New("stop")
		n := 0
		if err := d.Snapshots("a", AllSteps, nil, func(*Snapshot) error { n++; return stop }); err != stop || n != 1 {
			t.Fatalf("fn error: got %v after %d calls", err, n)
		}
	})
}

// TestPartialSnapshotInvisible writes blocks without their manifest, as a
// writer killed mid-snapshot leaves them: readers must not see them.
func TestPartialSnapshotInvisible(t *testing.T) {
	runDBTest(t, func(t *testing.T, d *DB) {
		if err := d.CreateRun(testRun("a")); err != nil {
			t.Fatal(err)
		}
		r, _ := d.Run("a")
		if err := d.bdb.Update(func(txn *badger.Txn) error {
			return txn.Set(blockKey(r.ID, 10, 1), []byte("orphan"))
		}); err != nil {
			t.Fatal(err)
		}
		if err := d.PutSnapshot("a", snap(20, "fc1.weight")); err != nil {
			t.Fatal(err)
		}
		steps, err := d.Steps("a")
		if err != nil || !reflect.DeepEqual(steps, []int64{20}) {
			t.Fatalf("Steps = %v, %v", steps, err)
		}
	})
}

// TestLargeSnapshot writes a snapshot bigger than one Badger transaction.
func TestLargeSnapshot(t *testing.T) {
	runDBTest(t, func(t *testing.T, d *DB) {
		r := testRun("big")
		r.Layers = nil
		for i := range 120 {
			r.Layers = append(r.Layers, Layer{Name: fmt.Sprintf("l%d", i), Kind: Other, Params: 1})
		}
		if err := d.CreateRun(r); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 1))
		s := &Snapshot{Step: 3, N: 1}
		for i := range 120 {
			v := make([]byte, 60<<10) // below the value threshold: 7 MB against a 4.8 MB txn limit
			for k := range v {
				v[k] = byte(rng.Uint32())
			}
			s.Blocks = append(s.Blocks, LayerBlock{Layer: fmt.Sprintf("l%d", i), Data: v})
		}
		before := txnSplits.Load()
		if err := d.PutSnapshot("big", s); err != nil {
			t.Fatal(err)
		}
		if txnSplits.Load() == before {
			t.Fatal("snapshot fit one transaction: the test does not exercise splitting")
		}
		got, err := d.Snapshot("big", 3, nil)
		if err != nil || len(got.Blocks) != 120 {
			t.Fatalf("read back %v, %v", got, err)
		}
		for i, b := range got.Blocks {
			if !bytes.Equal(b.Data, s.Blocks[i].Data) {
				t.Fatalf("block %d differs", i)
			}
		}
	})
}

func TestScalars(t *testing.T) {
	runDBTest(t, func(t *testing.T, d *DB) {
		if err := d.CreateRun(testRun("a")); err != nil {
			t.Fatal(err)
		}
		if err := d.PutScalars("a", []ScalarRow{{0, map[string]float64{"loss": 2.3}}, {1, map[string]float64{"loss": 2.1, "lr": 0.02}}}); err != nil {
			t.Fatal(err)
		}
		if err := d.PutScalars("a", []ScalarRow{{1, map[string]float64{"test_accuracy": 0.5, "loss": 2.0}}}); err != nil {
			t.Fatal(err)
		}
		var rows []ScalarRow
		if err := d.Scalars("a", Window{1, 5}, func(r ScalarRow) error { rows = append(rows, r); return nil }); err != nil {
			t.Fatal(err)
		}
		want := []ScalarRow{{1, map[string]float64{"loss": 2.0, "lr": 0.02, "test_accuracy": 0.5}}}
		if !reflect.DeepEqual(rows, want) {
			t.Fatalf("Scalars = %v, want %v", rows, want)
		}
		if err := d.PutScalars("nope", nil); !errors.Is(err, ErrRunNotFound) {
			t.Fatalf("unknown run: %v", err)
		}
		if _, err := decodeScalars([]byte{5, 1}); !errors.Is(err, ErrCorruptMetadata) {
			t.Fatalf("corrupt scalars: %v", err)
		}
	})
}

func TestDeleteRun(t *testing.T) {
	runDBTest(t, func(t *testing.T, d *DB) {
		for _, n := range []string{"a", "b"} {
			if err := d.CreateRun(testRun(n)); err != nil {
				t.Fatal(err)
			}
			if err := d.PutSnapshot(n, snap(1, "fc1.weight")); err != nil {
				t.Fatal(err)
			}
			if err := d.PutScalars(n, []ScalarRow{{1, map[string]float64{"loss": 1}}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.DeleteRun("a"); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Run("a"); !errors.Is(err, ErrRunNotFound) {
			t.Fatalf("deleted run still there: %v", err)
		}
		// Recreating the name gets a fresh id and none of the old data.
		if err := d.CreateRun(testRun("a")); err != nil {
			t.Fatal(err)
		}
		if steps, _ := d.Steps("a"); len(steps) != 0 {
			t.Fatalf("recreated run has steps %v", steps)
		}
		if steps, _ := d.Steps("b"); len(steps) != 1 {
			t.Fatalf("other run lost its snapshot: %v", steps)
		}
		if err := d.DeleteRun("zzz"); !errors.Is(err, ErrRunNotFound) {
			t.Fatalf("delete unknown: %v", err)
		}
	})
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = Open(dir, Options{Log: io.Discard})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: got %v, want ErrLocked", err)
	}
}

func TestManifestCorrupt(t *testing.T) {
	good := encodeManifest(&Snapshot{N: 3}, []uint16{1, 2})
	if m, err := decodeManifest(good); err != nil || m.n != 3 || len(m.layers) != 2 {
		t.Fatalf("manifest round trip: %+v, %v", m, err)
	}
	for k := range good {
		if _, err := decodeManifest(good[:k]); err == nil {
			t.Fatalf("truncated manifest (%d bytes) accepted", k)
		}
	}
}

func TestNearest(t *testing.T) {
	cands := []string{"variance", "nvar", "gns", "gc_variance"}
	for _, c := range []struct{ in, want string }{
		{"nvr", "nvar"}, {"varaince", "variance"}, {"NVAR", "nvar"}, {"xyzzy", ""}, {"nvar", ""},
	} {
		if got := Nearest(c.in, cands); got != c.want {
			t.Errorf("Nearest(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

package db

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
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

// mustRun returns the named run's metadata.
func mustRun(t *testing.T, d *DB, name string) *Run {
	t.Helper()
	r, err := d.Run(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testRun(name string) *Run {
	return &Run{Name: name, Layers: []Layer{
		{Name: "fc1.weight", Kind: DenseWeight, Shape: []int{4, 3}, Params: 12},
		{Name: "fc1.bias", Kind: Bias, Shape: []int{3}, Params: 3},
		{Name: "fc2.weight", Kind: DenseWeight, Shape: []int{3, 2}, Params: 6},
	}, Config: Config{Model: "mlp", Dataset: "mnist", LR: 0.02, BatchSize: 128, Seed: 1}}
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
		for _, bad := range []string{"", "a'b", "tab\tname", strings.Repeat("x", 201), "../escaped", "a/b", ".."} {
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
		steps, err := d.Steps(mustRun(t, d, "a"))
		if err != nil || !reflect.DeepEqual(steps, []int64{0, 256, 500, 1000, 1 << 40}) {
			t.Fatalf("Steps = %v, %v", steps, err)
		}
		var got []string
		err = d.Snapshots(mustRun(t, d, "a"), Window{256, 1001}, Select{Layers: []string{"fc2.weight", "fc1.bias"}}, func(s *Snapshot) error {
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
		if err := d.Snapshots(mustRun(t, d, "a"), AllSteps, Select{Layers: []string{"fc9"}}, func(*Snapshot) error { return nil }); !errors.Is(err, ErrLayerNotFound) {
			t.Fatalf("unknown layer in scan: got %v", err)
		}
		_, err = d.Snapshot(mustRun(t, d, "a"), 501, Select{})
		if !errors.Is(err, ErrStepNotFound) || !strings.Contains(err.Error(), `did you mean "500"`) {
			t.Fatalf("unknown step: %v", err)
		}
		s, err := d.Snapshot(mustRun(t, d, "a"), 1000, Select{})
		if err != nil || len(s.Blocks) != 3 || s.N != 2 || string(s.Block("fc1.bias")) != "fc1.bias@1000" {
			t.Fatalf("Snapshot = %+v, %v", s, err)
		}
		infos, err := d.SnapshotInfos(mustRun(t, d, "a"), Window{0, 1})
		if err != nil || len(infos) != 1 || infos[0].Bytes[0] != int64(len("fc1.weight@0")) {
			t.Fatalf("SnapshotInfos = %+v, %v", infos, err)
		}
		stop := errors.New("stop")
		n := 0
		if err := d.Snapshots(mustRun(t, d, "a"), AllSteps, Select{}, func(*Snapshot) error { n++; return stop }); err != stop || n != 1 {
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
		steps, err := d.Steps(mustRun(t, d, "a"))
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
		got, err := d.Snapshot(mustRun(t, d, "big"), 3, Select{})
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
		if err := d.Scalars(mustRun(t, d, "a"), Window{1, 5}, func(r ScalarRow) error { rows = append(rows, r); return nil }); err != nil {
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
		// Every single-bit flip of a version 2 value is caught; version 1
		// (no checksum) stays readable.
		good := encodeScalars(map[string]float64{"loss": 2.387, "lr": 0.02})
		for i := range good {
			for bit := range 8 {
				b := bytes.Clone(good)
				b[i] ^= 1 << bit
				if got, err := decodeScalars(b); err == nil && reflect.DeepEqual(got, map[string]float64{"loss": 2.387, "lr": 0.02}) == false {
					t.Fatalf("flipped bit %d of byte %d read as %v", bit, i, got)
				}
			}
		}
		v1 := []byte{1, 4, 'l', 'o', 's', 's', 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}
		if got, err := decodeScalars(v1); err != nil || got["loss"] != 1 {
			t.Fatalf("version 1 scalars: %v, %v", got, err)
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
		if steps, _ := d.Steps(mustRun(t, d, "a")); len(steps) != 0 {
			t.Fatalf("recreated run has steps %v", steps)
		}
		if steps, _ := d.Steps(mustRun(t, d, "b")); len(steps) != 1 {
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
	good := encodeManifest(&Snapshot{N: 3, Population: Full, HasAnchor: true, AnchorStep: 7}, []uint16{1, 2}, []uint16{2})
	m, err := decodeManifest(good)
	if err != nil || m.n != 3 || len(m.layers) != 2 || m.population != Full || !m.hasAnchor || m.anchorStep != 7 || !reflect.DeepEqual(m.anchor, []uint16{2}) {
		t.Fatalf("manifest round trip: %+v, %v", m, err)
	}
	for k := range good {
		if _, err := decodeManifest(good[:k]); err == nil {
			t.Fatalf("truncated manifest (%d bytes) accepted", k)
		}
	}
	// Every single-bit flip is caught by the checksum.
	for i := range good {
		for bit := range 8 {
			bad := bytes.Clone(good)
			bad[i] ^= 1 << bit
			if _, err := decodeManifest(bad); !errors.Is(err, ErrCorruptMetadata) {
				t.Fatalf("flipped bit %d of byte %d accepted: %v", bit, i, err)
			}
		}
	}
	// Version 1 (no flags, no checksum) stays readable.
	v1 := []byte{1, 3, 0, 0, 0, 0, 0, 0, 0, 9, 2, 1, 2}
	if m, err := decodeManifest(v1); err != nil || m.n != 3 || !reflect.DeepEqual(m.layers, []uint16{1, 2}) || m.population != Sample || m.hasAnchor {
		t.Fatalf("version 1 manifest: %+v, %v", m, err)
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

// TestPopulationAndAnchor stores a full snapshot with SVRG anchor blocks
// and a sampled one without: the scan reports each one's population and
// reads anchor blocks only when asked.
func TestPopulationAndAnchor(t *testing.T) {
	runDBTest(t, func(t *testing.T, d *DB) {
		if err := d.CreateRun(testRun("a")); err != nil {
			t.Fatal(err)
		}
		full := snap(100, "fc1.weight", "fc1.bias")
		full.Population, full.HasAnchor, full.AnchorStep = Full, true, 50
		full.Anchor = []LayerBlock{{Layer: "fc1.weight", Data: []byte("anchor-w")}, {Layer: "fc1.bias", Data: []byte("anchor-b")}}
		if err := d.PutSnapshot("a", full); err != nil {
			t.Fatal(err)
		}
		if err := d.PutSnapshot("a", snap(200, "fc1.weight", "fc1.bias")); err != nil {
			t.Fatal(err)
		}
		bad := snap(300, "fc1.weight")
		bad.HasAnchor, bad.AnchorStep = true, 301
		if err := d.PutSnapshot("a", bad); !errors.Is(err, ErrInvalidSnapshot) {
			t.Fatalf("anchor after the step: %v", err)
		}
		r := mustRun(t, d, "a")
		s, err := d.Snapshot(r, 100, Select{Layers: []string{"fc1.bias"}})
		if err != nil || s.Population != Full || !s.HasAnchor || s.AnchorStep != 50 || len(s.Anchor) != 0 || len(s.Blocks) != 1 {
			t.Fatalf("without anchors: %+v, %v", s, err)
		}
		s, err = d.Snapshot(r, 100, Select{Layers: []string{"fc1.bias"}, Anchor: true})
		if err != nil || string(s.AnchorBlock("fc1.bias")) != "anchor-b" || len(s.Anchor) != 1 || string(s.Block("fc1.bias")) != "fc1.bias@100" {
			t.Fatalf("with anchors: %+v, %v", s, err)
		}
		infos, err := d.SnapshotInfos(r, AllSteps)
		if err != nil || len(infos) != 2 || infos[0].Population != Full || infos[1].Population != Sample || infos[1].HasAnchor ||
			infos[0].AnchorBytes != int64(len("anchor-w")+len("anchor-b")) || infos[0].StoredBytes() != infos[0].AnchorBytes+int64(len("fc1.weight@100")+len("fc1.bias@100")) {
			t.Fatalf("infos: %+v, %v", infos, err)
		}
		if p, err := ParsePopulation("full"); err != nil || p != Full || p.String() != "full" {
			t.Fatalf("ParsePopulation: %v, %v", p, err)
		}
		if _, err := ParsePopulation("all"); err == nil {
			t.Fatal("ParsePopulation accepted 'all'")
		}
	})
}

// TestReaders checks that readers share a store, are refused (naming the
// writer) while a writer holds it, never create a store, and leave every
// file as it was.
func TestReaders(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.CreateRun(testRun("a")); err != nil {
		t.Fatal(err)
	}
	// A reader beside a live writer reads through the writer's socket.
	if rd, err := Open(dir, Options{ReadOnly: true, Log: io.Discard}); err != nil || !rd.Remote() {
		t.Fatalf("reader beside a writer: %v", err)
	} else if _, err := rd.Run("a"); err != nil {
		t.Fatalf("reader beside a writer: %v", err)
	} else {
		rd.Close()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	before := listing(t, dir)
	r1, err := Open(dir, Options{ReadOnly: true, Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(dir, Options{ReadOnly: true, Log: io.Discard})
	if err != nil {
		t.Fatalf("second reader: %v", err)
	}
	if _, err := r2.Run("a"); err != nil {
		t.Fatal(err)
	}
	r1.Close()
	r2.Close()
	if after := listing(t, dir); after != before {
		t.Fatalf("readers changed the store:\n%s\n%s", before, after)
	}
	empty := t.TempDir()
	if _, err := Open(empty, Options{ReadOnly: true}); !errors.Is(err, ErrNoStore) {
		t.Fatalf("reader on an empty directory: %v", err)
	}
	if _, err := Open(filepath.Join(empty, "x"), Options{MustExist: true}); !errors.Is(err, ErrNoStore) {
		t.Fatalf("MustExist on a new path: %v", err)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Fatalf("a refused open left %d files", len(entries))
	}
}

// listing describes dir's files: name, size and contents' checksum.
func listing(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%d:%x ", e.Name(), len(raw), crc32.ChecksumIEEE(raw))
	}
	return b.String()
}

// TestReadRollupsLater: a scan with Select.Later lists the rollups without
// their values; ReadRollups reads them, or their heads, into the caller's
// buffers in a transaction of its own, and says so when they are gone.
func TestReadRollupsLater(t *testing.T) {
	runDBTest(t, func(t *testing.T, d *DB) {
		fillStore(t, d, 10, 20)
		r := mustRun(t, d, "a")
		scan := func(sel Select) []*Snapshot {
			var out []*Snapshot
			if err := d.Snapshots(r, AllSteps, sel, func(s *Snapshot) error { out = append(out, s); return nil }); err != nil {
				t.Fatal(err)
			}
			return out
		}
		sel := Select{Rollups: true, NoBlocks: true, Later: true}
		snaps := scan(sel)
		if len(snaps) != 2 || len(snaps[0].Rollups) != 1 || snaps[0].Rollup("fc1.bias") != nil {
			t.Fatalf("listed: %+v", snaps)
		}
		if err := d.ReadRollups(snaps[0], sel); err != nil || string(snaps[0].Rollup("fc1.bias")) != "rollup" {
			t.Fatalf("read %q, %v", snaps[0].Rollup("fc1.bias"), err)
		}
		buffers := 0
		sel.Head = func(v []byte) int { return 3 }
		sel.Buffer = func(n int) []byte { buffers++; return make([]byte, n, 64) }
		if err := d.ReadRollups(snaps[1], sel); err != nil || string(snaps[1].Rollup("fc1.bias")) != "rol" ||
			buffers != 1 || cap(snaps[1].Rollup("fc1.bias")) != 64 {
			t.Fatalf("head %q (%d buffers), %v", snaps[1].Rollup("fc1.bias"), buffers, err)
		}
		snaps = scan(Select{Rollups: true, NoBlocks: true, Later: true})
		if err := d.DeleteRun("a"); err != nil {
			t.Fatal(err)
		}
		if err := d.ReadRollups(snaps[0], sel); err == nil || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("rollup of a deleted run: %v", err)
		}
	})
}

// TestMatchRuns: runs by glob, sorted; a malformed pattern is an error.
func TestMatchRuns(t *testing.T) {
	runDBTest(t, func(t *testing.T, d *DB) {
		for _, n := range []string{"lr-1", "b", "lr-0"} {
			if err := d.CreateRun(testRun(n)); err != nil {
				t.Fatal(err)
			}
		}
		for glob, want := range map[string]string{"lr-*": "lr-0 lr-1", "*": "b lr-0 lr-1", "b": "b", "x*": ""} {
			runs, err := d.MatchRuns(glob)
			var got []string
			for _, r := range runs {
				got = append(got, r.Name)
			}
			if err != nil || strings.Join(got, " ") != want {
				t.Errorf("%q: %v, %v; want %s", glob, got, err, want)
			}
		}
		if _, err := d.MatchRuns("lr-["); err == nil {
			t.Error("malformed pattern accepted")
		}
	})
}

package interchange

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/synth"
)

func snapshot(t *testing.T, corrupt bool) *db.Snapshot {
	t.Helper()
	layers := synth.MLP(5, 4, 3)
	blocks := synth.Snapshot(rand.New(rand.NewPCG(1, 2)), 6, layers)
	s := &db.Snapshot{Step: 7, N: 6}
	for i, l := range layers {
		data, err := codec.Encode(blocks[l.Name], codec.Float32)
		if err != nil {
			t.Fatal(err)
		}
		if corrupt && i == 2 {
			data[len(data)/2] ^= 1
		}
		name := l.Name
		if i == 0 {
			name = "../escaped"
		}
		s.Blocks = append(s.Blocks, db.LayerBlock{Layer: name, Data: data})
	}
	return s
}

func TestWriteSnapshot(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(root, "x")
	man, err := WriteSnapshot(out, "r", snapshot(t, false), Options{Materialize: true})
	if err != nil {
		t.Fatal(err)
	}
	if man.Layers[0].Files["A"] != ".._escaped.A.npy" {
		t.Errorf("layer file %q", man.Layers[0].Files["A"])
	}
	if _, err := os.Stat(filepath.Join(out, ".._escaped.A.npy")); err != nil {
		t.Error(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 1 {
		t.Errorf("%d entries beside the export (a layer escaped it?)", len(entries))
	}
	if _, err := WriteSnapshot(out, "r", snapshot(t, false), Options{}); !errors.Is(err, ErrExists) {
		t.Errorf("export over an export: %v", err)
	}
	bad := filepath.Join(root, "bad")
	if _, err := WriteSnapshot(bad, "r", snapshot(t, true), Options{}); err == nil {
		t.Error("export of a corrupt block succeeded")
	}
	if entries, _ := os.ReadDir(root); len(entries) != 1 {
		t.Errorf("a failed export left files: %d entries", len(entries))
	}
	for in, want := range map[string]string{"fc1.weight": "fc1.weight", "a/b": "a_b", "..": "__", "é": "_"} {
		if got := FileName(in); got != want {
			t.Errorf("FileName(%q) = %q, want %q", in, got, want)
		}
	}
}

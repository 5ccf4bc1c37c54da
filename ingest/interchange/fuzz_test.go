package interchange

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/synth"
)

// fuzzSeed writes a valid snapshot directory of an MLP 5-4-3 (factored
// weights, dense biases, attributes) and returns its run configuration.
func fuzzSeed(t testing.TB, dir string) (*RunConfig, *db.Run) {
	layers := synth.MLP(5, 4, 3)
	blocks := synth.Snapshot(rand.New(rand.NewPCG(3, 4)), 6, layers)
	s := &db.Snapshot{Step: 7, N: 6}
	for _, l := range layers {
		data, err := codec.Encode(blocks[l.Name], codec.Float32)
		if err != nil {
			t.Fatal(err)
		}
		s.Blocks = append(s.Blocks, db.LayerBlock{Layer: l.Name, Data: data})
	}
	attrs := &codec.Attributes{N: 6, Columns: []codec.Column{{Name: "label", Type: codec.Int, Ints: []int64{0, 1, 2, 0, 1, 2}}}}
	var err error
	if s.Attributes, err = codec.EncodeAttributes(attrs); err != nil {
		t.Fatal(err)
	}
	if _, err := writeFiles(dir, "r", s, Options{}); err != nil {
		t.Fatal(err)
	}
	c := &RunConfig{Format: RunFormat, Version: FormatVersion, BatchSize: 2, LossReduction: "mean", WeightLayout: LayoutInOut,
		Layers: synth.Schema(layers)}
	r, err := c.Run("r")
	if err != nil {
		t.Fatal(err)
	}
	return c, r
}

// FuzzReadSnapshot damages a snapshot directory's manifest or one of its
// .npy files: ReadSnapshot returns a snapshot the Writer accepts, or an
// error, never a panic or an allocation the files do not back.
func FuzzReadSnapshot(f *testing.F) {
	seed := f.TempDir()
	fuzzSeed(f, seed)
	files := []string{"manifest.json", "ids.npy", "fc1.weight.A.npy", "fc1.bias.rows.npy", "attr.label.npy"}
	for i, name := range files {
		raw, err := os.ReadFile(filepath.Join(seed, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), raw)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		dir := t.TempDir()
		c, r := fuzzSeed(t, dir)
		if err := os.WriteFile(filepath.Join(dir, files[int(which)%len(files)]), data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, _, err := ReadSnapshot(dir, c, r)
		if err != nil {
			return
		}
		for _, nb := range s.Blocks {
			if err := nb.Block.Validate(); err != nil {
				t.Fatalf("layer %s: accepted an invalid block: %v", nb.Layer, err)
			}
		}
	})
}

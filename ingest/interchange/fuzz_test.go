package interchange

import (
	"bytes"
	"encoding/binary"
	"math"
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
	// Hostile seeds: names leading out of the directory, an id over int63.
	man, err := os.ReadFile(filepath.Join(seed, "manifest.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{`"../ids.npy"`, `"/dev/zero"`, `"."`, `"ids.npy/.."`} {
		f.Add(uint8(0), bytes.Replace(man, []byte(`"ids.npy"`), []byte(name), 1))
		f.Add(uint8(0), bytes.Replace(man, []byte(`"attr.label.npy"`), []byte(name), 1))
	}
	ids, err := os.ReadFile(filepath.Join(seed, "ids.npy"))
	if err != nil {
		f.Fatal(err)
	}
	ids = bytes.Clone(ids)
	binary.LittleEndian.PutUint64(ids[len(ids)-8:], math.MaxUint64)
	f.Add(uint8(1), ids)
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
			for _, id := range nb.Block.IDs {
				if id > math.MaxInt64 {
					t.Fatalf("layer %s: accepted example id %d, over int63", nb.Layer, id)
				}
			}
		}
	})
}

// FuzzReadScalars reads any scalars.jsonl: while following, only whole
// lines are taken (the offset ends after a newline); once the writer has
// finished, either every byte is read or it is an error; both agree on
// the lines they read.
func FuzzReadScalars(f *testing.F) {
	for _, s := range []string{"{\"step\": 1, \"loss\": 0.5}\n{\"step\": 2, \"loss\": null}\n", "{\"step\": 1, \"loss\": 2, \"loss\": 3}\n",
		"{\"step\": 3, \"acc\": 1}\n{\"step\": 4", "\n\n{\"step\": 0}\r\n", "{\"step\": 1e2, \"x\": -0}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "scalars.jsonl"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		follow, off, ferr := ReadScalars(dir, 0, 0, false)
		if off < 0 || off > int64(len(data)) || off > 0 && data[off-1] != '\n' {
			t.Fatalf("following: offset %d of %d bytes", off, len(data))
		}
		final, foff, err := ReadScalars(dir, 0, 0, true)
		if err == nil && (foff != int64(len(data)) || ferr != nil) {
			t.Fatalf("finished without error at %d of %d bytes (following: %v)", foff, len(data), ferr)
		}
		if ferr == nil && len(final) < len(follow) {
			t.Fatalf("finished read %d lines, following %d", len(final), len(follow))
		}
		for i := range min(len(final), len(follow)) {
			if final[i].Step != follow[i].Step || final[i].Line != follow[i].Line || len(final[i].Values) != len(follow[i].Values) {
				t.Fatalf("line %d: %+v and %+v", i, final[i], follow[i])
			}
		}
	})
}

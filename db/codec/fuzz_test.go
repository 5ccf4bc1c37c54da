package codec

import (
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

var regenCorpus = flag.Bool("regen-corpus", false, "rewrite testdata/fuzz/FuzzDecode seeds")

// fixCRC returns data with its trailing checksum recomputed, so that the
// fuzzer reaches the parser behind the checksum.
func fixCRC(data []byte) []byte {
	if len(data) < 4 {
		return data
	}
	c := append([]byte(nil), data...)
	binary.LittleEndian.PutUint32(c[len(c)-4:], crc32.Checksum(c[:len(c)-4], crcTable))
	return c
}

func seedBlocks() [][]byte {
	rng := rand.New(rand.NewPCG(7, 8))
	var out [][]byte
	for _, kind := range []Kind{Factored, Dense} {
		for _, enc := range []Encoding{Float32, Float16, BFloat16, Int8} {
			for _, n := range []int{0, 2} {
				b := randBlock(rng, kind, n)
				specials(b)
				data, err := Encode(b, enc)
				if err != nil {
					panic(err)
				}
				out = append(out, data)
			}
		}
	}
	// Both streams in one zstd frame (quantized inputs).
	data, err := Encode(quantizedBlock(rng, 32, 64), Float32)
	if err != nil {
		panic(err)
	}
	return append(out, data)
}

// TestFuzzCorpus keeps the checked-in seed corpus in step with the format:
// run with -regen-corpus after a format change.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *regenCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, data := range seedBlocks() {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("no seed corpus in %s (run go test -run FuzzCorpus -regen-corpus): %v", dir, err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, data := range seedBlocks() {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, d := range [][]byte{data, fixCRC(data)} {
			h, herr := ReadHeader(d)
			b, err := Decode(d)
			if err != nil {
				continue
			}
			if herr != nil {
				t.Fatalf("Decode accepted what ReadHeader rejects: %v", herr)
			}
			if err := b.Validate(); err != nil {
				t.Fatalf("decoded block is invalid: %v", err)
			}
			if b.N() != h.N || b.Params() != h.Params() {
				t.Fatalf("block %d x %d disagrees with header %+v", b.N(), b.Params(), h)
			}
		}
	})
}

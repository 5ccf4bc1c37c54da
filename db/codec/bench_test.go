package codec_test

import (
	"math/rand/v2"
	"testing"

	"gvdb/db/codec"
	"gvdb/db/synth"
)

var encodings = []codec.Encoding{codec.Float32, codec.Float16, codec.BFloat16, codec.Int8}

// benchBlocks are realistic blocks with a fixed seed: ReLU-sparse inputs
// (about half zeros) with heavy-tailed deltas, and a dense bias block.
func benchBlocks() map[string]*codec.Block {
	rng := rand.New(rand.NewPCG(42, 42))
	return map[string]*codec.Block{
		"factored-784x1024": synth.Factored(rng, 256, 784, 1024),
		"dense-1024":        synth.Dense(rng, 256, 1024),
	}
}

func BenchmarkEncode(b *testing.B) {
	for name, blk := range benchBlocks() {
		for _, enc := range encodings {
			b.Run(name+"/"+enc.String(), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(4 * int64(blk.StoredValues()))
				var data []byte
				for b.Loop() {
					var err error
					if data, err = codec.Encode(blk, enc); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(data))/float64(blk.N()), "bytes/example")
				b.ReportMetric(float64(4*blk.StoredValues())/float64(len(data)), "ratio")
			})
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for name, blk := range benchBlocks() {
		for _, enc := range encodings {
			b.Run(name+"/"+enc.String(), func(b *testing.B) {
				data, err := codec.Encode(blk, enc)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.SetBytes(4 * int64(blk.StoredValues()))
				for b.Loop() {
					if _, err := codec.Decode(data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkMLPSnapshotSize measures the stored bytes per example of a
// snapshot of the paper's MLP 784-1024-1024-10 (three dense layers plus
// biases) against the 4*D bytes of one materialized float32 gradient.
func BenchmarkMLPSnapshotSize(b *testing.B) {
	layers := synth.MLP(784, 1024, 1024, 10)
	D := 0
	for _, l := range layers {
		if l.Bias {
			D += l.In
		} else {
			D += l.In * l.Out
		}
	}
	const n = 256
	blocks := synth.Snapshot(rand.New(rand.NewPCG(1, 1)), n, layers)
	for _, enc := range encodings {
		b.Run(enc.String(), func(b *testing.B) {
			var stored int
			for b.Loop() {
				stored = 0
				for _, l := range layers {
					data, err := codec.Encode(blocks[l.Name], enc)
					if err != nil {
						b.Fatal(err)
					}
					stored += len(data)
				}
			}
			perExample := float64(stored) / n
			b.ReportMetric(perExample, "bytes/example")
			b.ReportMetric(float64(4*D), "materialized-bytes/example")
			b.ReportMetric(float64(4*D)/perExample, "x-smaller")
		})
	}
}

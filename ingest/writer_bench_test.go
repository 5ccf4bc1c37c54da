package ingest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/synth"
)

// BenchmarkWriter compares the Writer (encode + commit, N = 128 examples of
// the paper's MLP 784-1024-1024-10 per snapshot) with raw Badger writes of
// the same encoded bytes, one transaction per snapshot, into a store opened
// with the same options. Each iteration writes a round of 20 snapshots
// both ways (each round ends with a sync), alternating, so that both rates
// come from the same stretch of machine time; writer/raw is their ratio.
// The sub-benchmarks differ by the rollups the Writer computes beside the
// blocks (none, auto: scalars and per-example tables here, vectors).
func BenchmarkWriter(b *testing.B) {
	for _, p := range []RollupPolicy{RollupsNone, RollupsAuto, RollupsVectors} {
		b.Run("rollups="+string(p), func(b *testing.B) { benchWriter(b, p) })
	}
}

func benchWriter(b *testing.B, policy RollupPolicy) {
	layers := synth.MLP(784, 1024, 1024, 10)
	const n, round = 128, 20
	rng := rand.New(rand.NewPCG(3, 3))
	var snaps []*Snapshot
	var encoded [][][]byte
	for range 4 {
		blocks := synth.Snapshot(rng, n, layers)
		s := &Snapshot{}
		var vals [][]byte
		for _, l := range layers {
			s.Blocks = append(s.Blocks, NamedBlock{Layer: l.Name, Block: blocks[l.Name]})
			data, err := codec.Encode(blocks[l.Name], codec.Float32)
			if err != nil {
				b.Fatal(err)
			}
			vals = append(vals, data)
		}
		snaps = append(snaps, s)
		encoded = append(encoded, vals)
	}
	d, err := db.Open(b.TempDir(), db.Options{Log: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if err := d.CreateRun(&db.Run{Name: "bench", Layers: synth.Schema(layers), Config: db.Config{Model: "mlp"}}); err != nil {
		b.Fatal(err)
	}
	w, err := NewWriter(d, "bench", Options{Rollups: policy})
	if err != nil {
		b.Fatal(err)
	}
	bdb, err := badger.Open(db.BadgerOptions(b.TempDir(), db.Options{Log: io.Discard}))
	if err != nil {
		b.Fatal(err)
	}
	defer bdb.Close()

	ctx := context.Background()
	var writerTime, rawTime time.Duration
	var stored, input int64
	step := 0
	for b.Loop() {
		t0 := time.Now()
		for i := range round {
			s := *snaps[(step+i)%4]
			s.Step = int64(step + i)
			if err := w.Write(ctx, &s); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		writerTime += time.Since(t0)

		t1 := time.Now()
		for i := range round {
			err := bdb.Update(func(txn *badger.Txn) error {
				for l, v := range encoded[(step+i)%4] {
					if err := txn.Set([]byte(fmt.Sprintf("s%012d/%02d", step+i, l)), v); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := bdb.Sync(); err != nil {
			b.Fatal(err)
		}
		rawTime += time.Since(t1)
		step += round
	}
	st := w.Stats()
	stored, input = st.StoredBytes, st.InputBytes
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Examples)/writerTime.Seconds(), "writer-examples/s")
	b.ReportMetric(float64(input)/writerTime.Seconds()/1e6, "writer-input-MB/s")
	b.ReportMetric(float64(stored)/writerTime.Seconds()/1e6, "writer-MB/s")
	b.ReportMetric(float64(stored)/rawTime.Seconds()/1e6, "raw-MB/s")
	b.ReportMetric(rawTime.Seconds()/writerTime.Seconds(), "writer/raw")
}

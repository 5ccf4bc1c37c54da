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
	"gvdb/ingest/codec"
	"gvdb/ingest/synth"
)

// BenchmarkWriter compares the Writer (encode + commit, N = 128 examples of
// the paper's MLP 784-1024-1024-10 per snapshot) with raw Badger writes of
// the same encoded bytes, one transaction per snapshot, into a store opened
// with the same options. Both end with a sync.
func BenchmarkWriter(b *testing.B) {
	layers := synth.MLP(784, 1024, 1024, 10)
	const n = 128
	rng := rand.New(rand.NewPCG(3, 3))
	var snaps []*Snapshot
	for range 4 {
		blocks := synth.Snapshot(rng, n, layers)
		s := &Snapshot{}
		for _, l := range layers {
			s.Blocks = append(s.Blocks, NamedBlock{Layer: l.Name, Block: blocks[l.Name]})
		}
		snaps = append(snaps, s)
	}
	run := &db.Run{Name: "bench", Model: "mlp"}
	for _, l := range layers {
		run.Layers = append(run.Layers, db.Layer{Name: l.Name, Kind: db.Other})
	}

	b.Run("writer", func(b *testing.B) {
		d, err := db.Open(b.TempDir(), db.Options{Log: io.Discard})
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		r := *run
		if err := d.CreateRun(&r); err != nil {
			b.Fatal(err)
		}
		w, err := NewWriter(d, "bench", Options{})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		start := time.Now()
		step := int64(0)
		for b.Loop() {
			s := *snaps[step%4]
			s.Step = step
			if err := w.Write(ctx, &s); err != nil {
				b.Fatal(err)
			}
			step++
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		sec := time.Since(start).Seconds()
		st := w.Stats()
		b.ReportMetric(float64(st.Examples)/sec, "examples/s")
		b.ReportMetric(float64(st.InputBytes)/sec/1e6, "input-MB/s")
		b.ReportMetric(float64(st.StoredBytes)/sec/1e6, "stored-MB/s")
	})

	b.Run("raw-badger", func(b *testing.B) {
		var encoded [][][]byte
		for _, s := range snaps {
			var vals [][]byte
			for _, nb := range s.Blocks {
				data, err := codec.Encode(nb.Block, codec.Float32)
				if err != nil {
					b.Fatal(err)
				}
				vals = append(vals, data)
			}
			encoded = append(encoded, vals)
		}
		bdb, err := badger.Open(db.BadgerOptions(b.TempDir(), db.Options{Log: io.Discard}))
		if err != nil {
			b.Fatal(err)
		}
		defer bdb.Close()
		var stored int64
		start := time.Now()
		step := 0
		for b.Loop() {
			vals := encoded[step%4]
			err := bdb.Update(func(txn *badger.Txn) error {
				for l, v := range vals {
					if err := txn.Set([]byte(fmt.Sprintf("s%012d/%02d", step, l)), v); err != nil {
						return err
					}
					stored += int64(len(v))
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			step++
		}
		if err := bdb.Sync(); err != nil {
			b.Fatal(err)
		}
		sec := time.Since(start).Seconds()
		b.ReportMetric(float64(step*n)/sec, "examples/s")
		b.ReportMetric(float64(stored)/sec/1e6, "stored-MB/s")
	})
}

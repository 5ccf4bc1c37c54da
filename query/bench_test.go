package query

import (
	"context"
	"flag"
	"io"
	"math/rand/v2"
	"testing"

	"gvdb/db"
	"gvdb/ingest"
	"gvdb/ingest/codec"
	"gvdb/ingest/synth"
)

var (
	benchSnapshots = flag.Int("bench-snapshots", 50, "snapshots in BenchmarkQuery's store")
	benchExamples  = flag.Int("bench-examples", 1024, "examples per snapshot in BenchmarkQuery's store")
)

// BenchmarkQuery times SELECT variance(128), nvar(128), gns ... GROUP BY
// window(1000) over 50 snapshots x 1024 examples of the MLP
// 784-1024-1024-10 (float32 blocks; 4 distinct snapshots, repeated), and
// reports the split between reading, decoding and computing.
func BenchmarkQuery(b *testing.B) {
	d, err := db.Open(b.TempDir(), db.Options{Log: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	layers := synth.MLP(784, 1024, 1024, 10)
	r := &db.Run{Name: "r", Model: "mlp", BatchSize: 128}
	for _, l := range layers {
		r.Layers = append(r.Layers, db.Layer{Name: l.Name, Kind: db.Other})
	}
	if err := d.CreateRun(r); err != nil {
		b.Fatal(err)
	}
	w, err := ingest.NewWriter(d, "r", ingest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	var distinct []map[string]*codec.Block
	for range 4 {
		distinct = append(distinct, synth.Snapshot(rng, *benchExamples, layers))
	}
	for i := range *benchSnapshots {
		s := &ingest.Snapshot{Step: int64(i) * 200}
		for _, l := range layers {
			s.Blocks = append(s.Blocks, ingest.NamedBlock{Layer: l.Name, Block: distinct[i%4][l.Name]})
		}
		if err := w.Write(context.Background(), s); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	st, err := ParseStatement("SELECT variance(128), nvar(128), gns FROM 'r' GROUP BY window(1000)")
	if err != nil {
		b.Fatal(err)
	}
	var last EvalStats
	b.ResetTimer()
	for b.Loop() {
		res, err := Eval(context.Background(), d, st, Options{})
		if err != nil {
			b.Fatal(err)
		}
		last = res.Stats
	}
	b.ReportMetric(last.Read.Seconds(), "read-s")
	b.ReportMetric(last.Decode.Seconds(), "decode-s")
	b.ReportMetric(last.Compute.Seconds(), "compute-s")
	b.ReportMetric(float64(last.BytesRead)/(1<<20), "MiB-read")
	b.ReportMetric(float64(last.Snapshots), "snapshots")
}

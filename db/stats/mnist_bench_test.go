package stats_test

import (
	"flag"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"gvdb/db/stats"
	"gvdb/trainer"
)

var mnistN = flag.Int("mnist-n", 60000, "MNIST training examples in BenchmarkGCMNIST (the full snapshot)")

// mnistPopulation trains an MLP 784-256-256-10 on MNIST's first n
// examples for 200 steps and captures all of them: a full snapshot.
func mnistPopulation(b *testing.B, n int) []stats.Layer {
	dir, err := trainer.MNISTDir()
	if err != nil {
		b.Skip(err)
	}
	train, _, err := trainer.LoadMNIST(dir)
	if err != nil {
		b.Fatal(err)
	}
	train = train.Head(n)
	cfg := trainer.Spec{Kind: "mlp", Hidden: []int{256, 256}}
	net, err := trainer.NewNet(cfg, train, 128, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer net.Close()
	for s := range 200 {
		idx := make([]int, 128)
		for i := range idx {
			idx[i] = (s*128 + i*7919) % n
		}
		if _, _, err := net.Step(train, idx, 0.02, 0.5, 5e-4); err != nil {
			b.Fatal(err)
		}
	}
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i
	}
	snap, err := net.Capture(train, ids)
	if err != nil {
		b.Fatal(err)
	}
	var layers []stats.Layer
	for _, nb := range snap.Blocks {
		layers = append(layers, stats.Layer{Name: nb.Layer, Block: nb.Block, Weight: strings.HasSuffix(nb.Layer, ".weight")})
	}
	return layers
}

// BenchmarkGCMNIST is Gradient Clustering at the paper's scale: a full
// snapshot of MNIST (N = 60,000; -mnist-n) of an MLP 784-256-256-10 after
// 200 steps, K = 128, 10 rounds, in-sample. The sketch path always runs;
// the Gram path too when N <= 8192, and sketch/gram compares the two
// partitions' exact objectives. Metrics: seconds per path, the peak heap
// above what was live before (peak-MiB), what was live before
// (heap-before-MiB: the MNIST data, the model and the snapshot), and the process's peak resident memory (rss-MiB).
func BenchmarkGCMNIST(b *testing.B) {
	layers := mnistPopulation(b, *mnistN)
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	input := float64(sample[0].Value.Uint64())
	const k = 128
	run := func(path stats.Path) (float64, float64, float64) {
		var obj float64
		start := time.Now()
		peak := stats.PeakHeap(func() {
			g, err := stats.NewGC(layers, stats.GCOptions{Seed: 1, Rounds: 10, Path: path})
			if err != nil {
				b.Fatal(err)
			}
			p, err := g.InSample(k)
			if err != nil {
				b.Fatal(err)
			}
			obj = p.VarB
		})
		return obj, time.Since(start).Seconds(), peak
	}
	for b.Loop() {
		sk, sec, peak := run(stats.PathSketch)
		b.ReportMetric(sec, "sketch-s")
		b.ReportMetric(peak/(1<<20), "peak-MiB")
		if *mnistN <= stats.DefaultGramMaxN {
			gr, gsec, gpeak := run(stats.PathGram)
			b.ReportMetric(gsec, "gram-s")
			b.ReportMetric(gpeak/(1<<20), "gram-peak-MiB")
			b.ReportMetric(sk/gr, "sketch/gram")
		}
	}
	b.ReportMetric(input/(1<<20), "heap-before-MiB")
	b.ReportMetric(float64(stats.RSS())/(1<<20), "rss-MiB")
}

// BenchmarkGCMethods times the paper's algorithm ('paper': rank-1 centres,
// weights only) against gvdb's exact fit ('exact', on the path PathAuto
// picks: Gram up to 8192 examples, else the sketch) on the same full
// snapshot as BenchmarkGCMNIST, K = 128, 10 rounds, both scored exactly.
// Metrics: seconds of each, and GC/SG-B of each at B = K (gc_variance(K,
// K) / variance(K) = K·VarB_K / VarB_1).
//
//	go test ./db/stats -run X -bench GCMethods -benchtime 1x -args -mnist-n=10000
func BenchmarkGCMethods(b *testing.B) {
	layers := mnistPopulation(b, *mnistN)
	const k = 128
	for b.Loop() {
		g, err := stats.NewGC(layers, stats.GCOptions{Seed: 1, Rounds: 10})
		if err != nil {
			b.Fatal(err)
		}
		one, err := g.InSample(1)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range []stats.Method{stats.MethodExact, stats.MethodPaper} {
			start := time.Now()
			p, err := g.Fit(k, m, false)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(time.Since(start).Seconds(), m.String()+"-s")
			b.ReportMetric(p.VarB*k/one.VarB, m.String()+"-GC/SG")
		}
	}
}

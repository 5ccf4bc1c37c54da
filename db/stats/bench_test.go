package stats

import (
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"gvdb/db/synth"
)

var benchN = flag.Int("bench-n", 1024, "examples per snapshot in the stats benchmarks")

// mlpScope is a snapshot of the paper's MLP 784-1024-1024-10 with N
// examples, every layer in scope.
func mlpScope(n int) []Layer {
	ls := synth.MLP(784, 1024, 1024, 10)
	blocks := synth.Snapshot(rand.New(rand.NewPCG(11, 11)), n, ls)
	var out []Layer
	for _, l := range ls {
		out = append(out, Layer{Name: l.Name, Block: blocks[l.Name]})
	}
	return out
}

// materialized32 is the brute-force path in float32: every per-example
// gradient is materialized (D values) and accumulated; with coords the
// per-coordinate second moment too.
func materialized32(layers []Layer, coords bool) (sum, sumSq []float32, sqNorm float64) {
	d := 0
	for _, l := range layers {
		d += l.Block.Params()
	}
	sum = make([]float32, d)
	if coords {
		sumSq = make([]float32, d)
	}
	g := make([]float32, d)
	n := layers[0].Block.N()
	for i := range n {
		off := 0
		for _, l := range layers {
			b := l.Block
			if b.Rows != nil {
				copy(g[off:], b.Rows[i*b.Dim:(i+1)*b.Dim])
			} else {
				a, dl := b.A[i*b.In:(i+1)*b.In], b.Delta[i*b.Out:(i+1)*b.Out]
				for p, ap := range a {
					row := g[off+p*b.Out : off+(p+1)*b.Out]
					for q, dq := range dl {
						row[q] = ap * dq
					}
				}
			}
			off += b.Params()
		}
		gv := blas32.Vector{N: d, Inc: 1, Data: g}
		blas32.Axpy(1, gv, blas32.Vector{N: d, Inc: 1, Data: sum})
		sqNorm += float64(blas32.Dot(gv, gv))
		if coords {
			for j, v := range g {
				sumSq[j] += v * v
			}
		}
	}
	return sum, sumSq, sqNorm
}

// peakHeap runs fn and returns the largest live heap growth seen while it
// ran, sampled every 2 ms.
func peakHeap(fn func()) float64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if v := read(); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	fn()
	close(done)
	if p := peak.Load(); p > base {
		return float64(p - base)
	}
	return 0
}

// BenchmarkMoments compares variance + gns + norm, and nvar, on factors
// (matrix products) with the materialized float32 brute force.
func BenchmarkMoments(b *testing.B) {
	layers := mlpScope(*benchN)
	b.Run("variance-gns-norm/factored", func(b *testing.B) {
		for b.Loop() {
			m, err := Compute(layers, 0, Need{})
			if err != nil {
				b.Fatal(err)
			}
			_, _, _ = m.Variance(128), m.GNS(), m.Norm()
		}
	})
	b.Run("variance-gns-norm/factored-AtD-only", func(b *testing.B) {
		gramRoute = -1 // no Gram form, whatever N: the cost model's alternative
		defer func() { gramRoute = 0 }()
		for b.Loop() {
			m, err := Compute(layers, 0, Need{})
			if err != nil {
				b.Fatal(err)
			}
			_, _, _ = m.Variance(128), m.GNS(), m.Norm()
		}
	})
	b.Run("variance-gns-norm/materialized", func(b *testing.B) {
		for b.Loop() {
			materialized32(layers, false)
		}
	})
	b.Run("nvar/factored", func(b *testing.B) {
		for b.Loop() {
			m, err := Compute(layers, 0, Need{Coords: true})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m.NVar(128); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("nvar/materialized", func(b *testing.B) {
		for b.Loop() {
			materialized32(layers, true)
		}
	})
}

// BenchmarkGC clusters N examples of the MLP into K = 128 clusters for 10
// rounds: on the Gram matrix (gvdb) and by materialized k-means (every
// gradient materialized in float32, distances by sgemm, same weighted
// assignment). The materialized side holds N·D floats (7.6 GB at N =
// 1024); run it with -benchtime 1x.
func BenchmarkGC(b *testing.B) {
	layers := mlpScope(*benchN)
	const k, rounds = 128, 10
	b.Run("gram", func(b *testing.B) {
		var peak float64
		for b.Loop() {
			peak = peakHeap(func() {
				g, err := NewGram(layers)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Cluster(g, layers[0].Block.IDs, k, GCOptions{Rounds: rounds, Seed: 1}); err != nil {
					b.Fatal(err)
				}
			})
		}
		b.ReportMetric(peak/(1<<20), "peak-MiB")
	})
	b.Run("materialized", func(b *testing.B) {
		var peak float64
		for b.Loop() {
			peak = peakHeap(func() { materializedKMeans(layers, k, rounds) })
		}
		b.ReportMetric(peak/(1<<20), "peak-MiB")
	})
}

// materializedKMeans is the paper's batch GC on materialized gradients:
// centres are member means; each round assigns with (N'_k+1)·|g_i − c_k|².
func materializedKMeans(layers []Layer, k, rounds int) float64 {
	n := layers[0].Block.N()
	d := 0
	for _, l := range layers {
		d += l.Block.Params()
	}
	g := make([]float32, n*d)
	sq := make([]float64, n)
	for i := range n {
		off := 0
		row := g[i*d : (i+1)*d]
		for _, l := range layers {
			bl := l.Block
			if bl.Rows != nil {
				copy(row[off:], bl.Rows[i*bl.Dim:(i+1)*bl.Dim])
			} else {
				for p, ap := range bl.A[i*bl.In : (i+1)*bl.In] {
					r := row[off+p*bl.Out : off+(p+1)*bl.Out]
					for q, dq := range bl.Delta[i*bl.Out : (i+1)*bl.Out] {
						r[q] = ap * dq
					}
				}
			}
			off += bl.Params()
		}
		v := blas32.Vector{N: d, Inc: 1, Data: row}
		sq[i] = float64(blas32.Dot(v, v))
	}
	rng := rand.New(rand.NewPCG(1, 1))
	assign := make([]int, n)
	for i := range assign {
		assign[i] = i % k
	}
	rng.Shuffle(n, func(a, b int) { assign[a], assign[b] = assign[b], assign[a] })
	c := make([]float32, k*d)
	dots := make([]float32, n*k)
	var obj float64
	for range rounds {
		// U-step: centres are member means.
		clear(c)
		size := make([]int, k)
		for i, a := range assign {
			size[a]++
			blas32.Axpy(1, blas32.Vector{N: d, Inc: 1, Data: g[i*d : (i+1)*d]}, blas32.Vector{N: d, Inc: 1, Data: c[a*d : (a+1)*d]})
		}
		cn := make([]float64, k)
		for a := range k {
			if size[a] > 0 {
				cv := blas32.Vector{N: d, Inc: 1, Data: c[a*d : (a+1)*d]}
				blas32.Scal(1/float32(size[a]), cv)
				cn[a] = float64(blas32.Dot(cv, cv))
			}
		}
		// A-step: distances through G Cᵀ.
		blas32.Gemm(blas.NoTrans, blas.Trans, 1,
			blas32.General{Rows: n, Cols: d, Stride: d, Data: g},
			blas32.General{Rows: k, Cols: d, Stride: d, Data: c}, 0,
			blas32.General{Rows: n, Cols: k, Stride: k, Data: dots})
		running := make([]int, k)
		obj = 0
		for i := range n {
			best, bd := 0, math.Inf(1)
			for a := range k {
				if size[a] == 0 {
					continue
				}
				dist := sq[i] - 2*float64(dots[i*k+a]) + cn[a]
				if v := float64(running[a]+1) * dist; v < bd {
					best, bd = a, v
				}
			}
			assign[i] = best
			running[best]++
			obj += bd
		}
	}
	return obj
}

// peakRSS returns the process's peak resident memory in bytes, from
// /proc/self/status (0 where it cannot be read).
func peakRSS() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

package query

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/synth"
	"gvdb/ingest"
	"gvdb/ingest/interchange"
	"gvdb/query/parser"
)

var (
	benchSnapshots = flag.Int("bench-snapshots", 50, "snapshots in BenchmarkQuery's store")
	benchExamples  = flag.Int("bench-examples", 1024, "examples per snapshot in BenchmarkQuery's store")
	benchWidths    = flag.String("bench-widths", "784,1024,1024,10", "MLP widths of BenchmarkQuery's store")
	benchNumPy     = flag.Bool("bench-numpy", true, "also time python/moments_numpy.py on the exported snapshots")
)

// benchStore writes the benchmark store: bench-snapshots snapshots of
// bench-examples examples of an MLP (4 distinct synthetic snapshots,
// repeated), float32 blocks, rollups with vectors.
func benchStore(b *testing.B) (*db.DB, *db.Run) {
	var widths []int
	for _, f := range strings.Split(*benchWidths, ",") {
		w, err := strconv.Atoi(f)
		if err != nil {
			b.Fatal(err)
		}
		widths = append(widths, w)
	}
	d, err := db.Open(b.TempDir(), db.Options{Log: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	layers := synth.MLP(widths...)
	r := &db.Run{Name: "r", Layers: synth.Schema(layers), Config: db.Config{Model: "mlp", BatchSize: 128}}
	if err := d.CreateRun(r); err != nil {
		b.Fatal(err)
	}
	w, err := ingest.NewWriter(d, "r", ingest.Options{Rollups: ingest.RollupsVectors})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	var distinct []map[string]*codec.Block
	for range 4 {
		distinct = append(distinct, synth.Snapshot(rng, *benchExamples, layers))
	}
	start := time.Now()
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
	st := w.Stats()
	b.Logf("store: %d snapshots, %.1f MiB of blocks, %.1f MiB of rollups, written with rollups at %.0f examples/s",
		st.Snapshots, float64(st.StoredBytes)/(1<<20), float64(st.RollupBytes)/(1<<20), float64(st.Examples)/time.Since(start).Seconds())
	r, err = d.Run("r")
	if err != nil {
		b.Fatal(err)
	}
	return d, r
}

// BenchmarkQuery times SELECT variance(128), nvar(128), gns ... GROUP BY
// window(1000) over the benchmark store (default: 50 snapshots x 1024
// examples of the MLP 784-1024-1024-10), in one run each way: from the
// blocks and from the rollups, with 1 and 2 workers, and NumPy on the
// same snapshots exported as .npy (python/moments_numpy.py, Debian's
// /usr/bin/python3 with python3-numpy). Metrics are seconds per way and
// the ratios between them; peak-MiB is the rollup query's peak heap.
func BenchmarkQuery(b *testing.B) {
	d, r := benchStore(b)
	defer d.Close()
	st, err := parser.ParseStatement("SELECT variance(128), nvar(128), gns FROM 'r' GROUP BY window(1000)")
	if err != nil {
		b.Fatal(err)
	}
	// run evaluates the query 3 times (once from blocks: it is slow) and
	// returns the fastest (the machine is noisy) and the last result.
	run := func(opts Options) (float64, *Result) {
		best := math.Inf(1)
		var res *Result
		times := 3
		if opts.NoRollups {
			times = 1
		}
		for range times {
			start := time.Now()
			var err error
			if res, err = Eval(context.Background(), d, st, opts); err != nil {
				b.Fatal(err)
			}
			best = min(best, time.Since(start).Seconds())
		}
		return best, res
	}
	numpyDirs := exportAll(b, d, r)
	for b.Loop() {
		blocks1, _ := run(Options{NoRollups: true, Workers: 1})
		blocks2, res := run(Options{NoRollups: true, Workers: 2})
		fast1, _ := run(Options{Workers: 1})
		fast2, fres := run(Options{Workers: 2})
		mem, err := Eval(context.Background(), d, st, Options{Workers: 2, MeasureMemory: true})
		if err != nil {
			b.Fatal(err)
		}
		if fmt.Sprint(res.Rows) != fmt.Sprint(fres.Rows) {
			b.Logf("blocks %v\nrollups %v", res.Rows, fres.Rows)
		}
		b.ReportMetric(blocks1, "blocks-1w-s")
		b.ReportMetric(blocks2, "blocks-2w-s")
		b.ReportMetric(fast1, "rollups-1w-s")
		b.ReportMetric(fast2, "rollups-2w-s")
		b.ReportMetric(blocks2/fast2, "rollups-speedup")
		b.ReportMetric(blocks1/blocks2, "blocks-2w-speedup")
		b.ReportMetric(fast1/fast2, "rollups-2w-speedup")
		b.ReportMetric(float64(mem.Stats.PeakHeap)/(1<<20), "peak-MiB")
		if numpyDirs != nil {
			if np := numpySeconds(b, numpyDirs); np > 0 {
				b.ReportMetric(np, "numpy-s")
				b.ReportMetric(np/fast2, "vs-numpy")
			}
		}
	}
}

// exportAll exports every snapshot of r for the NumPy baseline (nil when
// it is off).
func exportAll(b *testing.B, d *db.DB, r *db.Run) []string {
	if !*benchNumPy {
		return nil
	}
	root := b.TempDir()
	var dirs []string
	err := d.Snapshots(r, db.AllSteps, db.Select{}, func(s *db.Snapshot) error {
		dir := filepath.Join(root, fmt.Sprint(s.Step))
		_, err := interchange.WriteSnapshot(dir, r.Name, s, interchange.Options{})
		dirs = append(dirs, dir)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return dirs
}

// numpySeconds runs python/moments_numpy.py on dirs 3 times and returns
// the fastest time it reports; it says loudly when it cannot run (and
// returns 0).
func numpySeconds(b *testing.B, dirs []string) float64 {
	best := 0.0
	for range 3 {
		t := numpyOnce(b, dirs)
		if t == 0 {
			return 0
		}
		if best == 0 || t < best {
			best = t
		}
	}
	return best
}

func numpyOnce(b *testing.B, dirs []string) float64 {
	out, err := exec.Command("/usr/bin/python3", append([]string{"../python/moments_numpy.py", "--batch", "128"}, dirs...)...).CombinedOutput()
	if err != nil {
		b.Logf("NUMPY BASELINE NOT RUN: %v: %s (apt-get install python3-numpy)", err, out)
		return 0
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "seconds" {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	b.Logf("NUMPY BASELINE: no time in its output:\n%s", out)
	return 0
}

// TestNumPyBaselineAgrees runs the NumPy script on two exported snapshots
// of the test store and checks its numbers against gvdb's: the baseline
// computes the same thing.
func TestNumPyBaselineAgrees(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("NUMPY BASELINE NOT CHECKED: no /usr/bin/python3")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import numpy").Run(); err != nil {
		t.Skip("NUMPY BASELINE NOT CHECKED: /usr/bin/python3 has no numpy (apt-get install python3-numpy)")
	}
	d := testStore(t)
	r, _ := d.Run("a")
	root := t.TempDir()
	var dirs []string
	for _, step := range []int64{0, 100} {
		s, err := d.Snapshot(r, step, db.Select{})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(root, fmt.Sprint(step))
		if _, err := interchange.WriteSnapshot(dir, "a", s, interchange.Options{}); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	out, err := exec.Command("/usr/bin/python3", append([]string{"../python/moments_numpy.py", "--batch", "16"}, dirs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// The block path (float64 throughout, as NumPy); the default path's
	// float32 vectors are checked against it in TestRollupsMatchBlockPath.
	st, _ := parser.ParseStatement("SELECT variance(16), nvar(16), gns FROM 'a' WHERE step <= 100")
	res, err := Eval(context.Background(), d, st, Options{NoRollups: true})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, row := range res.Rows {
		f := strings.Fields(lines[i])
		for j, name := range []string{"variance", "nvar", "gns"} {
			v, _ := strconv.ParseFloat(f[2+2*j], 64)
			if want := row[1+j].(float64); f[1+2*j] != name || math.Abs(v-want) > 1e-9*math.Abs(want) {
				t.Errorf("snapshot %d %s: numpy %s %g, gvdb %g", i, name, f[1+2*j], v, want)
			}
		}
	}
}

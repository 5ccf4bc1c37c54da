package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"codeberg.org/sbinet/npyio"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/query"
	"gvdb/query/parser"
)

var (
	trainedOnce sync.Once
	trainedDir  string
	trainedErr  string
)

// trainedStore trains three small MNIST MLP runs once per test binary:
// "mlp", "lr-0.1" and "lr-0.01" (40 steps, snapshots of 64 examples every
// 10 steps). The lr runs train on MNIST's first 2000 examples with full
// snapshots and SVRG anchors every 20 steps.
func trainedStore(t *testing.T) string {
	t.Helper()
	trainedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gvdb-e2e-")
		if err != nil {
			trainedErr = err.Error()
			return
		}
		trainedDir = dir
		for _, r := range []struct{ name, lr string }{{"mlp", "0.05"}, {"lr-0.1", "0.1"}, {"lr-0.01", "0.01"}} {
			args := []string{"train", "--db", dir, "--run", r.name, "--hidden", "16", "--steps", "40", "--batch", "32",
				"--lr", r.lr, "--snapshot-every", "10", "--snapshot-examples", "64", "--eval-examples", "500"}
			if r.name != "mlp" {
				args = append(args, "--data-size", "2000", "--full-snapshot-every", "20", "--svrg-every", "20")
			}
			_, errs, code := gvdb(t, args...)
			if code != exitOK {
				trainedErr = errs
				return
			}
		}
	})
	if trainedErr != "" {
		t.Fatalf("training the test store: %s", trainedErr)
	}
	return trainedDir
}

// runOf returns the named run's metadata.
func runOf(t *testing.T, d *db.DB, name string) *db.Run {
	t.Helper()
	r, err := d.Run(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMain(m *testing.M) {
	if dir := os.Getenv("GVDB_TRAIN_CHILD_DIR"); dir != "" {
		// The child of TestKilledTrainer: train until killed.
		mm := &Main{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard}
		os.Exit(mm.Exit(mm.Run(context.Background(), []string{"train", "--db", dir, "--run", "k", "--hidden", "16",
			"--steps", "100000", "--snapshot-every", "5", "--snapshot-examples", "64", "--eval-examples", "100"})))
	}
	code := m.Run()
	if trainedDir != "" {
		os.RemoveAll(trainedDir)
	}
	os.Exit(code)
}

// TestDesignQueries runs every example of docs/DESIGN.md section 4 through the
// CLI on a trained store.
func TestDesignQueries(t *testing.T) {
	dir := trainedStore(t)
	t.Chdir(t.TempDir()) // a PLOT's file lies beneath the working directory
	png := "nvar.png"
	cases := []struct {
		q    string
		want []string // substrings of stdout
		rows int      // data rows expected (-1: don't check)
	}{
		{"SHOW RUNS", []string{"lr-0.01", "lr-0.1", "mlp"}, 3},
		{"SHOW LAYERS FROM 'mlp'", []string{"fc1.weight", "784x16"}, 4},
		{"SELECT step, variance, nvar, gns FROM 'mlp'", []string{"step,variance,nvar,gns", "\n40,"}, 5},
		{"SELECT variance(128), nvar(128) FROM 'mlp' WHERE step >= 10 AND step < 40 GROUP BY window(20)", []string{"step,variance(128),nvar(128)", "\n0,", "\n20,"}, 2},
		{"SELECT nvar FROM 'mlp' WHERE layer = 'fc1.weight' GROUP BY layer", []string{"layer,step,nvar", "fc1.weight,0,"}, 5},
		{"SELECT variance(128), variance(256), gc_variance(32, 128) FROM 'mlp' GROUP BY window(1000)", []string{"gc_variance(32, 128)"}, 1},
		{"SELECT nvar FROM 'lr-0.1', 'lr-0.01' GROUP BY run, window(20)", []string{"run,step,nvar", "lr-0.1,0,", "lr-0.01,40,"}, 6},
		{"SELECT loss, accuracy FROM 'mlp'", []string{"step,loss,accuracy", "\n39,", "\n40,"}, 41}, // the last step's scalars exist
		{"PLOT nvar FROM 'lr-0.1', 'lr-0.01' GROUP BY run, window(20) TO '" + png + "'", nil, -1},
	}
	for _, c := range cases {
		out, errs, code := gvdb(t, "query", "--db", dir, "--format", "csv", c.q)
		if code != exitOK {
			t.Errorf("%s: exit %d: %s", c.q, code, errs)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", c.q, w, out)
			}
		}
		if c.rows >= 0 {
			if n := strings.Count(strings.TrimSpace(out), "\n"); n != c.rows {
				t.Errorf("%s: %d rows, want %d:\n%s", c.q, n, c.rows, out)
			}
		}
		if strings.Contains(out, "NaN") {
			t.Errorf("%s: NaN in output:\n%s", c.q, out)
		}
	}
	if st, err := os.Stat(png); err != nil || st.Size() < 1000 {
		t.Errorf("PLOT wrote no figure: %v", err)
	}
}

func TestQueryErrors(t *testing.T) {
	dir := trainedStore(t)
	for _, c := range []struct{ q, want string }{
		{"SELECT nvr FROM 'mlp'", `1:8: unknown statistic or scalar "nvr" in run "mlp"; did you mean "nvar"?`},
		{"SELECT variance FORM 'mlp'", `1:17: unexpected "FORM", expected "FROM"`},
		{"SELECT variance FROM 'mpl'", `did you mean "mlp"?`},
		{"SELECT variance FROM 'mlp'\nWHERE layer = 'fc3.weight'", `2:7: unknown layer "fc3.weight"`},
	} {
		out, errs, code := gvdb(t, "query", "--db", dir, c.q)
		if code != exitError || !strings.Contains(errs, c.want) || out != "" || strings.Contains(errs, "goroutine") {
			t.Errorf("%q: exit %d, stderr %q (want %q)", c.q, code, errs, c.want)
		}
	}
	if _, _, code := gvdb(t, "query", "--db", dir); code != exitUsage {
		t.Errorf("no query: exit %d, want %d", code, exitUsage)
	}
}

func TestQueryPipe(t *testing.T) {
	dir := trainedStore(t)
	var m *Main
	out, errs, code := gvdbStdin(t, &m, "SHOW RUNS;\n-- comment\nSELECT gns FROM 'mlp' WHERE step = 40;", "query", "--db", dir, "--format", "csv")
	if code != exitOK || !strings.Contains(out, "run,model") || !strings.Contains(out, "step,gns\n40,") {
		t.Fatalf("piped queries: exit %d, %q, %q", code, out, errs)
	}
}

func TestPrompt(t *testing.T) {
	dir := trainedStore(t)
	var m *Main
	in := "help\nSELECT gns\nFROM 'mlp'\nWHERE step = 40;\nSELECT nvr FROM 'mlp'\nSHOW RUNS\nexit\n"
	out, errs, code := gvdbStdin(t, &m, in, "query", "--db", dir, "--format", "csv", "--interactive")
	if code != exitOK || !strings.Contains(out, "step,gns\n40,") || !strings.Contains(out, "gc_variance(K, B)") || !strings.Contains(errs, `did you mean "nvar"`) || !strings.Contains(out, "run,model") {
		t.Fatalf("prompt: exit %d\nstdout %q\nstderr %q", code, out, errs)
	}
}

// TestExport checks the .npy files against the stored blocks.
func TestExport(t *testing.T) {
	dir := trainedStore(t)
	out := t.TempDir()
	if _, errs, code := gvdb(t, "export", "--db", dir, "--run", "mlp", "--step", "20", "--materialize", "--out", out); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	d, err := db.Open(dir, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := d.Snapshot(runOf(t, d, "mlp"), 20, db.Select{Layers: []string{"fc2.weight"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := codec.Decode(s.Blocks[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) []float32 {
		f, err := os.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var v []float32
		if err := npyio.Read(f, &v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return v
	}
	a, delta, grad := read("fc2.weight.A.npy"), read("fc2.weight.Delta.npy"), read("fc2.weight.grad.npy")
	if len(a) != len(b.A) || len(delta) != len(b.Delta) || len(grad) != b.N()*b.Params() {
		t.Fatalf("sizes %d %d %d", len(a), len(delta), len(grad))
	}
	g := make([]float64, b.Params())
	for i := range b.N() {
		b.Gradient(i, g)
		for j, v := range g {
			if math.Abs(float64(grad[i*b.Params()+j])-v) > 1e-6*math.Max(1, math.Abs(v)) {
				t.Fatalf("grad[%d][%d] = %g, want %g", i, j, grad[i*b.Params()+j], v)
			}
		}
	}
	for k := range a {
		if a[k] != b.A[k] {
			t.Fatalf("A[%d] differs", k)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "manifest.json")); err != nil {
		t.Fatal(err)
	}
}

// TestStatsOnTrainedRun checks the query's statistics on a real trainer
// snapshot against a float64 brute force on materialized gradients.
func TestStatsOnTrainedRun(t *testing.T) {
	dir := trainedStore(t)
	out, errs, code := gvdb(t, "query", "--db", dir, "--format", "csv", "SELECT variance(32), nvar(32), gns, gc_variance_insample(8, 32), gc_variance_insample(1, 32) FROM 'mlp' WHERE step = 30")
	if code != exitOK {
		t.Fatalf("query: %s", errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var got []float64
	for _, f := range strings.Split(lines[1], ",")[1:] {
		var v float64
		if _, err := fmt.Sscan(f, &v); err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	d, err := db.Open(dir, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := d.Snapshot(runOf(t, d, "mlp"), 30, db.Select{})
	if err != nil {
		t.Fatal(err)
	}
	// Materialize every example's full gradient in float64.
	var g [][]float64
	for _, lb := range s.Blocks {
		b, err := codec.Decode(lb.Data)
		if err != nil {
			t.Fatal(err)
		}
		if g == nil {
			g = make([][]float64, b.N())
		}
		for i := range g {
			g[i] = append(g[i], b.Gradient(i, make([]float64, b.Params()))...)
		}
	}
	n, dim := float64(len(g)), len(g[0])
	mu := make([]float64, dim)
	for _, gi := range g {
		for j, v := range gi {
			mu[j] += v / n
		}
	}
	var S, mu2, nv float64
	for j := range dim {
		var s2 float64
		for _, gi := range g {
			s2 += (gi[j] - mu[j]) * (gi[j] - mu[j]) / n
		}
		S += s2
		mu2 += mu[j] * mu[j]
		if v := s2 / 32; mu[j]*mu[j]+v > 0 {
			nv += v / (mu[j]*mu[j] + v)
		}
	}
	want := []float64{S / (32 * float64(dim)), nv / float64(dim), S / mu2}
	for i, w := range want {
		if math.Abs(got[i]-w) > 1e-9*math.Abs(w) { // CSV prints full precision
			t.Errorf("%s = %g, brute force %g", strings.Split(lines[0], ",")[i+1], got[i], w)
		}
	}
	// In-sample GC with one cluster is SG; with 8 it is below SG.
	if math.Abs(got[4]-want[0]) > 1e-9*want[0] || !(got[3] < got[4]) {
		t.Errorf("gc_variance_insample(1, 32) = %g (want %g), gc_variance_insample(8, 32) = %g", got[4], want[0], got[3])
	}
}

// TestStatementInterrupt: Ctrl-C at the prompt stops the running statement
// only, not the prompt.
func TestStatementInterrupt(t *testing.T) {
	m := &Main{}
	if m.interruptStatement() {
		t.Fatal("interrupt with no statement running reported one")
	}
	root, cancel := context.WithCancel(context.Background())
	defer cancel()
	sctx, done := m.statementContext(root)
	if !m.interruptStatement() || sctx.Err() == nil || root.Err() != nil {
		t.Fatalf("statement not interrupted alone: statement %v, root %v", sctx.Err(), root.Err())
	}
	done()
	if m.interruptStatement() {
		t.Fatal("interrupt after the statement ended reported one")
	}
	// A cancelled statement stops query evaluation with its error.
	dir := trainedStore(t)
	d, err := db.Open(dir, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	st, _ := parser.ParseStatement("SELECT variance FROM 'mlp'")
	if _, err := query.Eval(sctx, d, st, query.Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Eval with a cancelled context: %v", err)
	}
}

// TestPopulationsAndSVRG runs the GC issue's query on a run trained with
// full snapshots and SVRG anchors: GC on a full snapshot is in-sample, and
// SVRG vanishes at its anchor's own steps only.
func TestPopulationsAndSVRG(t *testing.T) {
	dir := trainedStore(t)
	q := "SELECT variance(128), variance(256), svrg_variance(128), gc_variance(128, 128), gc_variance_insample(128, 128) FROM 'lr-0.1' WHERE population = 'full'"
	out, errs, code := gvdb(t, "query", "--db", dir, "--format", "csv", q)
	if code != exitOK {
		t.Fatalf("query: %s", errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "0,") || !strings.HasPrefix(lines[3], "40,") {
		t.Fatalf("want the full snapshots at 0, 20, 40:\n%s", out)
	}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if f[3] != "0" || f[4] != f[5] || f[4] == "0" {
			t.Errorf("full snapshot row %s: want svrg 0 (anchor refreshed here) and gc_variance = gc_variance_insample > 0", l)
		}
	}
	out, errs, code = gvdb(t, "query", "--db", dir, "--format", "csv", "SELECT svrg_variance, variance FROM 'lr-0.1' WHERE population = 'sample'")
	if code != exitOK {
		t.Fatalf("query: %s", errs)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if f := strings.Split(l, ","); f[1] == "0" || f[1] == "" {
			t.Errorf("sampled snapshot %s: SVRG with a stale anchor is 0", l)
		}
	}
	out, _, _ = gvdb(t, "query", "--db", dir, "--format", "csv", "SHOW STEPS FROM 'lr-0.1'")
	if !strings.Contains(out, "20,full,2000,") || !strings.Contains(out, "10,sample,64,") {
		t.Errorf("SHOW STEPS:\n%s", out)
	}
}

// TestKilledTrainer kills a training child process after its first
// snapshots: reads refuse the unclean store, without changing it, and
// name gvdb recover; recover keeps the flushed snapshots and marks the
// run killed with the steps it recorded.
func TestKilledTrainer(t *testing.T) {
	if os.Getenv("GVDB_TRAIN_CHILD_DIR") != "" {
		return // the child's work is in TestMain
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GVDB_TRAIN_CHILD_DIR="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for a few snapshots, read through the writer's socket.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if out, _, code := gvdb(t, "query", "--db", dir, "--format", "csv", "SHOW STEPS FROM 'k'"); code == exitOK && strings.Count(out, "\n") >= 3 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Statistics read through the writer equal those read after recover.
	const q = "SELECT step, variance, nvar, gns, loss FROM 'k' WHERE step < 10"
	live, errs, code := gvdb(t, "query", "--db", dir, "--format", "csv", q)
	if code != exitOK || strings.Count(live, "\n") != 3 {
		t.Fatalf("query through the writer: exit %d\n%s%s", code, live, errs)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	before := dirSnapshot(t, dir)
	if _, errs, code := gvdb(t, "runs", "--db", dir); code != exitError || !strings.Contains(errs, "gvdb recover") {
		t.Fatalf("runs on an unclean store: exit %d, %s", code, errs)
	}
	if after := dirSnapshot(t, dir); after != before {
		t.Fatalf("a read changed the store:\nbefore %s\nafter  %s", before, after)
	}
	out, errs, code := gvdb(t, "recover", "--db", dir)
	if code != exitOK || !strings.Contains(out, "killed") {
		t.Fatalf("recover: exit %d\n%s\n%s", code, out, errs)
	}
	out, _, code = gvdb(t, "runs", "--db", dir, "--format", "csv")
	if code != exitOK || !strings.Contains(out, "k,mlp,mnist,killed,") || strings.Contains(out, ",100000,") {
		t.Fatalf("runs after recover: exit %d\n%s", code, out)
	}
	if out, _, code := gvdb(t, "query", "--db", dir, "--format", "csv", "SELECT examples FROM 'k'"); code != exitOK || strings.Count(out, "\n") < 2 {
		t.Fatalf("snapshots after recover: %s", out)
	}
	if out, _, _ := gvdb(t, "query", "--db", dir, "--format", "csv", q); out != live {
		t.Fatalf("through the writer:\n%s\nafter recover:\n%s", live, out)
	}
}

// dirSnapshot describes every file of dir (name, size, modification time).
func dirSnapshot(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%d:%d ", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return b.String()
}

// TestExamplesAndFamilies trains on MNIST with 20% corrupted labels (two
// seeds) and with clean labels, then asks the questions: the
// corrupted examples are over-represented among the largest gradients,
// GROUP BY label partitions the examples, aggregates over seeds count
// them, and the report adds the perturbation comparison.
func TestExamplesAndFamilies(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three runs")
	}
	dir := t.TempDir()
	for _, r := range []struct {
		name string
		args []string
	}{{"c20-s1", []string{"--corrupt-labels", "20", "--seed", "1"}}, {"c20-s2", []string{"--corrupt-labels", "20", "--seed", "2"}}, {"clean", nil}} {
		args := append([]string{"train", "--db", dir, "--run", r.name, "--hidden", "32", "--steps", "150", "--batch", "32", "--lr", "0.1",
			"--data-size", "1000", "--snapshot-every", "50", "--snapshot-examples", "128", "--full-snapshot-every", "150", "--eval-examples", "200"}, r.args...)
		if _, errs, code := gvdb(t, args...); code != exitOK {
			t.Fatalf("train %s: %s", r.name, errs)
		}
	}
	q := func(s string) [][]string {
		t.Helper()
		out, errs, code := gvdb(t, "query", "--db", dir, "--format", "csv", s)
		if code != exitOK {
			t.Fatalf("%s: %s", s, errs)
		}
		var rows [][]string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			rows = append(rows, strings.Split(l, ","))
		}
		return rows
	}
	// Top 2% of the full snapshot by gradient norm: 20% of the examples
	// are corrupted; among the largest gradients, far more.
	top := q("SELECT corrupted, grad_norm FROM 'c20-s1' WHERE step = 150 ORDER BY grad_norm DESC LIMIT 20")
	corrupted := 0
	for _, r := range top {
		if r[2] == "1" {
			corrupted++
		}
	}
	t.Logf("%d of the 20 largest gradients are corrupted examples", corrupted)
	if len(top) != 20 || corrupted < 10 {
		t.Errorf("%d of the %d largest gradients are corrupted examples (20%% of all)", corrupted, len(top))
	}
	// Per class: the examples of each label add up to the snapshot.
	total := 0
	for _, r := range q("SELECT examples, nvar FROM 'clean' WHERE step = 150 GROUP BY label") {
		var n int
		fmt.Sscan(r[2], &n)
		total += n
	}
	if total != 1000 {
		t.Errorf("GROUP BY label covers %d of 1000 examples", total)
	}
	if rows := q("SELECT examples FROM 'c20-s1' WHERE step = 150 AND corrupted"); len(rows) != 1 || rows[0][1] != "200" {
		t.Errorf("WHERE corrupted: %v (want 200 examples)", rows)
	}
	// Seeds as a family.
	fam := q("SELECT mean(nvar), stddev(nvar), count(run) FROM 'c20-*', 'clean' WHERE step = 150 GROUP BY config.corrupt_labels")
	if len(fam) != 2 || fam[0][4] != "1" || fam[1][0] != "20" || fam[1][4] != "2" {
		t.Errorf("families: %v", fam)
	}
	t.Chdir(t.TempDir())
	if _, errs, code := gvdb(t, "query", "--db", dir, "PLOT mean(nvar), stddev(nvar) FROM 'c20-*' GROUP BY config.corrupt_labels TO 'seeds.png'"); code != exitOK {
		t.Errorf("PLOT with a band: %s", errs)
	}
	out := t.TempDir()
	if _, errs, code := gvdb(t, "report", "--db", dir, "--out", out, "--k", "8"); code != exitOK {
		t.Fatalf("report: %s", errs)
	}
	md, _ := os.ReadFile(filepath.Join(out, "index.md"))
	if !strings.Contains(string(md), "perturbations-gc-sg.png") || !strings.Contains(string(md), "c20-s1: corrupt_labels 20") {
		t.Errorf("the report lacks the perturbation comparison:\n%s", md)
	}
}

// TestFinalWindow: the last window of a completed run, which training
// ended, is not flagged as partial; one cut by WHERE is.
func TestFinalWindow(t *testing.T) {
	dir := trainedStore(t)
	_, errs, code := gvdb(t, "query", "--db", dir, "--format", "csv", "SELECT variance FROM 'mlp' GROUP BY window(30)")
	if code != exitOK || strings.Contains(errs, "warning") {
		t.Errorf("final window of a complete run: exit %d, %q", code, errs)
	}
	_, errs, _ = gvdb(t, "query", "--db", dir, "--format", "csv", "SELECT variance FROM 'mlp' WHERE step < 35 GROUP BY window(30)")
	if !strings.Contains(errs, "window of steps 30 to 59 has data only up to step 30") {
		t.Errorf("window cut by WHERE: %q", errs)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	dir := trainedStore(t)
	out := t.TempDir()
	_, errs, code := gvdb(t, "report", "--db", dir, "--out", out, "--runs", "lr-*", "--k", "16")
	if code != exitOK {
		t.Fatalf("report: exit %d: %s", code, errs)
	}
	for _, f := range []string{"lr-0.1-variance.png", "lr-0.01-nvar.png", "lr-0.1-nvar-loss.png", "lr-0.01-distortion.png", "runs-variance.png", "runs-nvar.png", "runs-loss.png", "index.md", "index.html"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("report lacks %s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "index.md"))
	for _, q := range []string{
		"SELECT variance(32), variance(64), nvar(32), nvar(64), svrg_variance(32), svrg_nvar(32) FROM 'lr-0.1'",
		"SELECT gc_variance(16, 32), gc_nvar(16, 32) FROM 'lr-0.1' WHERE population = 'full'",
		"full training set, N = 2000, in-sample",
	} {
		if !strings.Contains(string(md), q) {
			t.Errorf("index.md does not show %q:\n%s", q, md)
		}
	}
	html, _ := os.ReadFile(filepath.Join(out, "index.html"))
	if !strings.Contains(string(html), "<svg") || strings.Contains(string(html), `src="lr-`) {
		t.Error("index.html is not self-contained")
	}
	if _, errs, code := gvdb(t, "report", "--db", dir, "--out", out, "--runs", "nope*"); code != exitError || !strings.Contains(errs, "no run matching") {
		t.Errorf("report on no runs: exit %d, %s", code, errs)
	}
}

// TestDemo runs the demo once on a store and a report folder that already
// hold what an earlier demo left (its two runs, here small stand-ins, and
// its report) beside another run: the demo replaces its own runs and its
// report, and leaves the other run alone. The stand-ins train on the
// small random-features task, not MNIST: each MNIST run of this process
// leaves its 180 MB training set in memory (a Gorgonia graph keeps its
// net), and the test stays under 2 GB of RSS.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two runs")
	}
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "report")
	for _, run := range []string{"mine", demoRuns[0].name, demoRuns[1].name} {
		if _, errs, code := gvdb(t, "train", "--db", dir, "--run", run, "--data", "rf", "--data-size", "200", "--hidden", "8", "--steps", "5", "--batch", "16",
			"--snapshot-every", "5", "--snapshot-examples", "16", "--eval-examples", "40"); code != exitOK {
			t.Fatalf("train %s: %s", run, errs)
		}
	}
	if _, errs, code := gvdb(t, "report", "--db", dir, "--out", out, "--runs", "demo-*", "--k", "2"); code != exitOK {
		t.Fatalf("the earlier report: %s", errs)
	}
	stdout, errs, code := gvdb(t, "demo", "--db", dir, "--out", out, "--steps", "100", "--data-size", "1024")
	if code != exitOK {
		t.Fatalf("demo: exit %d: %s", code, errs)
	}
	for _, want := range []string{"gvdb> SHOW RUNS", "gc_gain", "demo-lr-0.01", "index.html", "Done in"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	for _, want := range []string{"training demo-lr-0.1", "training demo-lr-0.01", "Gradient Clustering", "writing the report"} {
		if !strings.Contains(errs, want) {
			t.Errorf("demo progress lacks %q:\n%s", want, errs)
		}
	}
	runs, _, _ := gvdb(t, "runs", "--db", dir, "--format", "csv")
	if !strings.Contains(runs, "\nmine,") || strings.Count(runs, "demo-lr-") != 2 {
		t.Errorf("runs after the demo:\n%s", runs)
	}
	for _, r := range demoRuns {
		steps, _, _ := gvdb(t, "query", "--db", dir, "--format", "csv", "SELECT step, examples FROM '"+r.name+"' WHERE population = 'full'")
		if steps != "step,examples\n0,1024\n50,1024\n100,1024\n" {
			t.Errorf("%s was not replaced: its full snapshots are at\n%s", r.name, steps)
		}
	}
	md, err := os.ReadFile(filepath.Join(out, "index.md"))
	if err != nil || !strings.Contains(string(md), "N = 1024") {
		t.Errorf("the earlier report was not replaced: %v\n%s", err, md)
	}
	if _, err := os.Stat(filepath.Join(out, "index.html")); err != nil {
		t.Error(err)
	}
}

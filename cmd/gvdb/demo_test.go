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
	if !strings.Contains(string(html), "data:image/png;base64,") || strings.Contains(string(html), `src="lr-`) {
		t.Error("index.html is not self-contained")
	}
	if _, errs, code := gvdb(t, "report", "--db", dir, "--out", out, "--runs", "nope*"); code != exitError || !strings.Contains(errs, "no run matching") {
		t.Errorf("report on no runs: exit %d, %s", code, errs)
	}
}

// TestDemo runs the demo twice on a store that holds another run: the
// second run replaces the demo's runs and leaves the other alone.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two runs")
	}
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "report")
	if _, errs, code := gvdb(t, "train", "--db", dir, "--run", "mine", "--hidden", "8", "--steps", "5", "--batch", "16", "--snapshot-every", "0"); code != exitOK {
		t.Fatalf("train: %s", errs)
	}
	for i := range 2 {
		stdout, errs, code := gvdb(t, "demo", "--db", dir, "--out", out, "--steps", "100", "--data-size", "2000")
		if code != exitOK {
			t.Fatalf("demo %d: exit %d: %s", i, code, errs)
		}
		for _, want := range []string{"gvdb> SHOW RUNS", "gc_gain", "demo-lr-0.01", "index.html", "Done in"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("demo %d output lacks %q", i, want)
			}
		}
	}
	out2, _, _ := gvdb(t, "runs", "--db", dir, "--format", "csv")
	if !strings.Contains(out2, "\nmine,") || strings.Count(out2, "demo-lr-") != 2 {
		t.Errorf("runs after two demos:\n%s", out2)
	}
	if _, err := os.Stat(filepath.Join(out, "index.html")); err != nil {
		t.Error(err)
	}
}

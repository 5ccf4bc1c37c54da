package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"codeberg.org/sbinet/npyio"
)

// debianPython is the interpreter that imports Debian's python3-torch and
// python3-numpy; the python3 first on PATH may be another one.
const debianPython = "/usr/bin/python3"

// torchPython returns debianPython if it imports torch and numpy. Where it
// does not, the test fails in CI (GVDB_REQUIRE_TORCH=1, set by .ci/run)
// and is skipped loudly elsewhere.
func torchPython(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(debianPython, "-c", "import torch, numpy").CombinedOutput()
	if err == nil {
		return debianPython
	}
	missing(t, "GVDB_REQUIRE_TORCH", fmt.Sprintf("%s cannot import torch and numpy (%v: %s): install python3-torch python3-numpy (apt-get); the PyTorch capture is NOT tested", debianPython, err, strings.TrimSpace(string(out))))
	return ""
}

// missing stops a test whose outside tool is missing: it fails where the
// environment variable require is set (CI sets it) and is skipped loudly,
// on standard error too, elsewhere.
func missing(t *testing.T, require, msg string) {
	t.Helper()
	if os.Getenv(require) != "" {
		t.Fatal(msg)
	}
	fmt.Fprintln(os.Stderr, "SKIP:", msg)
	t.Skip(msg)
}

// TestPyTorchCapture trains five PyTorch models with python/gvdb_capture.py
// (an MLP, a CNN, a layer applied twice over a sequence, an embedding with
// LayerNorm on token sequences, and 1-D convolutions; python/test_capture.py
// checks the captured gradients against PyTorch's batch-size-1 gradients
// to 1e-5), imports the runs, and checks gvdb's variance, nvar and gns
// against NumPy's on the materialized gradients to 1e-9. It then runs the
// README's PyTorch example verbatim while import --follow ingests it.
func TestPyTorchCapture(t *testing.T) {
	py := torchPython(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command(py, filepath.Join(repo, "python", "test_capture.py"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python/test_capture.py: %v\n%s", err, b)
	} else {
		t.Logf("%s", b)
	}
	var expected map[string]json.RawMessage
	raw, err := os.ReadFile(filepath.Join(out, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(raw, &expected)
	store := t.TempDir()
	for _, run := range []string{"mlp", "cnn", "shared", "text", "seq1d"} {
		if _, errs, code := gvdb(t, "import", filepath.Join(out, run), "--db", store, "--run", run); code != exitOK {
			t.Fatalf("import %s: %s", run, errs)
		}
		var want map[string]map[string]any
		json.Unmarshal(expected[run], &want)
		csv, errs, code := gvdb(t, "query", "--db", store, "--format", "csv", "SELECT variance, nvar, gns FROM '"+run+"'")
		if code != exitOK {
			t.Fatalf("query %s: %s", run, errs)
		}
		lines := strings.Split(strings.TrimSpace(csv), "\n")
		if lines[0] != "step,variance,nvar,gns" || len(lines)-1 != len(want) {
			t.Fatalf("%s: %d snapshots in numpy, gvdb:\n%s", run, len(want), csv)
		}
		worst := 0.0
		for _, l := range lines[1:] {
			f := strings.Split(l, ",")
			w, ok := want[f[0]]
			if !ok {
				t.Fatalf("%s: gvdb has step %s, numpy does not", run, f[0])
			}
			for j, name := range []string{"variance", "nvar", "gns"} {
				got, _ := strconv.ParseFloat(f[1+j], 64)
				ref := w[name].(float64)
				rel := math.Abs(got-ref) / math.Abs(ref)
				worst = max(worst, rel)
				if !(rel <= 1e-9) {
					t.Errorf("%s step %s %s: gvdb %.17g, numpy %.17g (relative %.3g)", run, f[0], name, got, ref, rel)
				}
			}
		}
		t.Logf("%s: %d snapshots, worst relative difference gvdb vs numpy %.3g", run, len(want), worst)
	}
	// SVRG: the run's snapshots carry anchor gradients captured from a copy
	// of the model; gvdb's svrg_variance equals NumPy's on the differences.
	if _, errs, code := gvdb(t, "import", filepath.Join(out, "svrg"), "--db", store, "--run", "svrg"); code != exitOK {
		t.Fatalf("import svrg: %s", errs)
	}
	var wantSVRG map[string]map[string]float64
	json.Unmarshal(expected["svrg"], &wantSVRG)
	{
		csv, errs, code := gvdb(t, "query", "--db", store, "--format", "csv", "SELECT svrg_variance FROM 'svrg'")
		lines := strings.Split(strings.TrimSpace(csv), "\n")
		if code != exitOK || len(lines)-1 != len(wantSVRG) || len(wantSVRG) == 0 {
			t.Fatalf("svrg: exit %d, %s\n%s (numpy %v)", code, errs, csv, wantSVRG)
		}
		for _, l := range lines[1:] {
			f := strings.Split(l, ",")
			got, _ := strconv.ParseFloat(f[1], 64)
			ref := wantSVRG[f[0]]["svrg_variance"]
			if !(math.Abs(got-ref) <= 1e-9*math.Abs(ref)) {
				t.Errorf("svrg step %s: gvdb svrg_variance %.17g, numpy %.17g", f[0], got, ref)
			}
		}
	}
	// The CNN's full snapshot and its layers' storage.
	if csv, _, _ := gvdb(t, "query", "--db", store, "--format", "csv", "SHOW STEPS FROM 'cnn'"); !strings.Contains(csv, "6,full,200,") {
		t.Errorf("cnn: want the full snapshot at step 6:\n%s", csv)
	}
	// Layouts: the capture writes conv1's dense rows as PyTorch's (out, in);
	// gvdb stores and exports gvdb's (in, out), its transpose.
	back := filepath.Join(t.TempDir(), "cnn-4")
	if _, errs, code := gvdb(t, "export", "--db", store, "--run", "cnn", "--step", "4", "--out", back); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	// NumPy reads what gvdb writes, with the manifest's shapes.
	check := `import json, sys, numpy as np
d = sys.argv[1]
m = json.load(open(d + "/manifest.json"))
assert np.load(d + "/" + m["ids"]).shape == (m["examples"],)
for name, f in m.get("attributes", {}).items():
    assert np.load(d + "/" + f).shape == (m["examples"],), name
for l in m["layers"]:
    for k, f in l["files"].items():
        a = np.load(d + "/" + f)
        assert a.dtype == np.float32 and list(a.shape) == l["shapes"][k], (f, a.dtype, a.shape)
`
	if b, err := exec.Command(py, "-c", check, back).CombinedOutput(); err != nil {
		t.Fatalf("numpy reading gvdb's export: %v\n%s", err, b)
	}
	outIn := readF32(t, filepath.Join(out, "cnn", "step-00000000000000000004", "conv1.weight.rows.npy"))
	inOut := readF32(t, filepath.Join(back, "conv1.weight.rows.npy"))
	const cout, in = 4, 9
	if len(outIn) != 16*cout*in || len(inOut) != len(outIn) {
		t.Fatalf("conv1 rows: %d and %d values", len(outIn), len(inOut))
	}
	for i := range 16 {
		for o := range cout {
			for p := range in {
				if a, b := outIn[i*cout*in+o*in+p], inOut[i*cout*in+p*cout+o]; a != b {
					t.Fatalf("example %d conv1[out %d, in %d]: captured %v, stored %v (bit-exact, transposed)", i, o, p, a, b)
				}
			}
		}
	}

	// The README's example, verbatim, from the repository root.
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- pytorch-example: run verbatim by TestPyTorchCapture -->\n```python\n")
	code, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README.md: no PyTorch example block")
	}
	work := t.TempDir()
	os.Symlink(filepath.Join(repo, "python"), filepath.Join(work, "python"))
	script := filepath.Join(work, "example.py")
	os.WriteFile(script, []byte(code), 0o644)
	// import --follow starts first, as "python train.py & gvdb import
	// --follow" may: it waits for run.json, ingests while the script
	// writes, and stops at DONE.
	live := t.TempDir()
	type result struct {
		errs string
		code int
	}
	followed := make(chan result, 1)
	go func() {
		_, errs, code := gvdb(t, "import", filepath.Join(work, "runs", "demo"), "--db", live, "--run", "demo", "--follow")
		followed <- result{errs, code}
	}()
	time.Sleep(500 * time.Millisecond)
	cmd = exec.Command(py, script)
	cmd.Dir = work
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("README example: %v\n%s", err, b)
	}
	var fr result
	select {
	case fr = <-followed:
	case <-time.After(60 * time.Second):
		t.Fatal("import --follow did not stop at DONE")
	}
	if fr.code != exitOK || !strings.Contains(fr.errs, "waiting for") || !strings.Contains(fr.errs, "10 snapshots") {
		t.Fatalf("import --follow of the README example: exit %d, %s", fr.code, fr.errs)
	}
	if _, errs, code := gvdb(t, "import", filepath.Join(work, "runs", "demo"), "--db", store, "--run", "demo"); code != exitOK {
		t.Fatalf("import the README example: %s", errs)
	}
	q := "SELECT variance, nvar, gns, loss FROM 'demo' GROUP BY label"
	csv, errs, rc := gvdb(t, "query", "--db", store, "--format", "csv", q)
	if rc != exitOK || strings.Count(csv, "\n") != 1+10*3 {
		t.Errorf("README query: exit %d, %s\n%s", rc, errs, csv)
	}
	if got, _, _ := gvdb(t, "query", "--db", live, "--format", "csv", q); got != csv {
		t.Errorf("import --follow while the script ran:\n%s\nafter it:\n%s", got, csv)
	}
}

// readF32 reads a float32 .npy file's values.
func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var v []float32
	if err := npyio.Read(f, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// TestInterchangeDocExample runs docs/INTERCHANGE.md's NumPy writer (the
// JAX section) verbatim on random gradients with a run.json, imports the
// run, and checks gvdb's variance against NumPy's.
func TestInterchangeDocExample(t *testing.T) {
	py := torchPython(t)
	doc, err := os.ReadFile("../../docs/INTERCHANGE.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Writing a run without gvdb's code (JAX)")
	_, rest, ok2 := strings.Cut(rest, "```python\n")
	code, _, ok3 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("docs/INTERCHANGE.md: no JAX example")
	}
	dir := t.TempDir()
	driver := code + `
import sys
run_dir = sys.argv[1]
os.makedirs(run_dir)
rng = np.random.default_rng(0)
json.dump({"format": "gvdb-run", "version": 1, "model": "m", "dataset": "d", "batch_size": 8, "seed": 0,
           "loss_reduction": "mean", "weight_layout": "in_out",
           "layers": [{"name": "Dense_0.kernel", "kind": "dense", "shape": [5, 3]},
                      {"name": "Dense_0.bias", "kind": "bias", "shape": [3]}]}, open(run_dir + "/run.json", "w"))
out = []
for step in (0, 10):
    k, b = rng.normal(size=(16, 5, 3)).astype(np.float32), rng.normal(size=(16, 3)).astype(np.float32)
    write_snapshot(run_dir, step, np.arange(16) + step, {"Dense_0.kernel": k, "Dense_0.bias": b}, rng.integers(0, 3, 16))
    g = np.concatenate([k.reshape(16, -1), b], axis=1).astype(np.float64)
    s = ((g - g.mean(0)) ** 2).sum(1).mean()
    out.append(repr(s / (8 * g.shape[1])))
print(" ".join(out))
`
	script := filepath.Join(dir, "write.py")
	os.WriteFile(script, []byte(driver), 0o644)
	b, err := exec.Command(py, script, filepath.Join(dir, "run")).CombinedOutput()
	if err != nil {
		t.Fatalf("the documented writer: %v\n%s", err, b)
	}
	want := strings.Fields(string(b))
	store := t.TempDir()
	if _, errs, code := gvdb(t, "import", filepath.Join(dir, "run"), "--db", store, "--run", "jax"); code != exitOK {
		t.Fatalf("import: %s", errs)
	}
	csv, errs, rc := gvdb(t, "query", "--db", store, "--format", "csv", "SELECT variance FROM 'jax'")
	lines := strings.Split(strings.TrimSpace(csv), "\n")
	if rc != exitOK || len(lines) != 3 || len(want) != 2 {
		t.Fatalf("query: exit %d, %s\n%s (numpy %v)", rc, errs, csv, want)
	}
	for i, l := range lines[1:] {
		got, _ := strconv.ParseFloat(strings.Split(l, ",")[1], 64)
		w, _ := strconv.ParseFloat(want[i], 64)
		if math.Abs(got-w) > 1e-12*w {
			t.Errorf("step row %d: gvdb variance %.17g, numpy %.17g", i, got, w)
		}
	}
}

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

// TestPyTorchCapture trains PyTorch models with python/gvdb_capture.py
// (an MLP, a CNN, a layer applied twice over a sequence, embeddings with
// LayerNorm on token sequences, 1-D convolutions, and through the generic
// path a transformer, an LSTM, a GRU, ConvTranspose2d with GroupNorm, a
// custom module, and a residual CNN with BatchNorm in eval mode;
// python/test_capture.py checks the captured gradients against PyTorch's
// batch-size-1 gradients to 1e-5), imports the runs, and checks gvdb's
// variance, nvar and gns against NumPy's on the materialized gradients to
// 1e-9, and each example's whole-model grad_norm against the norm of its
// batch-size-1 gradients of every trainable parameter. A full snapshot
// captured in 4 passes equals the one-pass capture after import; a run
// with ignored parameters says so in queries and keeps them through an
// export; imported runs' advice speaks of the capture API. It then runs
// the README's PyTorch examples verbatim (the MLP while import --follow
// ingests it).
func TestPyTorchCapture(t *testing.T) {
	// Parallel: much of it is a child process (Python, node, a second
	// store) that overlaps the package's other parallel tests; it changes
	// no environment or working directory.
	t.Parallel()
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
	for _, run := range []string{"mlp", "cnn", "shared", "text", "seq1d", "transformer", "lstm", "gru", "convt", "custom", "bn"} {
		if _, errs, code := gvdb(t, "import", filepath.Join(out, run), "--db", store, "--run", run); code != exitOK {
			t.Fatalf("import %s: %s", run, errs)
		}
		var want map[string]map[string]any
		json.Unmarshal(expected[run], &want)
		checkGradNorms(t, store, run, want)
		// From the blocks (float64, as NumPy): 1e-9. The default answer
		// (rollups, float32 vectors for nvar) is held to 1e-6.
		csv, errs, code := gvdb(t, "query", "--db", store, "--format", "csv", "--from-blocks", "SELECT variance, nvar, gns FROM '"+run+"'")
		if code != exitOK {
			t.Fatalf("query %s: %s", run, errs)
		}
		fast, errs, code := gvdb(t, "query", "--db", store, "--format", "csv", "SELECT variance, nvar, gns FROM '"+run+"'")
		if code != exitOK {
			t.Fatalf("query %s: %s", run, errs)
		}
		if d := csvDiff(csv, fast); !(d <= 1e-6) {
			t.Errorf("%s: the default answer differs from the block path's by %.3g relative", run, d)
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
	checkChunks(t, store, out)
	checkIgnored(t, store, out)
	// Imported runs' advice speaks of the capture API, not gvdb train's flags.
	for q, want := range map[string]string{
		"SELECT svrg_variance FROM 'mlp'":      "cap.anchor(anchor_model, anchor_step)",
		"SELECT gc_variance(4, 32) FROM 'mlp'": `cap.snapshot(step, ids, population="full")`,
	} {
		_, errs, code := gvdb(t, "query", "--db", store, q)
		if code != exitOK || !strings.Contains(errs, want) || strings.Contains(errs, "--svrg-every") || strings.Contains(errs, "gvdb train") {
			t.Errorf("%s: exit %d, warnings %s (want the capture API: %s)", q, code, errs, want)
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

	// The README's examples, verbatim, from the repository root.
	work := t.TempDir()
	os.Symlink(filepath.Join(repo, "python"), filepath.Join(work, "python"))
	// Your transformer: sample snapshots, and a full one in chunks.
	transformer := readmeExample(t, repo, work, "pytorch-transformer-example")
	cmd = exec.Command(py, transformer)
	cmd.Dir = work
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("README transformer example: %v\n%s", err, b)
	}
	if _, errs, code := gvdb(t, "import", filepath.Join(work, "runs", "transformer"), "--db", store, "--run", "transformer-readme"); code != exitOK {
		t.Fatalf("import the README transformer example: %s", errs)
	}
	if steps, errs, _ := gvdb(t, "query", "--db", store, "--format", "csv", "SHOW STEPS FROM 'transformer-readme'"); !strings.Contains(steps, "40,full,256,") || strings.Count(steps, ",sample,32,") != 2 {
		t.Errorf("README transformer example: want sample snapshots at 0 and 20 and a full one of 256 at 40: %s\n%s", errs, steps)
	}
	if csv, errs, code := gvdb(t, "query", "--db", store, "--format", "csv", "SELECT variance, nvar, gc_variance(32, 32) FROM 'transformer-readme' WHERE population = 'full'"); code != exitOK || strings.Count(csv, "\n") != 2 || strings.Contains(csv, "NaN") {
		t.Errorf("README transformer query: exit %d, %s\n%s", code, errs, csv)
	}
	script := readmeExample(t, repo, work, "pytorch-example")
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

// readmeExample writes the README's Python block after the marker
// <!-- NAME: run verbatim by TestPyTorchCapture --> into dir and returns
// its path.
func readmeExample(t *testing.T, repo, dir, name string) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- "+name+": run verbatim by TestPyTorchCapture -->\n```python\n")
	code, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatalf("README.md: no %s block", name)
	}
	script := filepath.Join(dir, name+".py")
	if err := os.WriteFile(script, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	return script
}

// exampleNorms returns gvdb's grad_norm of run's examples, by step and
// example id.
func exampleNorms(t *testing.T, store, run string) map[string]float64 {
	t.Helper()
	csv, errs, code := gvdb(t, "query", "--db", store, "--format", "csv", "SELECT example_id, grad_norm FROM '"+run+"'")
	lines := strings.Split(strings.TrimSpace(csv), "\n")
	if code != exitOK || lines[0] != "step,example_id,grad_norm" {
		t.Fatalf("%s grad_norm: exit %d, %s\n%s", run, code, errs, csv)
	}
	out := map[string]float64{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		v, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			t.Fatalf("%s: %q", run, l)
		}
		out[f[0]+"/"+f[1]] = v
	}
	return out
}

// checkGradNorms compares gvdb's whole-model grad_norm of every example of
// an imported run with the norm of the example's batch-size-1 gradients of
// all trainable parameters (want: by step, "grad_norm" by example id).
func checkGradNorms(t *testing.T, store, run string, want map[string]map[string]any) {
	t.Helper()
	got := exampleNorms(t, store, run)
	n, worst := 0, 0.0
	for step, w := range want {
		norms, _ := w["grad_norm"].(map[string]any)
		for id, v := range norms {
			ref := v.(float64)
			g, ok := got[step+"/"+id]
			rel := math.Abs(g-ref) / ref
			if !ok || !(rel <= 1e-5) {
				t.Errorf("%s step %s example %s: gvdb grad_norm %.9g, batch-size-1 autograd %.9g", run, step, id, g, ref)
			}
			worst = max(worst, rel)
			n++
		}
	}
	if n == 0 || n != len(got) {
		t.Errorf("%s: %d reference norms, gvdb has %d examples", run, n, len(got))
	}
	t.Logf("%s: grad_norm of %d examples against batch-size-1 autograd, worst relative difference %.3g", run, n, worst)
}

// checkChunks: a full snapshot of 256 examples captured in 4 passes of 64
// equals, after import, the same snapshot captured in one pass, per
// example (grad_norm) and in its variance and gns, to 1e-6 relative
// (float32 rounding in the batched products depends on the batch's shape;
// nvar's per-coordinate ratios and GC's assignments would magnify it in
// coordinates near zero, so they are not compared).
func checkChunks(t *testing.T, store, out string) {
	t.Helper()
	for _, run := range []string{"full-one", "full-chunks"} {
		if _, errs, code := gvdb(t, "import", filepath.Join(out, run), "--db", store, "--run", run); code != exitOK {
			t.Fatalf("import %s: %s", run, errs)
		}
	}
	one, four := exampleNorms(t, store, "full-one"), exampleNorms(t, store, "full-chunks")
	if len(one) != 256 || len(four) != 256 {
		t.Fatalf("full snapshots: %d and %d examples, want 256", len(one), len(four))
	}
	for k, v := range one {
		if w, ok := four[k]; !ok || !(math.Abs(w-v) <= 1e-6*v) {
			t.Errorf("example %s: grad_norm %.9g in one pass, %.9g in 4", k, v, w)
		}
	}
	q := "SELECT variance, gns FROM '%s'"
	a, _, _ := gvdb(t, "query", "--db", store, "--format", "csv", fmt.Sprintf(q, "full-one"))
	b, _, _ := gvdb(t, "query", "--db", store, "--format", "csv", fmt.Sprintf(q, "full-chunks"))
	la, lb := strings.Split(strings.TrimSpace(a), "\n"), strings.Split(strings.TrimSpace(b), "\n")
	if len(la) != 2 || len(lb) != 2 {
		t.Fatalf("full snapshots' statistics:\n%s\n%s", a, b)
	}
	fa, fb := strings.Split(la[1], ","), strings.Split(lb[1], ",")
	for i := 1; i < len(fa); i++ {
		x, _ := strconv.ParseFloat(fa[i], 64)
		y, _ := strconv.ParseFloat(fb[i], 64)
		if !(math.Abs(x-y) <= 1e-6*math.Abs(x)) {
			t.Errorf("%s: %.9g in one pass, %.9g in 4", strings.Split(la[0], ",")[i], x, y)
		}
	}
	if steps, _, _ := gvdb(t, "query", "--db", store, "--format", "csv", "SHOW STEPS FROM 'full-chunks'"); !strings.Contains(steps, "0,full,256,") {
		t.Errorf("full-chunks: want a full snapshot of 256 examples:\n%s", steps)
	}
}

// checkIgnored: a run whose capture left a parameter out (ignore=) records
// it; whole-model queries and an export say so, per-layer ones do not.
func checkIgnored(t *testing.T, store, out string) {
	t.Helper()
	if _, errs, code := gvdb(t, "import", filepath.Join(out, "ignored"), "--db", store, "--run", "ignored"); code != exitOK {
		t.Fatalf("import ignored: %s", errs)
	}
	const note = "1 trainable parameter was not captured (left out with ignore=): head.bias; whole-model statistics cover the captured layers only"
	if _, errs, code := gvdb(t, "query", "--db", store, "SELECT variance, nvar FROM 'ignored'"); code != exitOK || !strings.Contains(errs, note) {
		t.Errorf("whole-model query of a run with an ignored parameter: exit %d, warnings %q", code, errs)
	}
	if _, errs, _ := gvdb(t, "query", "--db", store, "SELECT variance FROM 'ignored' GROUP BY layer"); strings.Contains(errs, "not captured") {
		t.Errorf("per-layer query: %s", errs)
	}
	back := filepath.Join(t.TempDir(), "ignored")
	if _, errs, code := gvdb(t, "export", "--db", store, "--run", "ignored", "--out", back); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	raw, err := os.ReadFile(filepath.Join(back, "run.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Ignored []string `json:"ignored"`
		Layers  []struct {
			Name, Capture string
		} `json:"layers"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil || strings.Join(cfg.Ignored, ",") != "head.bias" || len(cfg.Layers) == 0 || cfg.Layers[0].Name != "pos" || cfg.Layers[0].Capture != "generic" {
		t.Errorf("exported run.json: %v\n%s", err, raw)
	}
	if _, errs, code := gvdb(t, "import", back, "--db", store, "--run", "ignored-again"); code != exitOK {
		t.Fatalf("re-import: %s", errs)
	}
	if _, errs, _ := gvdb(t, "query", "--db", store, "SELECT variance FROM 'ignored-again'"); !strings.Contains(errs, note) {
		t.Errorf("re-imported run: %q", errs)
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

// csvDiff returns the largest relative difference between the numbers of
// two CSV tables of the same shape (+Inf when the shapes differ).
func csvDiff(a, b string) float64 {
	la, lb := strings.Split(strings.TrimSpace(a), "\n"), strings.Split(strings.TrimSpace(b), "\n")
	if len(la) != len(lb) {
		return math.Inf(1)
	}
	worst := 0.0
	for i := 1; i < len(la); i++ {
		fa, fb := strings.Split(la[i], ","), strings.Split(lb[i], ",")
		if len(fa) != len(fb) {
			return math.Inf(1)
		}
		for j := range fa {
			x, _ := strconv.ParseFloat(fa[j], 64)
			y, _ := strconv.ParseFloat(fb[j], 64)
			if x != y {
				worst = max(worst, math.Abs(x-y)/math.Abs(y))
			}
		}
	}
	return worst
}

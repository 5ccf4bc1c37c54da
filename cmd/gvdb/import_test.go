package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gvdb/ingest/interchange"
)

// roundTripQueries cover every statistic family, the populations, SVRG,
// attributes, per-example rows and the step scalars.
var roundTripQueries = []string{
	"SELECT variance, nvar, gns, example_norm, snr, norm_test FROM 'lr-0.1'",
	"SELECT variance(128), nvar(128), svrg_variance(128), gc_variance(128, 128), gc_variance_insample(128, 128) FROM 'lr-0.1' WHERE population = 'full' GROUP BY layer",
	"SELECT svrg_variance, variance FROM 'lr-0.1' WHERE population = 'sample'",
	"SELECT variance, nvar FROM 'lr-0.1' WHERE step BETWEEN 10 AND 30 GROUP BY label",
	"SELECT example_id, label, grad_norm, cos_to_mean FROM 'lr-0.1' WHERE step = 20 AND population = 'full' ORDER BY grad_norm DESC LIMIT 10",
	"SELECT loss, lr FROM 'lr-0.1'",
	"SELECT variance, nvar, gns, pooled(nvar) FROM 'lr-0.1' GROUP BY window(20)",
}

// TestExportImportRoundTrip exports a whole run (full and sampled
// snapshots, SVRG anchors, attributes, scalars), imports it into a new
// store, and checks every query answers identically.
func TestExportImportRoundTrip(t *testing.T) {
	// Parallel: much of it is a child process (Python, node, a second
	// store) that overlaps the package's other parallel tests; it changes
	// no environment or working directory.
	t.Parallel()
	src := trainedStore(t)
	out := filepath.Join(t.TempDir(), "run")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "lr-0.1", "--out", out); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	for _, f := range []string{"run.json", "scalars.jsonl", "DONE", interchange.SnapshotDir(20) + "/manifest.json", interchange.SnapshotDir(20) + "/attr.label.npy"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("export wrote no %s: %v", f, err)
		}
	}
	dst := t.TempDir()
	if _, errs, code := gvdb(t, "import", out, "--db", dst, "--run", "lr-0.1"); code != exitOK {
		t.Fatalf("import: %s", errs)
	}
	for _, q := range roundTripQueries {
		want, errs, code := gvdb(t, "query", "--db", src, "--format", "csv", q)
		if code != exitOK {
			t.Fatalf("%s on the original: %s", q, errs)
		}
		got, errs, code := gvdb(t, "query", "--db", dst, "--format", "csv", q)
		if code != exitOK {
			t.Fatalf("%s on the import: %s", q, errs)
		}
		if got != want || strings.Count(want, "\n") < 2 {
			t.Errorf("%s:\noriginal\n%s\nimported\n%s", q, want, got)
		}
	}
	// A step range exports only its snapshots and scalars.
	part := filepath.Join(t.TempDir(), "part")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "lr-0.1", "--from", "10", "--to", "20", "--out", part); code != exitOK {
		t.Fatalf("export range: %s", errs)
	}
	if steps, _ := interchange.Steps(part); len(steps) != 2 || steps[0] != 10 || steps[1] != 20 {
		t.Errorf("--from 10 --to 20 exported steps %v", steps)
	}
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "lr-0.1", "--out", out); code == exitOK || !strings.Contains(errs, "not empty") {
		t.Errorf("export over a run directory: exit %d, %s", code, errs)
	}
}

// editJSON rewrites a JSON file through fn.
func editJSON(t *testing.T, path string, fn func(map[string]any)) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	raw, _ = json.Marshal(m)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies a directory tree of regular files.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), raw, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestImportRefusesBadRuns damages an exported run directory one way at a
// time: each import fails with a message naming the problem.
func TestImportRefusesBadRuns(t *testing.T) {
	src := trainedStore(t)
	good := filepath.Join(t.TempDir(), "run")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "mlp", "--from", "0", "--to", "10", "--out", good); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	snap := interchange.SnapshotDir(10)
	// runJSON marks faults of run.json, found before a store is created.
	const runJSON = true
	cases := []struct {
		name, want string
		damage     func(dir string)
		runJSON    bool
	}{
		{"reserved layer", "reserved", func(dir string) {
			editJSON(t, filepath.Join(dir, "run.json"), func(m map[string]any) {
				m["layers"].([]any)[0].(map[string]any)["name"] = "step"
			})
		}, runJSON},
		{"slash in a layer name", "character '/'", func(dir string) {
			editJSON(t, filepath.Join(dir, "run.json"), func(m map[string]any) {
				m["layers"].([]any)[0].(map[string]any)["name"] = "Dense_0/kernel"
			})
		}, runJSON},
		{"bad layout", "weight_layout", func(dir string) {
			editJSON(t, filepath.Join(dir, "run.json"), func(m map[string]any) { m["weight_layout"] = "cols" })
		}, runJSON},
		{"unknown field", "unknown field", func(dir string) {
			editJSON(t, filepath.Join(dir, "run.json"), func(m map[string]any) { m["learning_rate"] = 1 })
		}, runJSON},
		{"reserved scalar", "reserved", func(dir string) {
			os.WriteFile(filepath.Join(dir, "scalars.jsonl"), []byte("{\"step\": 0, \"where\": 1}\n"), 0o644)
		}, false},
		{"bad scalar line", "scalars.jsonl line 2", func(dir string) {
			os.WriteFile(filepath.Join(dir, "scalars.jsonl"), []byte("{\"step\": 0, \"loss\": 1}\n{\"step\": -1}\n"), 0o644)
		}, false},
		{"unpadded step directory", "20 digits", func(dir string) {
			os.Rename(filepath.Join(dir, snap), filepath.Join(dir, "step-10"))
		}, false},
		{"wrong examples", "shape", func(dir string) {
			editJSON(t, filepath.Join(dir, snap, "manifest.json"), func(m map[string]any) { m["examples"] = 63.0 })
		}, false},
		{"wrong dtype", "dtype", func(dir string) {
			// ids as float32: copy a float32 file over ids.npy.
			raw, _ := os.ReadFile(filepath.Join(dir, snap, "fc1.bias.rows.npy"))
			os.WriteFile(filepath.Join(dir, snap, "ids.npy"), raw, 0o644)
		}, false},
		{"truncated npy", "bytes", func(dir string) {
			p := filepath.Join(dir, snap, "fc1.weight.A.npy")
			raw, _ := os.ReadFile(p)
			os.WriteFile(p, raw[:len(raw)/2], 0o644)
		}, false},
		{"unknown layer", "not in run.json", func(dir string) {
			editJSON(t, filepath.Join(dir, snap, "manifest.json"), func(m map[string]any) {
				m["layers"].([]any)[0].(map[string]any)["name"] = "fc9.weight"
			})
		}, false},
		{"path in file name", `"files"."A": "../../etc/passwd" is not a plain file name`, func(dir string) {
			editJSON(t, filepath.Join(dir, snap, "manifest.json"), func(m map[string]any) {
				m["layers"].([]any)[0].(map[string]any)["files"].(map[string]any)["A"] = "../../etc/passwd"
			})
		}, false},
		// Hostile directories (issue 18): nothing outside the run
		// directory is read, no link, FIFO or endless file is opened.
		{"ids outside the directory", `manifest "ids": "../../outside/ids.npy" is not a plain file name`, func(dir string) {
			outside := filepath.Join(dir, "..", "outside")
			os.Mkdir(outside, 0o755)
			raw, _ := os.ReadFile(filepath.Join(dir, snap, "ids.npy"))
			os.WriteFile(filepath.Join(outside, "ids.npy"), raw, 0o644)
			editJSON(t, filepath.Join(dir, snap, "manifest.json"), func(m map[string]any) { m["ids"] = "../../outside/ids.npy" })
		}, false},
		{"run.json links to /dev/zero", "run.json is a symbolic link", func(dir string) {
			os.Remove(filepath.Join(dir, "run.json"))
			os.Symlink("/dev/zero", filepath.Join(dir, "run.json"))
		}, runJSON},
		{"manifest links to /dev/zero", "manifest.json is a symbolic link", func(dir string) {
			os.Remove(filepath.Join(dir, snap, "manifest.json"))
			os.Symlink("/dev/zero", filepath.Join(dir, snap, "manifest.json"))
		}, false},
		{"scalars link to /dev/zero", "scalars.jsonl is a symbolic link", func(dir string) {
			os.Remove(filepath.Join(dir, "scalars.jsonl"))
			os.Symlink("/dev/zero", filepath.Join(dir, "scalars.jsonl"))
		}, false},
		{"FIFO named like a .npy", "fc1.weight.A.npy is a FIFO", func(dir string) {
			os.Remove(filepath.Join(dir, snap, "fc1.weight.A.npy"))
			syscall.Mkfifo(filepath.Join(dir, snap, "fc1.weight.A.npy"), 0o644)
		}, false},
		{"id over int63", "example id 18446744073709551615 does not fit int63", func(dir string) {
			p := filepath.Join(dir, snap, "ids.npy")
			raw, _ := os.ReadFile(p)
			copy(raw[len(raw)-8:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			os.WriteFile(p, raw, 0o644)
		}, false},
		{"duplicate scalar key", `scalars.jsonl line 1: key "loss" appears twice`, func(dir string) {
			os.WriteFile(filepath.Join(dir, "scalars.jsonl"), []byte("{\"step\": 0, \"loss\": 1, \"loss\": 2}\n"), 0o644)
		}, false},
		{"unterminated scalar line", "the file ends inside the line", func(dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, "scalars.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString(`{"step": 99, "loss": 1}`)
			f.Close()
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			copyDir(t, good, dir)
			c.damage(dir)
			store := filepath.Join(t.TempDir(), "store")
			_, errs, code := gvdb(t, "import", dir, "--db", store, "--run", "x")
			if code == exitOK || !strings.Contains(errs, c.want) || !c.runJSON && !strings.Contains(errs, "status failed") {
				t.Errorf("exit %d, want an error with %q: %s", code, c.want, errs)
			}
			if _, err := os.Stat(store); c.runJSON && err == nil {
				t.Errorf("a refused run.json created the store %s", store)
			}
		})
	}
}

// TestImportKeepsNaN: a NaN gradient is stored and warned about, and the
// statistics it touches are NaN.
func TestImportKeepsNaN(t *testing.T) {
	src := trainedStore(t)
	dir := filepath.Join(t.TempDir(), "run")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "mlp", "--from", "10", "--to", "10", "--out", dir); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	p := filepath.Join(dir, interchange.SnapshotDir(10), "fc2.bias.rows.npy")
	raw, _ := os.ReadFile(p)
	copy(raw[len(raw)-4:], []byte{0, 0, 0xc0, 0x7f}) // the last value: a float32 NaN
	os.WriteFile(p, raw, 0o644)
	store := t.TempDir()
	_, errs, code := gvdb(t, "import", dir, "--db", store, "--run", "nan")
	if code != exitOK || !strings.Contains(errs, "warning: step 10 layer fc2.bias: NaN or Inf gradient (example row 63), kept") {
		t.Fatalf("import: exit %d, %s", code, errs)
	}
	out, _, _ := gvdb(t, "query", "--db", store, "--format", "csv", "SELECT variance FROM 'nan' GROUP BY layer")
	if !strings.Contains(out, "fc2.bias,10,NaN") || !strings.Contains(out, "fc1.bias,10,0.") {
		t.Errorf("variance by layer after a NaN in fc2.bias:\n%s", out)
	}
	// The NaN kept is no fault: its rollup equals its block's.
	if out, errs, code := gvdb(t, "check", "--db", store); code != exitOK {
		t.Errorf("check after importing a NaN: exit %d\n%s%s", code, out, errs)
	}
}

// TestImportFollow starts import --follow on an empty run directory, then
// moves snapshots and scalars in as a training script would: everything
// is ingested once, and DONE ends the import.
func TestImportFollow(t *testing.T) {
	src := trainedStore(t)
	full := filepath.Join(t.TempDir(), "run")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "mlp", "--out", full); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	live := filepath.Join(t.TempDir(), "live")
	os.Mkdir(live, 0o755)
	raw, _ := os.ReadFile(filepath.Join(full, "run.json"))
	os.WriteFile(filepath.Join(live, "run.json"), raw, 0o644)
	dst := t.TempDir()
	type result struct {
		errs string
		code int
	}
	done := make(chan result, 1)
	go func() {
		_, errs, code := gvdb(t, "import", live, "--db", dst, "--run", "mlp", "--follow")
		done <- result{errs, code}
	}()
	scalars, _ := os.ReadFile(filepath.Join(full, "scalars.jsonl"))
	lines := strings.SplitAfter(string(scalars), "\n")
	sf, _ := os.Create(filepath.Join(live, "scalars.jsonl"))
	steps, _ := interchange.Steps(full)
	for i, step := range steps {
		// half a scalar line first: it waits for its newline
		l := lines[i%len(lines)]
		sf.WriteString(l[:len(l)/2])
		time.Sleep(50 * time.Millisecond)
		sf.WriteString(l[len(l)/2:])
		if err := os.Rename(filepath.Join(full, interchange.SnapshotDir(step)), filepath.Join(live, interchange.SnapshotDir(step))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, l := range lines[len(steps)%len(lines):] {
		sf.WriteString(l)
	}
	sf.Close()
	os.WriteFile(filepath.Join(live, "DONE"), nil, 0o644)
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("import --follow did not stop after DONE")
	}
	if r.code != exitOK || !strings.Contains(r.errs, "5 snapshots") || !strings.Contains(r.errs, "status complete") {
		t.Fatalf("import --follow: exit %d, %s", r.code, r.errs)
	}
	for _, q := range []string{"SELECT variance, gns FROM 'mlp'", "SELECT loss FROM 'mlp'"} {
		want, _, _ := gvdb(t, "query", "--db", src, "--format", "csv", q)
		got, errs, _ := gvdb(t, "query", "--db", dst, "--format", "csv", q)
		if got != want {
			t.Errorf("%s after --follow (%s):\n%s\nwant\n%s", q, errs, got, want)
		}
	}
}

// TestImportFollowInterrupted stops import --follow as Ctrl-C does, with
// no DONE: the run keeps what was ingested, marked interrupted.
func TestImportFollowInterrupted(t *testing.T) {
	src := trainedStore(t)
	dir := filepath.Join(t.TempDir(), "run")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "mlp", "--from", "0", "--to", "10", "--out", dir); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	os.Remove(filepath.Join(dir, "DONE"))
	// A scalar line still being written, with no DONE, waits: no error.
	f, _ := os.OpenFile(filepath.Join(dir, "scalars.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"step": 99, "lo`)
	f.Close()
	store := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(2*time.Second, cancel) // Ctrl-C
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
	code := m.Exit(m.Run(ctx, []string{"import", dir, "--db", store, "--run", "live", "--follow"}))
	if code != exitOK || !strings.Contains(errb.String(), "imported live: 2 snapshots") || !strings.Contains(errb.String(), "status interrupted") {
		t.Fatalf("interrupted import: exit %d, %s", code, errb.String())
	}
	csv, _, _ := gvdb(t, "runs", "--db", store, "--format", "csv")
	if !strings.Contains(csv, "live,") || !strings.Contains(csv, ",interrupted,") {
		t.Errorf("run not marked interrupted:\n%s", csv)
	}
}

// TestImportFollowUnterminatedScalars: once DONE exists, a last scalar
// line without its newline is an error (the run is not complete), with
// --follow as without it; nothing is dropped silently.
func TestImportFollowUnterminatedScalars(t *testing.T) {
	src := trainedStore(t)
	dir := filepath.Join(t.TempDir(), "run")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "mlp", "--from", "0", "--to", "0", "--out", dir); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	f, _ := os.OpenFile(filepath.Join(dir, "scalars.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"step": 99, "loss": 1}`)
	f.Close()
	store := t.TempDir()
	_, errs, code := gvdb(t, "import", dir, "--db", store, "--run", "live", "--follow")
	if code == exitOK || !strings.Contains(errs, "scalars.jsonl line") || !strings.Contains(errs, "the file ends inside the line") || !strings.Contains(errs, "status failed") {
		t.Fatalf("import --follow with an unterminated line at DONE: exit %d, %s", code, errs)
	}
	csv, _, _ := gvdb(t, "runs", "--db", store, "--format", "csv")
	if !strings.Contains(csv, "live,") || !strings.Contains(csv, ",failed,") {
		t.Errorf("run not marked failed:\n%s", csv)
	}
}

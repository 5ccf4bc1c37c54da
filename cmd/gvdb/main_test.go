package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"gvdb/db"
	"gvdb/db/synth"
	"gvdb/ingest"
)

// gvdb runs the CLI with args and returns stdout, stderr and the exit code.
func gvdb(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
	code := m.Exit(m.Run(context.Background(), args))
	return out.String(), errb.String(), code
}

// gvdbStdin runs the CLI with stdin and returns stdout, stderr and the exit
// code. An --interactive argument makes it behave as on a terminal.
func gvdbStdin(t *testing.T, mp **Main, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb}
	var rest []string
	for _, a := range args {
		if a == "--interactive" {
			m.Interactive = true
			continue
		}
		rest = append(rest, a)
	}
	if mp != nil {
		*mp = m
	}
	code := m.Exit(m.Run(context.Background(), rest))
	return out.String(), errb.String(), code
}

// synthStore makes a store with run "syn": an MLP 20-16-4 with snapshots of
// 8 examples at steps 0, 100, 200.
func synthStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	d, err := db.Open(dir, db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	layers := synth.MLP(20, 16, 4)
	r := &db.Run{Name: "syn", Status: db.StatusComplete, Config: db.Config{Model: "mlp", Dataset: "synthetic", LR: 0.1, BatchSize: 8}}
	r.Layers = synth.Schema(layers)
	if err := d.CreateRun(r); err != nil {
		t.Fatal(err)
	}
	w, err := ingest.NewWriter(d, "syn", ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := int64(0); step <= 200; step += 100 {
		blocks := synth.Snapshot(rng, 8, layers)
		s := &ingest.Snapshot{Step: step}
		for _, l := range layers {
			s.Blocks = append(s.Blocks, ingest.NamedBlock{Layer: l.Name, Block: blocks[l.Name]})
		}
		if err := w.Write(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestHelp(t *testing.T) {
	out, _, code := gvdb(t, "help")
	if code != exitOK || !strings.Contains(out, "inspect") {
		t.Fatalf("help: code %d, %q", code, out)
	}
	for name := range commands {
		out, _, code := gvdb(t, name, "-h")
		if code != exitOK || !strings.Contains(out, "Examples:") || !strings.Contains(out, "Usage: gvdb "+name) {
			t.Errorf("%s -h: code %d, output %q", name, code, out)
		}
	}
	if _, errs, code := gvdb(t, "inspct"); code != exitUsage || !strings.Contains(errs, `did you mean "inspect"`) {
		t.Errorf("unknown command: code %d, %q", code, errs)
	}
	if _, _, code := gvdb(t); code != exitUsage {
		t.Errorf("no command: code %d", code)
	}
}

func TestRunsAndInspect(t *testing.T) {
	dir := synthStore(t)
	out, errs, code := gvdb(t, "runs", "--db", dir)
	if code != exitOK || !strings.Contains(out, "syn") || !strings.Contains(out, "synthetic") {
		t.Fatalf("runs: %d %q %q", code, out, errs)
	}
	out, _, code = gvdb(t, "runs", "--db", dir, "--format", "json")
	var rows []map[string]any
	if code != exitOK || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0]["snapshots"] != 3.0 {
		t.Fatalf("runs json: %d %q", code, out)
	}
	out, _, code = gvdb(t, "inspect", "--db", dir, "--run", "syn")
	if code != exitOK || !strings.Contains(out, "fc2.bias") || !strings.Contains(out, "200") {
		t.Fatalf("inspect: %d %q", code, out)
	}
	out, _, code = gvdb(t, "inspect", "--db", dir, "--run", "syn", "--step", "100", "--format", "csv")
	if code != exitOK || !strings.HasPrefix(out, "layer,block,encoding") || strings.Count(out, "\n") != 5 || !strings.Contains(out, "fc1.weight,factored,float32,8,1x20x16,320,") {
		t.Fatalf("inspect step csv: %d %q", code, out)
	}
	out, _, code = gvdb(t, "inspect", "--db", dir, "--run", "syn", "--step", "100")
	if code != exitOK || !strings.Contains(out, "total") || !strings.Contains(out, "per example") {
		t.Fatalf("inspect step: %d %q", code, out)
	}
}

func TestErrors(t *testing.T) {
	dir := synthStore(t)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"inspect", "--db", dir, "--run", "sin"}, exitError, `did you mean "syn"`},
		{[]string{"inspect", "--db", dir, "--run", "syn", "--step", "150"}, exitError, "unknown snapshot"},
		{[]string{"inspect", "--db", dir}, exitUsage, "--run is required"},
		{[]string{"inspect", "--db", dir, "--run", "syn", "--format", "xml"}, exitUsage, "unknown --format"},
		{[]string{"runs", "--db", dir, "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"delete", "--db", dir + "/nope", "--run", "x"}, exitError, "no gvdb store"},
		{[]string{"runs", "--db", dir + "/nope"}, exitError, "no gvdb store"},
		{[]string{"delete", "--db", dir, "--run", "nope"}, exitError, "unknown run"},
	}
	for _, c := range cases {
		_, errs, code := gvdb(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) || strings.Contains(errs, "goroutine") {
			t.Errorf("%v: code %d (want %d), stderr %q (want %q)", c.args, code, c.code, errs, c.want)
		}
	}
	if _, _, code := gvdb(t, "delete", "--db", dir, "--run", "syn"); code != exitOK {
		t.Fatalf("delete: %d", code)
	}
	if out, _, _ := gvdb(t, "runs", "--db", dir, "--format", "csv"); strings.Contains(out, "syn") {
		t.Fatalf("deleted run still listed: %q", out)
	}
}

// TestCLIBehaves covers the command line as people use it: flags after
// the query, scripts on standard input that go on past a failed statement
// (or stop with --bail), an exit line, NDJSON for several statements,
// stray arguments, and /dev/null not taken for a terminal.
func TestCLIBehaves(t *testing.T) {
	dir := trainedStore(t)
	out, errs, code := gvdb(t, "query", "--db", dir, "SHOW RUNS", "--format", "csv")
	if code != exitOK || !strings.HasPrefix(out, "run,model,") {
		t.Errorf("flags after the query: exit %d, %q, %s", code, out, errs)
	}
	script := "SHOW RUNS;\nSELECT nvr FROM 'mlp';\nSELECT examples FROM 'mlp' WHERE step = 0;\nexit\nSHOW LAYERS FROM 'mlp'\n"
	out, errs, code = gvdbStdin(t, nil, script, "query", "--db", dir, "--format", "csv")
	if code != exitError || !strings.Contains(errs, "2:8: unknown statistic or scalar \"nvr\"") || !strings.Contains(errs, "1 of 3 statements failed") ||
		!strings.Contains(out, "step,examples\n0,64") || strings.Contains(out, "fc1.weight") {
		t.Errorf("script: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	out, _, code = gvdbStdin(t, nil, script, "query", "--db", dir, "--format", "csv", "--bail")
	if code != exitError || strings.Contains(out, "step,examples") {
		t.Errorf("--bail ran on: exit %d, %s", code, out)
	}
	out, _, code = gvdbStdin(t, nil, "SHOW LAYERS FROM 'mlp'; SELECT examples FROM 'mlp' WHERE step = 0", "query", "--db", dir, "--format", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 || !strings.HasPrefix(lines[0], "[{") || !strings.HasPrefix(lines[1], `[{"step":0`) {
		t.Errorf("NDJSON: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{{"runs", "--db", dir, "extra"}, {"inspect", "--db", dir, "--run", "mlp", "x"}, {"train", "--run", "x", "y"}} {
		if _, errs, code := gvdb(t, args...); code != exitUsage || !strings.Contains(errs, "unexpected argument") {
			t.Errorf("%v: exit %d, %s", args, code, errs)
		}
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if isTerminal(null) {
		t.Error("/dev/null counts as a terminal")
	}
}

// TestQueryWrites: PLOT writes its figure only where it may, and not at
// all with --no-file-writes.
func TestQueryWrites(t *testing.T) {
	dir := synthStore(t)
	out := t.TempDir()
	t.Chdir(out) // a PLOT's file lies beneath the working directory
	fig := filepath.Join(out, "v.png")
	q := "PLOT variance FROM 'syn' TO 'v.png'"
	if _, errs, code := gvdb(t, "query", "--db", dir, "--no-file-writes", q); code != exitError || !strings.Contains(errs, "file writes are off") {
		t.Errorf("--no-file-writes: exit %d, %s", code, errs)
	}
	if _, err := os.Stat(fig); err == nil {
		t.Error("the figure was written with --no-file-writes")
	}
	if _, errs, code := gvdb(t, "query", "--db", dir, q); code != exitOK {
		t.Errorf("PLOT: exit %d, %s", code, errs)
	}
	if _, errs, code := gvdb(t, "query", "--db", dir, "PLOT variance FROM 'syn' TO 'sub/v.png'"); code != exitError || !strings.Contains(errs, "does not create directories") {
		t.Errorf("PLOT into a missing directory: exit %d, %s", code, errs)
	}
}

// TestCompactAndForeignStores: deleting a run and compacting gives its
// space back and keeps the other run's answers; a Badger directory gvdb
// did not write is refused.
func TestCompactAndForeignStores(t *testing.T) {
	dir := t.TempDir()
	for _, run := range []string{"keep", "drop"} {
		if _, errs, code := gvdb(t, "train", "--db", dir, "--run", run, "--hidden", "32", "--steps", "20", "--batch", "16",
			"--snapshot-every", "5", "--snapshot-examples", "512", "--eval-examples", "100"); code != exitOK {
			t.Fatalf("train: %s", errs)
		}
	}
	q := "SELECT variance, nvar FROM 'keep'"
	want, _, _ := gvdb(t, "query", "--db", dir, "--format", "csv", q)
	full, _ := db.DiskSize(dir)
	if _, errs, code := gvdb(t, "delete", "--db", dir, "--run", "drop"); code != exitOK {
		t.Fatal(errs)
	}
	if _, errs, code := gvdb(t, "compact", "--db", dir); code != exitOK || !strings.Contains(errs, "compacted") {
		t.Fatalf("compact: exit %d, %s", code, errs)
	}
	after, _ := db.DiskSize(dir)
	if after > full*3/5 {
		t.Errorf("after deleting one of two equal runs and compacting: %d of %d bytes", after, full)
	}
	if got, _, _ := gvdb(t, "query", "--db", dir, "--format", "csv", q); got != want {
		t.Errorf("answers changed by compaction:\n%s\n%s", want, got)
	}
	foreign := t.TempDir()
	bdb, err := badger.Open(badger.DefaultOptions(foreign).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(txn *badger.Txn) error { return txn.Set([]byte("hello"), []byte("world")) }); err != nil {
		t.Fatal(err)
	}
	bdb.Close()
	for _, args := range [][]string{{"train", "--db", foreign, "--run", "x", "--steps", "1"}, {"runs", "--db", foreign}} {
		if _, errs, code := gvdb(t, args...); code != exitError || !strings.Contains(errs, "not a gvdb store") {
			t.Errorf("%v on a foreign Badger store: exit %d, %s", args, code, errs)
		}
	}
}

// TestCheck: a healthy store checks ok; a flipped bit in one stored block
// is a fault naming the run, step and layer, and exit 1.
func TestCheck(t *testing.T) {
	dir := synthStore(t)
	if out, errs, code := gvdb(t, "check", "--db", dir); code != exitOK || !strings.Contains(out, "ok") {
		t.Fatalf("check of a healthy store: exit %d\n%s%s", code, out, errs)
	}
	d, err := db.Open(dir, db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := d.Run("syn")
	s, err := d.Snapshot(r, 100, db.Select{})
	if err != nil {
		t.Fatal(err)
	}
	s.Step = 150
	s.Blocks[1].Data = bytes.Clone(s.Blocks[1].Data)
	s.Blocks[1].Data[len(s.Blocks[1].Data)/2] ^= 4
	if err := d.PutSnapshot("syn", s); err != nil {
		t.Fatal(err)
	}
	d.Close()
	out, _, code := gvdb(t, "check", "--db", dir)
	if code != exitError || !strings.Contains(out, "fault: syn@150: "+s.Blocks[1].Layer) || !strings.Contains(out, "checksum") {
		t.Fatalf("check of a damaged store: exit %d\n%s", code, out)
	}
}

// TestReindex: a run trained without rollups is answered from blocks;
// reindex adds rollups, after which the same answers come from them and
// check verifies them against the blocks.
func TestReindex(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := gvdb(t, "train", "--db", dir, "--run", "r", "--hidden", "16", "--steps", "10", "--batch", "16",
		"--snapshot-every", "5", "--snapshot-examples", "64", "--eval-examples", "100", "--rollups", "none"); code != exitOK {
		t.Fatal(errs)
	}
	q := "SELECT variance, nvar, gns, inner_test FROM 'r'"
	before, errs, _ := gvdb(t, "query", "--db", dir, "--format", "csv", "--timing", q)
	if !strings.Contains(errs, "0 from rollups") {
		t.Errorf("before reindex: %s", errs)
	}
	steps, _, _ := gvdb(t, "query", "--db", dir, "--format", "csv", "SHOW STEPS FROM 'r'")
	if !strings.Contains(steps, ",0\n") {
		t.Errorf("rollup bytes before reindex:\n%s", steps)
	}
	if _, errs, code := gvdb(t, "reindex", "--db", dir, "--rollups", "vectors"); code != exitOK || !strings.Contains(errs, "reindexed r: 3 snapshots") {
		t.Fatalf("reindex: exit %d, %s", code, errs)
	}
	after, errs, _ := gvdb(t, "query", "--db", dir, "--format", "csv", "--timing", q)
	if !strings.Contains(errs, "3 from rollups") {
		t.Errorf("after reindex: %s", errs)
	}
	// The same numbers (CSV prints them in full): to 1e-12, and nvar
	// (column 2, from the float32 vectors) within 1e-6; --from-blocks
	// gives the block path's exactly.
	b, a := strings.Split(before, "\n"), strings.Split(after, "\n")
	for i := 1; i < len(b) && i < len(a); i++ {
		for j, f := range strings.Split(b[i], ",") {
			var x, y float64
			fmt.Sscan(f, &x)
			fmt.Sscan(strings.Split(a[i], ",")[j], &y)
			tol := 1e-12
			if j == 2 {
				tol = 1e-6
			}
			if math.Abs(x-y) > tol*math.Abs(x) {
				t.Errorf("row %d column %d: %g from blocks, %g from rollups", i, j, x, y)
			}
		}
	}
	if blocks, errs, _ := gvdb(t, "query", "--db", dir, "--format", "csv", "--timing", "--from-blocks", q); blocks != before || !strings.Contains(errs, "0 from rollups") {
		t.Errorf("--from-blocks after reindex:\n%s\nbefore:\n%s\n%s", blocks, before, errs)
	}
	if out, _, code := gvdb(t, "check", "--db", dir); code != exitOK || !strings.Contains(out, "ok") {
		t.Errorf("check after reindex: exit %d\n%s", code, out)
	}
}

package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gvdb/db"
	"gvdb/plots/report"
)

// TestReportFolder: a report is written all or nothing into a new or
// empty folder; a folder holding other files, or a symbolic link, is
// refused and left as it was; --overwrite replaces only gvdb's own report.
func TestReportFolder(t *testing.T) {
	dir := synthStore(t)
	d, err := db.Open(dir, db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	var rows []db.ScalarRow
	for step := int64(0); step <= 200; step += 50 {
		rows = append(rows, db.ScalarRow{Step: step, Values: map[string]float64{"loss": 1 / (1 + float64(step))}})
	}
	err = d.PutScalars("syn", rows)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	mine := filepath.Join(parent, "mine")
	os.Mkdir(mine, 0o755)
	os.WriteFile(filepath.Join(mine, "index.html"), []byte("my page"), 0o644)
	for _, over := range []string{"--overwrite=false", "--overwrite"} {
		if _, errs, code := gvdb(t, "report", "--db", dir, "--out", mine, "--k", "4", over); code != exitError || !strings.Contains(errs, "index.html") {
			t.Errorf("report %s into a folder of other files: exit %d, %s", over, code, errs)
		}
	}
	if raw, _ := os.ReadFile(filepath.Join(mine, "index.html")); string(raw) != "my page" {
		t.Error("the report replaced a file it did not write")
	}
	target := filepath.Join(parent, "target")
	os.Mkdir(target, 0o755)
	link := filepath.Join(parent, "link")
	os.Symlink(target, link)
	if _, errs, code := gvdb(t, "report", "--db", dir, "--out", link, "--k", "4"); code != exitError || !strings.Contains(errs, "symbolic link") {
		t.Errorf("report into a symlinked folder: exit %d, %s", code, errs)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("the report wrote through a symbolic link: %v", entries)
	}
	out := filepath.Join(parent, "report")
	if _, errs, code := gvdb(t, "report", "--db", dir, "--out", out, "--k", "4"); code != exitOK {
		t.Fatalf("report: exit %d, %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(out, report.ManifestFile)); err != nil {
		t.Error(err)
	}
	if _, errs, code := gvdb(t, "report", "--db", dir, "--out", out, "--k", "4"); code != exitError || !strings.Contains(errs, "--overwrite") {
		t.Errorf("report again without --overwrite: exit %d, %s", code, errs)
	}
	if _, errs, code := gvdb(t, "report", "--db", dir, "--out", out, "--k", "4", "--overwrite"); code != exitOK {
		t.Errorf("report --overwrite: exit %d, %s", code, errs)
	}
	// A report that fails (here: interrupted) leaves no folder and no
	// temporary files.
	failed := filepath.Join(parent, "failed")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var sink strings.Builder
	m := &Main{Stdin: strings.NewReader(""), Stdout: &sink, Stderr: &sink}
	if err := m.Run(ctx, []string{"report", "--db", dir, "--out", failed, "--k", "4"}); err == nil {
		t.Fatal("an interrupted report succeeded")
	}
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if e.Name() == "failed" || strings.HasPrefix(e.Name(), ".gvdb-") {
			t.Errorf("a failed report left %s", e.Name())
		}
	}
}

// TestFilePaths: a path written in a query is resolved beneath the working
// directory without following symbolic links, and absolute paths and '..'
// are refused with the position; a path typed as a flag may be absolute
// but never ends in a symbolic link.
func TestFilePaths(t *testing.T) {
	dir := synthStore(t)
	work := t.TempDir()
	t.Chdir(work)
	outside := t.TempDir()
	os.Mkdir("real", 0o755)
	os.Symlink("real", "dirlink")
	os.Symlink(outside, "outlink")
	for _, c := range []struct{ to, want string }{
		{"dirlink/x.png", "dirlink is a symbolic link"},
		{"outlink/x.png", "outlink is a symbolic link"},
		{filepath.Join(outside, "x.png"), "not absolute"},
		{"../x.png", "'..'"},
		{"real/../../x.png", "'..'"},
	} {
		q := "PLOT variance FROM 'syn' TO '" + c.to + "'"
		_, errs, code := gvdb(t, "query", "--db", dir, q)
		if code != exitError || !strings.Contains(errs, c.want) || !strings.Contains(errs, "1:29:") || !strings.Contains(errs, "gvdb plot --out") {
			t.Errorf("%s: exit %d, %s", q, code, errs)
		}
		if _, errs, code := gvdb(t, "plot", "--db", dir, q); code != exitError || !strings.Contains(errs, c.want) {
			t.Errorf("plot %s: exit %d, %s", q, code, errs)
		}
	}
	for _, d := range []string{"real", outside, filepath.Dir(work)} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 && d != filepath.Dir(work) {
			t.Errorf("%s: %v", d, entries)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(work), "x.png")); err == nil {
		t.Error("a query wrote above the working directory")
	}
	if _, errs, code := gvdb(t, "query", "--db", dir, "PLOT variance FROM 'syn' TO 'real/x.png'"); code != exitOK {
		t.Errorf("PLOT beneath the working directory: exit %d, %s", code, errs)
	}
	// Flags: absolute is fine, a symbolic link at the end is not.
	abs := filepath.Join(outside, "v.png")
	if _, errs, code := gvdb(t, "plot", "--db", dir, "--out", abs, "SELECT variance FROM 'syn'"); code != exitOK {
		t.Errorf("plot --out %s: exit %d, %s", abs, code, errs)
	}
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	for _, name := range []string{"l.png", "l.parquet"} {
		os.Symlink(victim, filepath.Join(outside, name))
	}
	if _, errs, code := gvdb(t, "plot", "--db", dir, "--out", filepath.Join(outside, "l.png"), "SELECT variance FROM 'syn'"); code != exitError || !strings.Contains(errs, "symbolic link") {
		t.Errorf("plot --out a link: exit %d, %s", code, errs)
	}
	if _, errs, code := gvdb(t, "query", "--db", dir, "--format", "parquet", "--out", filepath.Join(outside, "l.parquet"), "SELECT variance FROM 'syn'"); code != exitError || !strings.Contains(errs, "symbolic link") {
		t.Errorf("query --out a link: exit %d, %s", code, errs)
	}
	if raw, _ := os.ReadFile(victim); string(raw) != "keep" {
		t.Error("wrote through a symbolic link")
	}
}

// TestNoFileWrites: --no-file-writes, before or after the command, or
// GVDB_NO_FILE_WRITES=1, stops every command that writes a file outside
// the store, and not writes to the store.
func TestNoFileWrites(t *testing.T) {
	dir := synthStore(t)
	out := t.TempDir()
	t.Chdir(out)
	cmds := [][]string{
		{"plot", "--db", dir, "--out", "p.png", "SELECT variance FROM 'syn'"},
		{"plot", "--db", dir, "PLOT variance FROM 'syn' TO 'p.png'"},
		{"query", "--db", dir, "PLOT variance FROM 'syn' TO 'p.png'"},
		{"query", "--db", dir, "--format", "parquet", "--out", "q.parquet", "SELECT variance FROM 'syn'"},
		{"report", "--db", dir, "--out", "r", "--k", "4"},
		{"export", "--db", dir, "--run", "syn", "--out", "e"},
		{"export", "--db", dir, "--run", "syn", "--format", "parquet", "--out", "e"},
		{"demo", "--db", filepath.Join(out, "store"), "--out", "d"},
	}
	for _, c := range cmds {
		for _, args := range [][]string{append([]string{"--no-file-writes"}, c...), append(c[:len(c):len(c)], "--no-file-writes")} {
			if _, errs, code := gvdb(t, args...); code != exitError || !strings.Contains(errs, "file writes are off") {
				t.Errorf("%v: exit %d, %s", args, code, errs)
			}
		}
	}
	t.Setenv("GVDB_NO_FILE_WRITES", "1")
	for _, c := range cmds {
		if _, errs, code := gvdb(t, c...); code != exitError || !strings.Contains(errs, "file writes are off") {
			t.Errorf("GVDB_NO_FILE_WRITES=1 %v: exit %d, %s", c, code, errs)
		}
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("files written: %v", entries)
	}
	// The store itself is still written.
	if _, errs, code := gvdb(t, "--no-file-writes", "delete", "--db", dir, "--run", "syn"); code != exitOK {
		t.Errorf("delete with --no-file-writes: exit %d, %s", code, errs)
	}
	t.Setenv("GVDB_NO_FILE_WRITES", "0")
	if _, errs, code := gvdb(t, "export", "--db", synthStore(t), "--run", "syn", "--out", "e"); code != exitOK {
		t.Errorf("GVDB_NO_FILE_WRITES=0: exit %d, %s", code, errs)
	}
}

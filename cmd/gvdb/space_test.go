package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"gvdb/db"
)

// tmpfs mounts a small tmpfs (root only) and returns its path; without
// mount it fails in CI (GVDB_REQUIRE_TMPFS=1) and is skipped loudly
// elsewhere.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		missing(t, "GVDB_REQUIRE_TMPFS", "cannot mount a tmpfs ("+strings.TrimSpace(string(out))+"): the full-disk behaviour is NOT tested (run the tests as root)")
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a file that leaves about leave bytes free on dir's file
// system, and returns a func that removes it.
func fill(t *testing.T, dir string, leave int64) func() {
	t.Helper()
	have, err := db.FreeSpace(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := have - leave; n > 0 {
		if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
			t.Fatal(err)
		}
	}
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFullDisk fills a small file system while a run trains and while one
// is imported: the writer stops with a clear error before Badger could
// fault, the run is kept and marked interrupted, recover on a full disk
// refuses without writing, and once space returns recover and check pass
// and the run completed earlier answers exactly as before.
func TestFullDisk(t *testing.T) {
	mnt := tmpfs(t, "256m")
	store := filepath.Join(mnt, "store")
	train := []string{"train", "--db", store, "--data", "rf", "--data-size", "512", "--model", "mlp", "--hidden", "64",
		"--batch", "32", "--snapshot-every", "5", "--snapshot-examples", "256", "--eval-examples", "64"}
	if _, errs, code := gvdb(t, append(train, "--run", "before", "--steps", "10")...); code != exitOK {
		t.Fatalf("train before: %s", errs)
	}
	answer := func() string {
		out, errs, code := gvdb(t, "query", "--db", store, "--format", "csv", "SELECT step, loss, variance, nvar, gns FROM 'before'")
		if code != exitOK {
			t.Fatalf("query: %s", errs)
		}
		return out
	}
	want := answer()
	runDir := filepath.Join(t.TempDir(), "before-run")
	if _, errs, code := gvdb(t, "export", "--db", store, "--run", "before", "--out", runDir); code != exitOK {
		t.Fatalf("export: %s", errs)
	}

	// About 3 MiB beyond the margin: training stops a few snapshots in.
	free := fill(t, store, db.SpaceMargin+3<<20)
	_, errs, code := gvdb(t, append(train, "--run", "full", "--steps", "200")...)
	if code != exitError || !strings.Contains(errs, "no space left on device: need") || !strings.Contains(errs, "status interrupted") {
		t.Fatalf("train on a full disk: code %d, %s", code, errs)
	}
	out, _, _ := gvdb(t, "runs", "--db", store, "--format", "csv")
	if !strings.Contains(out, "full,mlp,rf,interrupted,") {
		t.Errorf("the run that hit the full disk is not kept as interrupted:\n%s", out)
	}
	_, errs, code = gvdb(t, "import", runDir, "--db", store, "--run", "imported")
	if code != exitError || !strings.Contains(errs, "no space left on device") {
		t.Fatalf("import on a full disk: code %d, %s", code, errs)
	}
	free()

	// recover on a disk without room for its work changes nothing.
	free = fill(t, store, 1<<20)
	before := storeDigest(t, store)
	if _, errs, code := gvdb(t, "recover", "--db", store); code != exitError || !strings.Contains(errs, "no space left on device") {
		t.Errorf("recover on a full disk: code %d, %s", code, errs)
	}
	if storeDigest(t, store) != before {
		t.Errorf("a refused recover changed the store")
	}
	free()

	for _, args := range [][]string{{"recover", "--db", store}, {"check", "--db", store}} {
		if _, errs, code := gvdb(t, args...); code != exitOK {
			t.Fatalf("%v once space returned: %s", args, errs)
		}
	}
	if got := answer(); got != want {
		t.Errorf("the run completed before answers differently after the full disk:\n%s\nwant:\n%s", got, want)
	}
}

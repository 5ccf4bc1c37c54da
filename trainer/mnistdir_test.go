package trainer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMNISTDirRunsNoGo: finding MNIST runs no Go toolchain (a built
// binary need not have one, and go would write its telemetry): a fake go
// on PATH is never called; with no cache to look in, the error says what
// was tried.
func TestMNISTDirRunsNoGo(t *testing.T) {
	bin := t.TempDir()
	marker := filepath.Join(bin, "called")
	script := "#!/bin/sh\ntouch " + marker + "\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "go"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	t.Setenv("GVDB_MNIST_DIR", "")
	dir, err := MNISTDir()
	if err != nil {
		t.Fatal(err)
	}
	if !ok(dir) {
		t.Fatalf("%s holds no MNIST", dir)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("MNISTDir ran go")
	}
	empty := t.TempDir()
	for _, k := range []string{"GOMODCACHE", "GOPATH", "HOME", "XDG_CONFIG_HOME"} {
		t.Setenv(k, empty)
	}
	t.Setenv("GOENV", "off")
	_, err = findMNIST("", []string{"v1.2.3"})
	want := filepath.Join(empty, "pkg", "mod", "github.com", "petar", "!go!m!n!i!s!t@v1.2.3", "data")
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "GVDB_MNIST_DIR") {
		t.Errorf("no cache: %v (want the folders tried, %s...)", err, want)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("MNISTDir ran go")
	}
}

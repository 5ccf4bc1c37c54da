package db

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// uncleanCopy writes a run and a snapshot to a store, copies its files
// while it is still open (as a killed writer leaves them: the write-ahead
// log holds the data; value logs left out), and returns the copy's directory and its .mem file.
func uncleanCopy(t *testing.T) (string, string) {
	t.Helper()
	src := t.TempDir()
	d, err := Open(src, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.CreateRun(testRun("r")); err != nil {
		t.Fatal(err)
	}
	if err := d.PutSnapshot("r", snap(0, "fc1.weight", "fc1.bias", "fc2.weight")); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	entries, _ := os.ReadDir(src)
	mem := ""
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".vlog") || e.Name() == SocketName {
			continue // preallocated (GiBs of zeros) and not needed here; the writer's socket
		}
		raw, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(e.Name(), ".mem") {
			mem = filepath.Join(dst, e.Name())
		}
	}
	if mem == "" {
		t.Fatal("no write-ahead log in the store")
	}
	return dst, mem
}

// TestHostileLogLength: a write-ahead log entry whose value length runs
// past the end of its file (Badger would allocate three times that length
// before reading it) is refused as a damaged store, naming the file,
// before Badger opens it; the undamaged log passes the same check.
func TestHostileLogLength(t *testing.T) {
	dir, mem := uncleanCopy(t)
	if err := checkLogs(dir, true, true); err != nil {
		t.Fatalf("a healthy log: %v", err)
	}
	raw, err := os.ReadFile(mem)
	if err != nil {
		t.Fatal(err)
	}
	// The first entry's header: meta, user meta, key length; then its
	// value length, rewritten as 4 GiB − 16.
	at := logHeaderSize + 2
	_, n := binary.Uvarint(raw[at:])
	at += n
	binary.PutUvarint(raw[at:], 1<<32-16)
	if err := os.WriteFile(mem, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{true, false} {
		_, err := Open(dir, Options{ReadOnly: ro, Log: io.Discard})
		if !errors.Is(err, ErrCorruptStore) || !strings.Contains(err.Error(), filepath.Base(mem)) || !strings.Contains(err.Error(), "past the end") {
			t.Errorf("read-only %v: %v", ro, err)
		}
	}
}

package ingest

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"gvdb/db"
)

// fuzzStore builds a small healthy store once and returns its files.
func fuzzStore(f *testing.F) map[string][]byte {
	dir := f.TempDir()
	d, err := db.Open(dir, db.Options{Log: io.Discard})
	if err != nil {
		f.Fatal(err)
	}
	if err := d.CreateRun(testRun("r")); err != nil {
		f.Fatal(err)
	}
	w, err := NewWriter(d, "r", Options{})
	if err != nil {
		f.Fatal(err)
	}
	for step := int64(0); step < 3; step++ {
		if err := w.Write(context.Background(), testSnapshot(step, 4)); err != nil {
			f.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	if err := d.PutScalars("r", []db.ScalarRow{{Step: 0, Values: map[string]float64{"loss": 1}}}); err != nil {
		f.Fatal(err)
	}
	if err := d.Close(); err != nil {
		f.Fatal(err)
	}
	files := map[string][]byte{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		files[e.Name()] = raw
	}
	return files
}

// FuzzStore damages one file of a healthy store (flips, overwrites or
// truncates bytes at an offset), opens the copy read-only and reads all of
// it with Check: any error is fine, a panic or a hang is not. Run it with
// go test ./ingest -run X -fuzz FuzzStore -fuzztime 30m.
func FuzzStore(f *testing.F) {
	files := fuzzStore(f)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for i := range names {
		f.Add(byte(i), byte(0), uint32(0), []byte{0xff})
		f.Add(byte(i), byte(1), uint32(20), []byte{})
		f.Add(byte(i), byte(2), uint32(100), []byte("garbage"))
	}
	f.Fuzz(func(t *testing.T, file, op byte, off uint32, data []byte) {
		dir := t.TempDir()
		target := names[int(file)%len(names)]
		for n, raw := range files {
			raw = append([]byte(nil), raw...)
			if n == target && len(raw) > 0 {
				at := int(off) % len(raw)
				switch op % 3 {
				case 0: // flip
					for i, b := range data {
						if at+i < len(raw) {
							raw[at+i] ^= b
						}
					}
				case 1: // truncate
					raw = raw[:at]
				case 2: // overwrite
					copy(raw[at:], data)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, n), raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		d, err := db.Open(dir, db.Options{ReadOnly: true, Log: io.Discard})
		if err != nil {
			return
		}
		defer d.Close()
		_, _ = Check(d, nil)
	})
}

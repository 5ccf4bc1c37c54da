package ingest

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"gvdb/db"
)

// fuzzStore builds a small healthy store once and returns its files, and
// the files a killed writer of it leaves (a write-ahead log, .mem, with
// the last writes, its zeroed tail trimmed).
func fuzzStore(f *testing.F) (healthy, killed map[string][]byte) {
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
	read := func() map[string][]byte {
		files := map[string][]byte{}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue // a live writer's socket
			}
			raw, err := readData(filepath.Join(dir, e.Name()))
			if err != nil {
				f.Fatal(err)
			}
			if strings.HasSuffix(e.Name(), ".mem") || strings.HasSuffix(e.Name(), ".vlog") {
				end := len(raw)
				for end > 0 && raw[end-1] == 0 {
					end--
				}
				raw = raw[:min(len(raw), end+4096)]
			}
			files[e.Name()] = raw
		}
		return files
	}
	healthy = read()
	if d, err = db.Open(dir, db.Options{Log: io.Discard}); err != nil {
		f.Fatal(err)
	}
	defer d.Close()
	w, err = NewWriter(d, "r", Options{})
	if err != nil {
		f.Fatal(err)
	}
	if err := w.Write(context.Background(), testSnapshot(3, 4)); err != nil {
		f.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		f.Fatal(err)
	}
	return healthy, read()
}

// readData reads a file up to the end of its last data region: a live
// store's logs are sparse files of up to 2 GiB, mostly holes.
func readData(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	end := int64(0)
	for off := int64(0); off < st.Size(); {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		end, off = hole, hole
	}
	raw := make([]byte, end)
	_, err = f.ReadAt(raw, 0)
	if err == io.EOF {
		err = nil
	}
	return raw, err
}

// FuzzStore damages one file of a healthy store, or of one a killed
// writer left (MANIFEST, a table, the write-ahead log .mem, a value log;
// it flips, truncates or overwrites bytes at an offset), opens the copy
// read-only and reads all of it with Check: any error is fine; a panic, a
// hang, or a read that changes a file (Badger's open removes tables
// MANIFEST does not list, in read-only mode too) is not. Run it with
// go test ./ingest -run X -fuzz FuzzStore -fuzztime 30m.
func FuzzStore(f *testing.F) {
	healthy, killed := fuzzStore(f)
	stores := []map[string][]byte{healthy, killed}
	names := make([][]string, 2)
	for i, files := range stores {
		for n := range files {
			names[i] = append(names[i], n)
		}
		sort.Strings(names[i])
	}
	for i := range names[1] {
		f.Add(byte(i), byte(0), uint32(0), []byte{0xff})
		f.Add(byte(i), byte(1), uint32(20), []byte{})
		f.Add(byte(i), byte(2), uint32(100), []byte("garbage"))
		f.Add(byte(i), byte(4), uint32(30), []byte{0x10})
		f.Add(byte(i), byte(5), uint32(27), []byte{})
	}
	f.Fuzz(func(t *testing.T, file, op byte, off uint32, data []byte) {
		dir := t.TempDir()
		which := int(op/3) % 2
		files, list := stores[which], names[which]
		target := list[int(file)%len(list)]
		written := map[string][]byte{}
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
			written[n] = raw
		}
		if d, err := db.Open(dir, db.Options{ReadOnly: true, Log: io.Discard}); err == nil {
			_, _ = Check(d, nil)
			d.Close()
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != len(written) {
			t.Fatalf("a read changed the store's files: %d files, wrote %d", len(entries), len(written))
		}
		for n, raw := range written {
			got, err := os.ReadFile(filepath.Join(dir, n))
			if err != nil {
				t.Fatalf("a read removed %s: %v", n, err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatalf("a read changed %s", n)
			}
		}
	})
}

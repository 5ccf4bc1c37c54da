package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"gvdb/db"
)

// storeDigest is every file of dir with the hash of its bytes: a read
// must leave it unchanged.
func storeDigest(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		h := sha256.New()
		size, err := sparseCopy(h, path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(&b, "%s %d %x\n", rel, size, h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// copyStore copies a store directory (flat) to a new temporary one.
func copyStore(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue // a live writer's socket
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		size, err := sparseCopy(out, filepath.Join(src, e.Name()))
		if err == nil {
			err = out.Truncate(size)
		}
		if err := errors.Join(err, out.Close()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// sparseCopy writes the data regions of path to w, at their offsets when
// w is a file (leaving holes where path has them: a live store's logs are
// large sparse files), and returns path's size.
func sparseCopy(w io.Writer, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break // no data after off
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return 0, err
		}
		if out, ok := w.(*os.File); ok {
			if _, err := out.Seek(data, io.SeekStart); err != nil {
				return 0, err
			}
		} else {
			fmt.Fprintf(w, "@%d:", data)
		}
		if _, err := io.Copy(w, io.NewSectionReader(f, data, hole-data)); err != nil {
			return 0, err
		}
		off = hole
	}
	return size, nil
}

// scalarStore is synthStore with step scalars (201 rows), closed cleanly.
func scalarStore(t *testing.T) string {
	t.Helper()
	dir := synthStore(t)
	d, err := db.Open(dir, db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	var rows []db.ScalarRow
	for step := int64(0); step <= 200; step++ {
		rows = append(rows, db.ScalarRow{Step: step, Values: map[string]float64{"loss": 1 / float64(step+1)}})
	}
	if err := d.PutScalars("syn", rows); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// killedStore returns a store as a killed writer leaves it: the files of
// a store still open, after its writes were synced (the write-ahead log,
// .mem, holds the last snapshot's entries).
func killedStore(t *testing.T) string {
	t.Helper()
	live := scalarStore(t)
	d, err := db.Open(live, db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.PutScalars("syn", []db.ScalarRow{{Step: 300, Values: map[string]float64{"loss": 0.5}}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	return copyStore(t, live)
}

// readCommands are the commands that only read a store.
var readCommands = [][]string{
	{"runs"},
	{"inspect", "--run", "syn"},
	{"inspect", "--run", "syn", "--step", "100"},
	{"query", "SHOW STEPS FROM 'syn'"},
	{"query", "SELECT variance, nvar, gns FROM 'syn'"},
	{"query", "SELECT loss FROM 'syn'"},
	{"check"},
}

// TestDamagedStoreReads damages each kind of store file the way disks
// and crashes do, runs every read command on it, and checks that no read
// changed a byte or a file name, and that each read either answers as on
// the healthy store or fails saying what is wrong. Then recover repairs
// what it can, keeping what it sets aside, and check passes.
func TestDamagedStoreReads(t *testing.T) {
	healthy := scalarStore(t)
	killed := killedStore(t)
	want := map[string]string{}
	for _, args := range readCommands {
		out, errs, code := gvdb(t, append(args, "--db", healthy, "--format", "csv")...)
		if args[0] == "check" {
			out, errs, code = gvdb(t, "check", "--db", healthy)
		}
		if code != exitOK {
			t.Fatalf("%v on the healthy store: %d %s", args, code, errs)
		}
		want[strings.Join(args, " ")] = out
	}
	sst := func(dir string) string {
		names, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
		if len(names) == 0 {
			t.Fatalf("no table file in %s", dir)
		}
		return names[0]
	}
	manifestSize := func(dir string) int64 {
		st, err := os.Stat(filepath.Join(dir, "MANIFEST"))
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	cases := []struct {
		name    string
		base    string
		damage  func(dir string) error
		wantErr string // what the read error says
		recover bool   // recover repairs it (else it refuses)
	}{
		{"MANIFEST cut to its header", healthy, func(d string) error { return os.Truncate(filepath.Join(d, "MANIFEST"), 8) },
			"not listed in MANIFEST", true},
		{"MANIFEST's last byte cut", healthy, func(d string) error {
			return os.Truncate(filepath.Join(d, "MANIFEST"), manifestSize(d)-1)
		}, "torn", true},
		{"MANIFEST zeroed", healthy, func(d string) error {
			return os.WriteFile(filepath.Join(d, "MANIFEST"), make([]byte, manifestSize(d)), 0o644)
		}, "MANIFEST", false},
		{"table file missing", healthy, func(d string) error { return os.Remove(sst(d)) }, "which is not in the store", false},
		{"orphan table", healthy, func(d string) error {
			raw, err := os.ReadFile(sst(d))
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(d, "000099.sst"), raw, 0o644)
		}, "000099.sst is not listed", true},
		{"table block flipped", healthy, func(d string) error { return flipByte(sst(d), 100) }, "checksum", false},
		{"killed writer", killed, func(string) error { return nil }, "recover", true},
		{"write-ahead log damaged mid-way", killed, func(d string) error {
			mems, _ := filepath.Glob(filepath.Join(d, "*.mem"))
			if len(mems) == 0 {
				return fmt.Errorf("no .mem")
			}
			return flipByte(mems[0], 40) // inside the first entry: the later ones are committed
		}, "committed entries follow", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyStore(t, c.base)
			if err := c.damage(dir); err != nil {
				t.Fatal(err)
			}
			before := storeDigest(t, dir)
			for _, args := range readCommands {
				out, errs, code := gvdb(t, append(slices.Clone(args), "--db", dir, "--format", "csv")...)
				if args[0] == "check" {
					out, errs, code = gvdb(t, "check", "--db", dir)
				}
				key := strings.Join(args, " ")
				switch {
				case code == exitOK && c.base == healthy && out != want[key]:
					t.Errorf("%s answers differently on the damaged store, without an error:\n%s\nhealthy:\n%s", key, out, want[key])
				case code == exitOK && c.base == killed:
					t.Errorf("%s reads a killed or damaged store: %s", key, out)
				case code != exitOK && !strings.Contains(errs, c.wantErr):
					t.Errorf("%s: error %q does not say %q", key, errs, c.wantErr)
				}
				if after := storeDigest(t, dir); after != before {
					t.Fatalf("%s changed the store:\nbefore:\n%s\nafter:\n%s", key, before, after)
				}
			}
			_, errs, code := gvdb(t, "recover", "--db", dir)
			if !c.recover {
				if code == exitOK {
					t.Errorf("recover repaired what it cannot: %s", errs)
				}
				if after := storeDigest(t, dir); after != before {
					t.Errorf("a refused recover changed the store")
				}
				return
			}
			if code != exitOK {
				t.Fatalf("recover: %d %s", code, errs)
			}
			if _, errs, code := gvdb(t, "check", "--db", dir); code != exitOK {
				t.Fatalf("check after recover: %d %s", code, errs)
			}
			// Nothing was deleted: what recover removed from the store's
			// working set is in its recovered-* folder.
			for _, line := range strings.Split(strings.TrimSpace(before), "\n") {
				name := strings.Fields(line)[0]
				if strings.HasSuffix(name, ".sst") {
					if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
						aside, _ := filepath.Glob(filepath.Join(dir, "recovered-*", name))
						if len(aside) == 0 && !strings.Contains(errs, "flush") {
							t.Errorf("table %s is gone, and not in recovered-*: %s", name, errs)
						}
					}
				}
			}
		})
	}
}

// flipByte flips the bits of one byte of path.
func flipByte(path string, off int64) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if off >= int64(len(raw)) {
		return fmt.Errorf("%s has %d bytes", path, len(raw))
	}
	raw[off] ^= 0xff
	return os.WriteFile(path, raw, 0o644)
}

// TestTableFlipSweep flips one bit at each of 40 places spread over a
// table file: no flip may change an answer (the runs, SHOW STEPS, the
// scalars, a statistic) while the reads succeed and check passes.
func TestTableFlipSweep(t *testing.T) {
	healthy := scalarStore(t)
	queries := [][]string{
		{"runs", "--format", "csv"},
		{"query", "--format", "csv", "SHOW STEPS FROM 'syn'"},
		{"query", "--format", "csv", "SELECT loss FROM 'syn'"},
		{"query", "--format", "csv", "SELECT variance, nvar FROM 'syn'"},
	}
	want := make([]string, len(queries))
	for i, q := range queries {
		out, errs, code := gvdb(t, append(slices.Clone(q), "--db", healthy)...)
		if code != exitOK {
			t.Fatalf("%v: %s", q, errs)
		}
		want[i] = out
	}
	// 40 places spread over the store's table files, end to end.
	names, _ := filepath.Glob(filepath.Join(healthy, "*.sst"))
	var tables [][]byte
	total := 0
	for _, n := range names {
		raw, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		tables = append(tables, raw)
		total += len(raw)
	}
	if total == 0 {
		t.Fatal("no table files")
	}
	caught := 0
	for k := range 40 {
		off := k * (total - 1) / 39
		ti := 0
		for off >= len(tables[ti]) {
			off -= len(tables[ti])
			ti++
		}
		dir := copyStore(t, healthy)
		path := filepath.Join(dir, filepath.Base(names[ti]))
		dam := bytes.Clone(tables[ti])
		dam[off] ^= 1 << (k % 8)
		if err := os.WriteFile(path, dam, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, checkCode := gvdb(t, "check", "--db", dir)
		if checkCode != exitOK {
			caught++
		}
		for i, q := range queries {
			out, errs, code := gvdb(t, append(slices.Clone(q), "--db", dir)...)
			if code == exitOK && out != want[i] {
				t.Errorf("flip at byte %d of %s: %v answers differently without an error (check exit %d):\n%s\nhealthy:\n%s", off, filepath.Base(path), q, checkCode, out, want[i])
			}
			if code == exitOK && checkCode != exitOK {
				t.Errorf("flip at byte %d of %s: check fails but %v reads the store: %s", off, filepath.Base(path), q, errs)
			}
		}
	}
	t.Logf("%d of 40 flips refused by check; the others change no answer", caught)
}

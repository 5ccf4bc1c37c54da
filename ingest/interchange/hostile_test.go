//go:build unix

package interchange

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gvdb/db"
)

// within runs fn, failing the test if it has not returned after a few
// seconds (a read that blocks on a FIFO or reads an endless file).
func within[T any](t *testing.T, fn func() T) T {
	t.Helper()
	ch := make(chan T, 1)
	go func() { ch <- fn() }()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("still reading after 5 s (blocked, or reading without bound)")
	}
	panic("unreachable")
}

// editManifest rewrites dir/manifest.json through fn.
func editManifest(t *testing.T, dir string, fn func(m map[string]any)) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	if raw, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readErr reads the snapshot at dir, bounded in time, and returns the
// error (nil: accepted).
func readErr(t *testing.T, dir string, c *RunConfig, r *db.Run) error {
	t.Helper()
	return within(t, func() error {
		_, _, err := ReadSnapshot(dir, c, r)
		return err
	})
}

// TestReadSnapshotRefusesHostileNames: every file a manifest names (ids,
// layer files, attribute files, anchors) is a plain name inside the
// snapshot directory, even when the name outside leads to a valid file.
func TestReadSnapshotRefusesHostileNames(t *testing.T) {
	cases := []struct {
		name, want string
		edit       func(m map[string]any)
	}{
		{"ids outside", `manifest "ids": "../../../outside/ids.npy" is not a plain file name`, func(m map[string]any) {
			m["ids"] = "../../../outside/ids.npy"
		}},
		{"absolute ids", `manifest "ids": "/etc/passwd"`, func(m map[string]any) { m["ids"] = "/etc/passwd" }},
		{"attribute outside", `manifest "attributes"."label": "../../../outside/attr.label.npy"`, func(m map[string]any) {
			m["attributes"].(map[string]any)["label"] = "../../../outside/attr.label.npy"
		}},
		{"layer file outside", `manifest "files"."rows": "../../../outside/fc1.bias.rows.npy"`, func(m map[string]any) {
			m["layers"].([]any)[1].(map[string]any)["files"].(map[string]any)["rows"] = "../../../outside/fc1.bias.rows.npy"
		}},
		{"unread file key", `manifest "files"."grad": ".."`, func(m map[string]any) {
			m["layers"].([]any)[0].(map[string]any)["files"].(map[string]any)["grad"] = ".."
		}},
		{"anchor file outside", `manifest "files"."A": "../../../outside/fc1.weight.A.npy"`, func(m map[string]any) {
			var anchor []any
			for _, l := range m["layers"].([]any) {
				l := l.(map[string]any)
				files := map[string]any{}
				for k, v := range l["files"].(map[string]any) {
					files[k] = "../../../outside/" + v.(string)
				}
				anchor = append(anchor, map[string]any{"name": l["name"], "files": files})
			}
			m["anchor"] = map[string]any{"step": 0, "layers": anchor}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			outside := filepath.Join(root, "outside")
			dir := filepath.Join(root, "a", "b", "snap")
			for _, d := range []string{outside, dir} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			fuzzSeed(t, outside) // valid files where the names lead
			c, r := fuzzSeed(t, dir)
			if _, _, err := ReadSnapshot(dir, c, r); err != nil {
				t.Fatalf("the undamaged snapshot: %v", err)
			}
			editManifest(t, dir, tc.edit)
			err := readErr(t, dir, c, r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestReadSnapshotRefusesSpecialFiles: links, FIFOs, devices and
// directories in a snapshot are refused at once, without blocking or
// reading without bound, and a manifest over MaxJSONBytes is refused.
func TestReadSnapshotRefusesSpecialFiles(t *testing.T) {
	cases := []struct {
		name, file, want string
		make             func(path string) error
	}{
		{"manifest links to /dev/zero", "manifest.json", "manifest.json is a symbolic link", func(p string) error { return os.Symlink("/dev/zero", p) }},
		{"ids.npy is a FIFO", "ids.npy", "ids.npy is a FIFO", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"layer file is a FIFO", "fc1.weight.A.npy", "fc1.weight.A.npy is a FIFO", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"attribute links to /dev/zero", "attr.label.npy", "attr.label.npy is a symbolic link", func(p string) error { return os.Symlink("/dev/zero", p) }},
		{"layer file links to a valid copy", "fc1.bias.rows.npy", "fc1.bias.rows.npy is a symbolic link", func(p string) error {
			raw, err := os.ReadFile(p + ".orig")
			if err != nil {
				return err
			}
			if err := os.WriteFile(p+".copy", raw, 0o644); err != nil {
				return err
			}
			return os.Symlink(filepath.Base(p)+".copy", p)
		}},
		{"ids.npy is a directory", "ids.npy", "ids.npy is a directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"huge manifest", "manifest.json", "over the limit", func(p string) error {
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Truncate(MaxJSONBytes + 1) // sparse: no disk used
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, r := fuzzSeed(t, dir)
			p := filepath.Join(dir, tc.file)
			if err := os.Rename(p, p+".orig"); err != nil {
				t.Fatal(err)
			}
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			err := readErr(t, dir, c, r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestOpenFileRefusesSwap: a file swapped for a FIFO between the check
// and the open does not block, and is refused (the open flags and the
// check of the open file, not only Lstat).
func TestOpenFileRefusesSwap(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.npy")
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	f := within(t, func() error {
		f, err := os.OpenFile(p, os.O_RDONLY|openFlags, 0)
		if err == nil {
			f.Close()
		}
		return err
	})
	if f != nil {
		t.Fatalf("open of a FIFO with openFlags: %v", f)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/null", p); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(p, os.O_RDONLY|openFlags, 0); err == nil {
		f.Close()
		t.Error("openFlags follow a symbolic link")
	}
}

// TestReadSnapshotRefusesIDsOverInt63: example ids are stored as int64;
// a uint64 id of 2^63 or more is refused, 2^63-1 is kept.
func TestReadSnapshotRefusesIDsOverInt63(t *testing.T) {
	for _, tc := range []struct {
		id uint64
		ok bool
	}{{math.MaxUint64, false}, {1 << 63, false}, {math.MaxInt64, true}} {
		dir := t.TempDir()
		c, r := fuzzSeed(t, dir)
		ids := []uint64{0, 1, 2, 3, 4, tc.id}
		os.Remove(filepath.Join(dir, "ids.npy"))
		if err := writeNpy(filepath.Join(dir, "ids.npy"), []int{6}, ids); err != nil {
			t.Fatal(err)
		}
		s, _, err := ReadSnapshot(dir, c, r)
		if tc.ok {
			if err != nil || s.Blocks[0].Block.IDs[5] != tc.id {
				t.Errorf("id %d: %v", tc.id, err)
			}
		} else if err == nil || !strings.Contains(err.Error(), "does not fit int63") {
			t.Errorf("id %d: got %v, want it refused", tc.id, err)
		}
	}
}

// TestReadRunConfigRefusesSpecialFiles: run.json as a link to /dev/zero,
// a FIFO, or over MaxJSONBytes is refused at once.
func TestReadRunConfigRefusesSpecialFiles(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		make       func(p string) error
	}{
		{"link to /dev/zero", "run.json is a symbolic link", func(p string) error { return os.Symlink("/dev/zero", p) }},
		{"FIFO", "run.json is a FIFO", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"huge", "over the limit", func(p string) error { return os.Truncate(mustCreate(p), MaxJSONBytes+1) }},
		{"data after the value", "data after", func(p string) error {
			return os.WriteFile(p, []byte(`{"format": "gvdb-run"} {"format": "x"}`), 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tc.make(filepath.Join(dir, "run.json")); err != nil {
				t.Fatal(err)
			}
			err := within(t, func() error { _, err := ReadRunConfig(dir); return err })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestStepsRefusesLinks: a step-* name that is a link (or a file) is an
// error, not a directory followed or ignored; DONE must be a file.
func TestStepsRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	target := t.TempDir()
	if err := os.Symlink(target, filepath.Join(dir, SnapshotDir(10))); err != nil {
		t.Fatal(err)
	}
	if _, err := Steps(dir); err == nil || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("Steps with a linked snapshot: %v", err)
	}
	if _, _, err := ReadSnapshot(filepath.Join(dir, SnapshotDir(10)), nil, nil); err == nil || !strings.Contains(err.Error(), "not a snapshot directory") {
		t.Errorf("ReadSnapshot of a link: %v", err)
	}
	if err := os.Symlink("/dev/null", filepath.Join(dir, "DONE")); err != nil {
		t.Fatal(err)
	}
	if ok, err := exists(dir, "DONE"); ok || err == nil {
		t.Errorf("DONE as a link: %v %v", ok, err)
	}
}

// writeScalars writes dir/scalars.jsonl.
func writeScalars(t *testing.T, dir, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "scalars.jsonl"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReadScalarsHostile: duplicate keys, an unterminated last line once
// the writer has finished, over-long lines, links and FIFOs are errors;
// an unterminated line while the writer may still append waits.
func TestReadScalarsHostile(t *testing.T) {
	dir := t.TempDir()
	writeScalars(t, dir, "{\"step\": 1, \"loss\": 2, \"loss\": 3}\n")
	if _, _, err := ReadScalars(dir, 0, 0, false); err == nil || !strings.Contains(err.Error(), `line 1: key "loss" appears twice`) {
		t.Errorf("duplicate key: %v", err)
	}
	writeScalars(t, dir, "{\"step\": 1, \"st\\u0065p\": 2}\n")
	if _, _, err := ReadScalars(dir, 0, 0, false); err == nil || !strings.Contains(err.Error(), `key "step" appears twice`) {
		t.Errorf("duplicate step (escaped): %v", err)
	}

	const complete = "{\"step\": 1, \"loss\": 0.5}\n{\"step\": 2, \"loss\": null}\n"
	writeScalars(t, dir, complete+`{"step": 3, "loss": 0.2}`)
	lines, off, err := ReadScalars(dir, 0, 0, false)
	if err != nil || len(lines) != 2 || off != int64(len(complete)) || lines[1].Step != 2 || !math.IsNaN(lines[1].Values["loss"]) {
		t.Fatalf("following: %v lines, offset %d, %v", lines, off, err)
	}
	if more, off2, err := ReadScalars(dir, off, 2, false); err != nil || len(more) != 0 || off2 != off {
		t.Errorf("following again: %v, %d, %v", more, off2, err)
	}
	if _, _, err := ReadScalars(dir, off, 2, true); err == nil || !strings.Contains(err.Error(), "line 3: the file ends inside the line") {
		t.Errorf("unterminated line after the writer finished: %v", err)
	}
	if lines, _, err := ReadScalars(dir, 0, 0, true); err == nil || len(lines) != 2 {
		t.Errorf("final read from the start: %d lines, %v", len(lines), err)
	}
	writeScalars(t, dir, complete)
	if lines, off, err := ReadScalars(dir, 0, 0, true); err != nil || len(lines) != 2 || off != int64(len(complete)) {
		t.Errorf("complete file: %d lines, %d, %v", len(lines), off, err)
	}

	// A line over the cap: an error even while following, unterminated.
	writeScalars(t, dir, `{"step": 1, "loss": `+strings.Repeat("0", MaxScalarLine)+"1}\n")
	if _, _, err := ReadScalars(dir, 0, 0, false); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("over-long line: %v", err)
	}
	writeScalars(t, dir, `{"step": 1, "loss": `+strings.Repeat("0", MaxScalarLine))
	if _, _, err := ReadScalars(dir, 0, 0, false); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("over-long unterminated line: %v", err)
	}
	// Just under the cap is a line.
	line := `{"step": 1, "loss": 1}`
	line = line[:len(line)-1] + strings.Repeat(" ", MaxScalarLine-len(line)-1) + "}\n"
	writeScalars(t, dir, line)
	if lines, _, err := ReadScalars(dir, 0, 0, true); err != nil || len(lines) != 1 || lines[0].Values["loss"] != 1 {
		t.Errorf("a line of %d bytes: %v", len(line), err)
	}

	for _, bad := range []string{`{"step": 1} {"step": 2}`, `{"step": 1, "x": 1e400}`, `{"step": 1, "x": [1]}`, `[1]`, `{"loss": 1}`, `{"step": null}`} {
		writeScalars(t, dir, bad+"\n")
		if _, _, err := ReadScalars(dir, 0, 0, true); err == nil || !strings.Contains(err.Error(), "scalars.jsonl line 1") {
			t.Errorf("%s: %v", bad, err)
		}
	}

	os.Remove(filepath.Join(dir, "scalars.jsonl"))
	if lines, _, err := ReadScalars(dir, 0, 0, true); err != nil || lines != nil {
		t.Errorf("no scalars.jsonl: %v %v", lines, err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "scalars.jsonl")); err != nil {
		t.Fatal(err)
	}
	if err := within(t, func() error { _, _, err := ReadScalars(dir, 0, 0, false); return err }); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("scalars.jsonl linked to /dev/zero: %v", err)
	}
	os.Remove(filepath.Join(dir, "scalars.jsonl"))
	if err := syscall.Mkfifo(filepath.Join(dir, "scalars.jsonl"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := within(t, func() error { _, _, err := ReadScalars(dir, 0, 0, false); return err }); err == nil || !strings.Contains(err.Error(), "FIFO") {
		t.Errorf("scalars.jsonl as a FIFO: %v", err)
	}
}

// TestPlainName: what the resolver takes as a file name.
func TestPlainName(t *testing.T) {
	for name, ok := range map[string]bool{"ids.npy": true, ".._escaped.A.npy": true, "..npy": true, "": false, ".": false, "..": false,
		"../ids.npy": false, "/ids.npy": false, `a\b.npy`: false, "a/b.npy": false, "ids\x00.npy": false} {
		if err := plainName("f", name); (err == nil) != ok {
			t.Errorf("plainName(%q): %v", name, err)
		}
	}
}

// mustCreate creates an empty file and returns its path.
func mustCreate(p string) string {
	if f, err := os.Create(p); err == nil {
		f.Close()
	}
	return p
}

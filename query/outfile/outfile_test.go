package outfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(s string) func(io.Writer) error {
	return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
}

// TestBeneath: a path from a query stays beneath the working directory
// and follows no symbolic link, on every element; the walk used where
// openat2 is missing refuses the same paths.
func TestBeneath(t *testing.T) {
	work := t.TempDir()
	t.Chdir(work)
	outside := t.TempDir()
	os.Mkdir("real", 0o755)
	os.Symlink("real", "dirlink")
	os.Symlink(outside, "outlink")
	os.WriteFile(filepath.Join(outside, "victim.png"), []byte("keep"), 0o644)
	os.Symlink(filepath.Join(outside, "victim.png"), filepath.Join("real", "last.png"))
	for _, p := range []string{"dirlink/x.png", "outlink/victim.png", "real/last.png", "/tmp/x.png", "../x.png", "real/../x.png", "", "real/", "missing/x.png"} {
		if _, err := Beneath(p); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Beneath(%q): %v, want ErrUnsafe", p, err)
		}
	}
	if _, err := Beneath("dirlink/x.png"); err == nil || !strings.Contains(err.Error(), "dirlink is a symbolic link") {
		t.Errorf("the message does not name the link: %v", err)
	}
	if _, err := openat2Dir("real"); err == nil {
		if _, err := openat2Dir("dirlink"); err == nil {
			t.Error("openat2 followed a link")
		}
	} else {
		t.Logf("openat2 unavailable (%v): the Lstat walk resolves paths", err)
	}
	cwd, _ := os.OpenRoot(".")
	defer cwd.Close()
	for _, d := range []string{"dirlink", "outlink", "real/last.png"} {
		if r, err := walkBeneath(d+"/x", cwd, d); !errors.Is(err, ErrUnsafe) {
			t.Errorf("walk %s: %v, want ErrUnsafe", d, err)
			if r != nil {
				r.Close()
			}
		}
	}
	for _, p := range []string{"x.png", "real/x.png", "./real/./y.png"} {
		tg, err := Beneath(p)
		if err != nil {
			t.Fatalf("Beneath(%q): %v", p, err)
		}
		if err := tg.Write(write("fig")); err != nil {
			t.Fatal(err)
		}
		tg.Close()
		if raw, _ := os.ReadFile(p); string(raw) != "fig" {
			t.Errorf("%s: %q", p, raw)
		}
	}
	if raw, _ := os.ReadFile(filepath.Join(outside, "victim.png")); string(raw) != "keep" {
		t.Error("wrote through a link")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("files outside: %v", entries)
	}
}

// TestFlag: a typed path may be absolute and reached through links, but
// its last element is never a link, and a failed write leaves nothing.
func TestFlag(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	link := filepath.Join(dir, "link.parquet")
	os.Symlink(victim, link)
	if err := WriteFile(link, write("x")); !errors.Is(err, ErrUnsafe) {
		t.Errorf("last element a link: %v", err)
	}
	if err := WriteFile(filepath.Join(dir, "no", "f"), write("x")); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing folder: %v", err)
	}
	f := filepath.Join(dir, "f")
	if err := WriteFile(f, write("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(f, func(w io.Writer) error { io.WriteString(w, "partial"); return errors.New("boom") }); err == nil {
		t.Error("a failed fill succeeded")
	}
	if raw, _ := os.ReadFile(f); string(raw) != "one" {
		t.Errorf("after a failed write: %q", raw)
	}
	if raw, _ := os.ReadFile(victim); string(raw) != "keep" {
		t.Error("wrote through a link")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("left behind: %v", entries)
	}
}

// TestWriteDir: all or nothing into a new or empty folder; --overwrite
// replaces only a folder of gvdb's own files; links and foreign files are
// refused and left alone.
func TestWriteDir(t *testing.T) {
	parent := t.TempDir()
	out := filepath.Join(parent, "report")
	o := DirOptions{What: "report", Manifest: ".gvdb-report.json"}
	files := func(names ...string) func(string) error {
		return func(tmp string) error {
			for _, n := range names {
				if err := os.WriteFile(filepath.Join(tmp, n), []byte(n), 0o644); err != nil {
					return err
				}
			}
			return nil
		}
	}
	if err := WriteDir(out, o, files("a.png", "index.md")); err != nil {
		t.Fatal(err)
	}
	if err := WriteDir(out, o, files("b.png")); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("non-empty without overwrite: %v", err)
	}
	o.Overwrite = true
	if err := WriteDir(out, o, files("b.png", "index.md")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "a.png")); err == nil {
		t.Error("the previous report's a.png survived")
	}
	os.WriteFile(filepath.Join(out, "notes.txt"), []byte("mine"), 0o644)
	if err := WriteDir(out, o, files("c.png")); !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "notes.txt") {
		t.Errorf("foreign file: %v", err)
	}
	if raw, _ := os.ReadFile(filepath.Join(out, "notes.txt")); string(raw) != "mine" {
		t.Error("the foreign file was touched")
	}
	if _, err := os.Stat(filepath.Join(out, "b.png")); err != nil {
		t.Error("a refused overwrite removed the report")
	}
	// A failed fill leaves the folder as it was and no temporary folder.
	os.Remove(filepath.Join(out, "notes.txt"))
	if err := WriteDir(out, o, func(tmp string) error { files("d.png")(tmp); return errors.New("boom") }); err == nil {
		t.Error("a failed fill succeeded")
	}
	if _, err := os.Stat(filepath.Join(out, "b.png")); err != nil {
		t.Error("a failed overwrite removed the report")
	}
	// A link to a folder is refused and its target untouched.
	target := filepath.Join(parent, "target")
	os.Mkdir(target, 0o755)
	link := filepath.Join(parent, "link")
	os.Symlink(target, link)
	if err := WriteDir(link, o, files("a.png")); !errors.Is(err, ErrUnsafe) {
		t.Errorf("symlinked folder: %v", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("wrote into the link's target: %v", entries)
	}
	// An empty folder is filled; a file in its place is refused.
	empty := filepath.Join(parent, "empty")
	os.Mkdir(empty, 0o755)
	o.Overwrite = false
	if err := WriteDir(empty, o, files("a.png")); err != nil {
		t.Fatal(err)
	}
	if err := WriteDir(filepath.Join(empty, "a.png"), o, files("a.png")); !errors.Is(err, ErrUnsafe) {
		t.Errorf("a file in place of the folder: %v", err)
	}
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".gvdb-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

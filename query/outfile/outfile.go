// Package outfile writes the files gvdb makes outside its store (figures,
// reports, Parquet results) without surprises: every file is written to a
// temporary name and renamed into place, never through a symbolic link;
// a path written in query text stays beneath the working directory and
// follows no symbolic link; a folder is written all or nothing.
//
// outfile imports nothing of gvdb; plots, plots/report, query and cmd/gvdb
// use it.
package outfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrOff says file writes outside the store are turned off.
var ErrOff = errors.New("file writes are off (--no-file-writes or GVDB_NO_FILE_WRITES=1); writes to the store are not affected")

// ErrUnsafe is wrapped by every refusal to write where writing would
// follow a symbolic link, leave the working directory (a path in a
// query), replace something gvdb did not write, or create a directory.
var ErrUnsafe = errors.New("refusing to write")

func unsafef(path, format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrUnsafe, path, fmt.Sprintf(format, args...))
}

// Target is a file about to be written: the directory that will hold it,
// held open, and its name there. Close it when done.
type Target struct {
	// Path is the path as given.
	Path string
	dir  *os.Root
	name string
}

// Flag resolves a path the user typed (a flag such as --out): it may be
// absolute and its directory may be reached through symbolic links, but
// the directory must exist (gvdb creates none) and the last element must
// not be a symbolic link or anything but a regular file.
func Flag(path string) (*Target, error) {
	dir, name := filepath.Split(path)
	if err := checkName(path, name); err != nil {
		return nil, err
	}
	if dir == "" {
		dir = "."
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, missingDir(path, dir, err)
	}
	return finish(path, root, name)
}

// Beneath resolves a path written in query text (PLOT ... TO 'file'),
// which may come from someone else: it must be relative, without '..',
// and is resolved beneath the working directory without following any
// symbolic link (openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS on
// Linux, else a walk that checks each element with Lstat).
func Beneath(path string) (*Target, error) {
	if path == "" {
		return nil, unsafef("''", "the file name is empty")
	}
	if filepath.IsAbs(path) || filepath.VolumeName(path) != "" || strings.HasPrefix(path, "/") || strings.HasPrefix(path, `\`) {
		return nil, unsafef(path, "a path in a query must be relative to the working directory, not absolute")
	}
	for _, e := range strings.FieldsFunc(path, isSep) {
		if e == ".." {
			return nil, unsafef(path, "a path in a query must not contain '..'")
		}
	}
	dir, name := filepath.Split(filepath.Clean(path))
	if err := checkName(path, name); err != nil {
		return nil, err
	}
	root, err := openBeneath(path, filepath.Clean("./"+dir))
	if err != nil {
		return nil, err
	}
	return finish(path, root, name)
}

// CheckBeneath reports whether Beneath accepts path now.
func CheckBeneath(path string) error {
	t, err := Beneath(path)
	if err != nil {
		return err
	}
	return t.Close()
}

func isSep(r rune) bool { return r == '/' || r == filepath.Separator }

func checkName(path, name string) error {
	if name == "" || name == "." || name == ".." {
		return unsafef(path, "it names a directory, not a file")
	}
	return nil
}

func missingDir(path, dir string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return unsafef(path, "directory %s does not exist (gvdb does not create directories for files it writes)", dir)
	}
	return unsafef(path, "%v", err)
}

// finish checks the last element in root and returns the Target.
func finish(path string, root *os.Root, name string) (*Target, error) {
	t := &Target{Path: path, dir: root, name: name}
	if _, err := t.lstat(); err != nil {
		root.Close()
		return nil, err
	}
	return t, nil
}

// lstat returns the existing file's information (nil when there is none),
// refusing a symbolic link or anything but a regular file.
func (t *Target) lstat() (fs.FileInfo, error) {
	fi, err := t.dir.Lstat(t.name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, unsafef(t.Path, "%v", err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, unsafef(t.Path, "it is a symbolic link (gvdb never writes through one)")
	case !fi.Mode().IsRegular():
		return nil, unsafef(t.Path, "it exists and is not a regular file")
	}
	return fi, nil
}

// Existing opens the file already at the target for reading, or returns
// nil when there is none.
func (t *Target) Existing() (*os.File, error) {
	fi, err := t.lstat()
	if fi == nil || err != nil {
		return nil, err
	}
	f, err := t.dir.Open(t.name)
	if err != nil {
		return nil, unsafef(t.Path, "%v", err)
	}
	if fi2, err := f.Stat(); err != nil || !os.SameFile(fi, fi2) {
		f.Close()
		return nil, unsafef(t.Path, "it changed while being checked")
	}
	return f, nil
}

// Write writes the file: fill writes to a temporary file beside it,
// which is synced and renamed into place, so the file is never partial,
// and a symbolic link put there meanwhile is replaced, not followed.
func (t *Target) Write(fill func(w io.Writer) error) error {
	if _, err := t.lstat(); err != nil {
		return err
	}
	var f *os.File
	var tmp string
	var err error
	for i := 0; i < 100; i++ {
		tmp = fmt.Sprintf(".gvdb-tmp-%d-%s", os.Getpid(), randSuffix())
		f, err = t.dir.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", t.Path, err)
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = t.dir.Rename(tmp, t.name)
	}
	if err != nil {
		t.dir.Remove(tmp)
		return fmt.Errorf("write %s: %w", t.Path, err)
	}
	return nil
}

// Close releases the directory.
func (t *Target) Close() error { return t.dir.Close() }

// WriteFile writes a file at a path the user typed (Flag), all or
// nothing.
func WriteFile(path string, fill func(w io.Writer) error) error {
	t, err := Flag(path)
	if err != nil {
		return err
	}
	defer t.Close()
	return t.Write(fill)
}

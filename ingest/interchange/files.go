package interchange

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Every file gvdb import reads from a run directory (run.json,
// scalars.jsonl, DONE, the step-* directories, manifest.json and each
// .npy file a manifest names) goes through this resolver: the name is a
// plain name inside its directory (no '/', '\', "." or ".."), the file is
// a regular file (checked with Lstat: no symbolic link, device, FIFO,
// socket or directory), it is opened without following a link and
// without blocking, and the open file is checked to be the one that was
// checked (a file swapped in between is refused). JSON files are capped
// at MaxJSONBytes and scalars.jsonl lines at MaxScalarLine, so a hostile
// directory can neither read outside itself nor make import block or
// allocate without bound.

// MaxJSONBytes caps run.json and manifest.json (gvdb's own are a few KiB).
const MaxJSONBytes = 16 << 20

// MaxScalarLine caps one line of scalars.jsonl, its newline included.
const MaxScalarLine = 1 << 20

// plainName checks that name, the value of field (a manifest field, or
// the file's own fixed name), names a file directly inside its directory.
func plainName(field, name string) error {
	if name == "" {
		return fmt.Errorf("%s: no file name", field)
	}
	if strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." || filepath.IsAbs(name) || filepath.VolumeName(name) != "" {
		return fmt.Errorf("%s: %q is not a plain file name inside the directory (no '/', '\\', '.' or '..')", field, name)
	}
	return nil
}

// fileKind names what a non-regular file is, for errors.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0 || m&fs.ModeCharDevice != 0:
		return "a device"
	case m.IsRegular():
		return "a regular file"
	}
	return "a special file"
}

// notRegular is the error for a file that is not a regular one.
func notRegular(field, name string, m fs.FileMode) error {
	return fmt.Errorf("%s: %s is %s; import reads only regular files (no links, devices or FIFOs)", field, name, fileKind(m))
}

// statFile checks dir/name as the resolver does, without opening it: a
// missing file is an error satisfying errors.Is(err, fs.ErrNotExist).
func statFile(dir, field, name string) (fs.FileInfo, error) {
	if err := plainName(field, name); err != nil {
		return nil, err
	}
	st, err := os.Lstat(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if !st.Mode().IsRegular() {
		return nil, notRegular(field, name, st.Mode())
	}
	return st, nil
}

// openFile opens dir/name for reading through the resolver and returns
// the file and its size. field names the name's origin in errors.
func openFile(dir, field, name string) (*os.File, int64, error) {
	st, err := statFile(dir, field, name)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDONLY|openFlags, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", field, err)
	}
	fst, err := f.Stat()
	if err == nil && (!fst.Mode().IsRegular() || !os.SameFile(st, fst)) {
		err = fmt.Errorf("%s changed while it was opened", name)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %w", field, err)
	}
	return f, fst.Size(), nil
}

// exists reports whether dir/name exists (not following a link); a name
// that exists but is not a regular file is an error.
func exists(dir, name string) (bool, error) {
	_, err := statFile(dir, name, name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// readJSON decodes dir/name (at most MaxJSONBytes) into v, refusing
// unknown fields and anything after the value. field names the file.
func readJSON(dir, field, name string, v any) error {
	f, size, err := openFile(dir, field, name)
	if err != nil {
		return err
	}
	defer f.Close()
	if size > MaxJSONBytes {
		return fmt.Errorf("%s: %d bytes, over the limit of %d (16 MiB)", field, size, MaxJSONBytes)
	}
	raw, err := io.ReadAll(io.LimitReader(f, MaxJSONBytes+1))
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if len(raw) > MaxJSONBytes {
		return fmt.Errorf("%s: over the limit of %d bytes (16 MiB)", field, MaxJSONBytes)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%s: data after the JSON value", field)
	}
	return nil
}

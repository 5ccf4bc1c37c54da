package outfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrNotEmpty says a folder to write holds something already.
var ErrNotEmpty = errors.New("the folder is not empty")

// DirOptions say how WriteDir writes a folder.
type DirOptions struct {
	// What names the folder's contents in messages ("report").
	What string
	// Manifest is the name of the file, kept in the folder, that lists
	// the files gvdb wrote there (".gvdb-report.json").
	Manifest string
	// Overwrite replaces a folder that holds only files its manifest
	// lists; a folder holding anything else is refused, and nothing in it
	// is touched.
	Overwrite bool
}

// manifest is the list of the files gvdb wrote in a folder.
type manifest struct {
	WrittenBy string   `json:"written_by"`
	What      string   `json:"what"`
	Files     []string `json:"files"`
}

// maxManifest bounds the manifest gvdb reads back.
const maxManifest = 1 << 20

// WriteDir writes the folder dir all or nothing: fill writes its files
// into tmp, a new folder beside dir, which is renamed into place once
// complete, with a manifest listing them; on failure nothing is left.
// dir must be new or empty, or, with o.Overwrite, hold only the files a
// previous WriteDir listed in its manifest (swapped for the new folder
// atomically where the system allows). A symbolic link at dir is never
// followed.
func WriteDir(dir string, o DirOptions, fill func(tmp string) error) error {
	clean := filepath.Clean(dir)
	if b := filepath.Base(clean); b == "." || b == ".." || b == string(filepath.Separator) {
		return unsafef(dir, "name a folder (not . or ..) for the %s", o.What)
	}
	state, err := inspectDir(dir, clean, o)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(clean), ".gvdb-"+o.What+"-*")
	if err != nil {
		return fmt.Errorf("%s %s: %w", o.What, dir, err)
	}
	placed := false
	defer func() {
		if !placed {
			os.RemoveAll(tmp)
		}
	}()
	if err := fill(tmp); err != nil {
		return err
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	m := manifest{WrittenBy: "gvdb", What: o.What, Files: []string{}}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s %s: %s is not a regular file", o.What, dir, e.Name())
		}
		m.Files = append(m.Files, e.Name())
	}
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, o.Manifest), append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("%s %s: %w", o.What, dir, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	switch state.kind {
	case dirNew:
		err = os.Rename(tmp, clean)
	case dirEmpty:
		if err = os.Remove(clean); err == nil {
			err = os.Rename(tmp, clean)
		}
	case dirOwned:
		return replaceOwned(dir, clean, tmp, o, &placed)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", o.What, dir, err)
	}
	placed = true
	return nil
}

type dirKind int

const (
	dirNew dirKind = iota
	dirEmpty
	dirOwned
)

type dirState struct {
	kind  dirKind
	files []string // dirOwned: what the manifest lists (and the manifest)
}

// inspectDir says whether dir is new, empty, or holds only gvdb's files
// (with o.Overwrite), and refuses anything else.
func inspectDir(dir, clean string, o DirOptions) (dirState, error) {
	fi, err := os.Lstat(clean)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dirState{kind: dirNew}, nil
	case err != nil:
		return dirState{}, fmt.Errorf("%s %s: %w", o.What, dir, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return dirState{}, unsafef(dir, "it is a symbolic link (gvdb never writes through one); name the folder itself")
	case !fi.IsDir():
		return dirState{}, unsafef(dir, "it exists and is not a folder")
	}
	entries, err := os.ReadDir(clean)
	if err != nil {
		return dirState{}, fmt.Errorf("%s %s: %w", o.What, dir, err)
	}
	if len(entries) == 0 {
		return dirState{kind: dirEmpty}, nil
	}
	if !o.Overwrite {
		return dirState{}, fmt.Errorf("%s %s: %w (it holds %s): pick a new folder, or give --overwrite to replace a %s gvdb wrote there",
			o.What, dir, ErrNotEmpty, entries[0].Name(), o.What)
	}
	listed, err := readManifest(clean, o)
	if err != nil {
		return dirState{}, fmt.Errorf("%s %s: %w (it holds %s, and %v): --overwrite replaces only a %s gvdb wrote, listed in its %s; nothing there is touched: pick a new folder",
			o.What, dir, ErrNotEmpty, entries[0].Name(), err, o.What, o.Manifest)
	}
	for _, e := range entries {
		name := e.Name()
		if name != o.Manifest && !slices.Contains(listed, name) {
			return dirState{}, fmt.Errorf("%s %s: %w: it holds %s, which gvdb did not write (not in %s); --overwrite touches nothing there: move it away or pick a new folder",
				o.What, dir, ErrNotEmpty, name, o.Manifest)
		}
		if !e.Type().IsRegular() {
			return dirState{}, unsafef(dir, "%s is not a regular file", name)
		}
	}
	return dirState{kind: dirOwned, files: append(listed, o.Manifest)}, nil
}

// readManifest reads the list of files gvdb wrote in dir.
func readManifest(dir string, o DirOptions) ([]string, error) {
	p := filepath.Join(dir, o.Manifest)
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("it has no %s", o.Manifest)
		}
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxManifest {
		return nil, fmt.Errorf("%s is not a manifest gvdb wrote", o.Manifest)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil || m.WrittenBy != "gvdb" || m.What != o.What {
		return nil, fmt.Errorf("%s is not a manifest gvdb wrote", o.Manifest)
	}
	for _, f := range m.Files {
		if f == "" || f == "." || f == ".." || strings.ContainsAny(f, `/\`) {
			return nil, fmt.Errorf("%s lists %q, not a file name", o.Manifest, f)
		}
	}
	return m.Files, nil
}

// replaceOwned puts the complete folder tmp at clean in place of the
// previous one, which holds only gvdb's files, and removes those.
func replaceOwned(dir, clean, tmp string, o DirOptions, placed *bool) error {
	// Check again just before the swap: the window is as short as it can be.
	state, err := inspectDir(dir, clean, o)
	if err != nil {
		return err
	}
	old := tmp
	if err := exchange(tmp, clean); err != nil {
		// No atomic exchange here: move the old folder aside, then the new
		// one in (put the old one back if that fails).
		old = tmp + ".old"
		if err := os.Rename(clean, old); err != nil {
			return fmt.Errorf("%s %s: %w", o.What, dir, err)
		}
		if err := os.Rename(tmp, clean); err != nil {
			os.Rename(old, clean)
			return fmt.Errorf("%s %s: %w", o.What, dir, err)
		}
	}
	*placed = true
	for _, f := range state.files {
		os.Remove(filepath.Join(old, f))
	}
	if err := os.Remove(old); err != nil {
		return fmt.Errorf("%s %s written, but the previous folder, now %s, held files gvdb did not write: they are kept there", o.What, dir, old)
	}
	return nil
}

package outfile

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// openBeneath opens dir (relative, clean, without '..') beneath the
// working directory, refusing any symbolic link on the way. On Linux
// openat2 resolves it; elsewhere, or where openat2 is refused, each
// element is checked with Lstat before it is entered. Either way the
// directory returned is checked to be the one resolved (os.SameFile), so
// a link swapped in meanwhile is caught.
func openBeneath(path, dir string) (*os.Root, error) {
	cwd, err := os.OpenRoot(".")
	if err != nil {
		return nil, unsafef(path, "%v", err)
	}
	if dir == "." {
		return cwd, nil
	}
	defer cwd.Close()
	fi, err := openat2Dir(dir)
	if err != nil {
		// Unavailable, or refused: the walk says which element is wrong.
		return walkBeneath(path, cwd, dir)
	}
	r, err := cwd.OpenRoot(dir)
	if err != nil {
		return nil, missingDir(path, dir, err)
	}
	if fi2, err := r.Stat("."); err != nil || !os.SameFile(fi, fi2) {
		r.Close()
		return nil, unsafef(path, "directory %s changed while being resolved", dir)
	}
	return r, nil
}

// walkBeneath enters dir one element at a time from cwd, refusing a
// symbolic link or a non-directory.
func walkBeneath(path string, cwd *os.Root, dir string) (*os.Root, error) {
	r, err := cwd.OpenRoot(".")
	if err != nil {
		return nil, unsafef(path, "%v", err)
	}
	var sofar []string
	for _, e := range strings.FieldsFunc(dir, isSep) {
		if e == "." {
			continue
		}
		sofar = append(sofar, e)
		at := filepath.Join(sofar...)
		fi, err := r.Lstat(e)
		if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			err = unsafef(path, "%s is a symbolic link, and a path in a query follows none", at)
		} else if err == nil && !fi.IsDir() {
			err = unsafef(path, "%s is not a directory", at)
		}
		var next *os.Root
		if err == nil {
			next, err = r.OpenRoot(e)
		}
		if err == nil {
			if fi2, serr := next.Stat("."); serr != nil || !os.SameFile(fi, fi2) {
				next.Close()
				err = unsafef(path, "directory %s changed while being resolved", at)
			}
		}
		r.Close()
		if err != nil {
			if errors.Is(err, ErrUnsafe) {
				return nil, err
			}
			return nil, missingDir(path, at, err)
		}
		r = next
	}
	return r, nil
}

func randSuffix() string { return strconv.FormatUint(rand.Uint64(), 36) }

//go:build !linux

package outfile

import (
	"errors"
	"io/fs"
)

func openat2Dir(string) (fs.FileInfo, error) { return nil, errors.ErrUnsupported }

func exchange(a, b string) error { return errors.ErrUnsupported }

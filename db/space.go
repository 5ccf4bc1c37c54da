package db

import (
	"errors"
	"fmt"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
)

// ErrNoSpace: the store's file system has too little free space for the
// next write and the margin Badger needs.
var ErrNoSpace = errors.New("no space left on device")

// memTableSize is the memtable size stores are opened with
// (BadgerOptions).
const memTableSize = 32 << 20

// SpaceMargin is the free space a writer keeps beyond its next write.
// Badger writes its write-ahead log (a sparse file of twice the memtable
// size) and the value log through mmap, so a full file system is a SIGBUS
// inside Badger, not an error; the margin covers the log (2 x memtable),
// one compaction (2 x memtable) and the final status write (1 MiB).
const SpaceMargin = 4*memTableSize + 1<<20

// FreeSpace returns the bytes available to this process on the file
// system holding dir.
func FreeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// CheckSpace refuses a write of next bytes when the store's file system
// would then have less than SpaceMargin free. A check cannot stop another
// process from filling the disk afterwards: see README's guarantees.
func (d *DB) CheckSpace(next int64) error {
	return checkSpace(d.dir, next)
}

func checkSpace(dir string, next int64) error {
	have, err := FreeSpace(dir)
	if err != nil {
		return err
	}
	if need := SpaceMargin + max(next, 0); have < need {
		return fmt.Errorf("%w: need %s, have %s on the file system of %s (gvdb keeps %s free for Badger's log, a compaction and the run's final status)",
			ErrNoSpace, ibytes(need), ibytes(have), dir, ibytes(SpaceMargin))
	}
	return nil
}

func ibytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

package db

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// markerKey marks a Badger directory as a gvdb store; its value names the
// store layout.
var markerKey = []byte("gvdb")

const markerValue = "gvdb store (db/FORMAT.md)"

// ErrNotGvdb says a directory holds a Badger database that gvdb did not
// write.
var ErrNotGvdb = errors.New("not a gvdb store")

// checkMarker refuses a Badger database that is not a gvdb store, and
// marks a gvdb store that predates the marker (when writing).
func (d *DB) checkMarker() error {
	found, foreign := false, false
	err := d.view(func(txn readTxn) error {
		if _, err := txn.Get(markerKey); err == nil {
			found = true
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			switch it.Item().Key()[0] {
			case prefixRun, prefixNextID, prefixSnapshot, prefixScalars:
			default:
				foreign = true
			}
			break
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case foreign:
		return fmt.Errorf("%w: %s holds a Badger database that gvdb did not write (pick another --db)", ErrNotGvdb, d.dir)
	case found || d.opts.ReadOnly:
		return nil
	}
	return d.update(func(txn *badger.Txn) error { return txn.Set(markerKey, []byte(markerValue)) })
}

// DiskSize returns the bytes of the store's files.
func DiskSize(dir string) (int64, error) {
	var n int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			return 0, err
		}
		if info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n, nil
}

// reclaim runs Badger's value-log garbage collection until it finds
// nothing more to rewrite (after a delete).
func (d *DB) reclaim() error {
	// Garbage collection reads whole value logs: check them first.
	if err := checkLogs(d.dir, true, true); err != nil {
		return err
	}
	for range 100 {
		err := d.bdb.RunValueLogGC(0.3)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Compact rewrites the store at dir into a new directory holding only its
// live data, then swaps the two, giving back the space of deleted and
// replaced runs. The store must not be open. A crash leaves the old store
// in place (or, between the two renames, at dir+".old", which Compact
// names).
func Compact(dir string) (before, after int64, err error) {
	dir = filepath.Clean(dir)
	before, err = DiskSize(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("compact %s: %w", dir, err)
	}
	// The copy needs up to the store's size beside it.
	if err := checkSpace(filepath.Dir(dir), before); err != nil {
		return 0, 0, fmt.Errorf("compact %s: %w", dir, err)
	}
	src, err := Open(dir, Options{MustExist: true, Log: io.Discard})
	if err != nil {
		return 0, 0, err
	}
	tmp := dir + ".compact"
	if err := os.RemoveAll(tmp); err != nil {
		src.Close()
		return 0, 0, err
	}
	dst, err := badger.Open(BadgerOptions(tmp, Options{Log: io.Discard}))
	if err != nil {
		src.Close()
		return 0, 0, fmt.Errorf("compact %s: %w", dir, err)
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := src.bdb.Backup(pw, 0)
		pw.CloseWithError(err)
	}()
	err = dst.Load(pr, 16)
	pr.Close()
	err = errors.Join(err, dst.Sync(), dst.Close(), src.Close())
	if err != nil {
		os.RemoveAll(tmp)
		return 0, 0, fmt.Errorf("compact %s: %w", dir, err)
	}
	old := dir + ".old"
	if err := os.Rename(dir, old); err != nil {
		os.RemoveAll(tmp)
		return 0, 0, fmt.Errorf("compact %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return 0, 0, fmt.Errorf("compact %s: the old store is at %s: %w", dir, old, err)
	}
	if err := os.RemoveAll(old); err != nil {
		return 0, 0, fmt.Errorf("compact %s: remove the old store at %s: %w", dir, old, err)
	}
	after, err = DiskSize(dir)
	return before, after, err
}

// KeyFaults scans every key of the store and describes those that no part
// of gvdb writes (foreign prefixes, malformed lengths, unknown layer
// indexes) and snapshot blocks without a manifest, which a killed writer
// leaves behind (invisible to readers; listed as notes, not faults).
func (d *DB) KeyFaults() (faults, notes []string, err error) {
	runs, err := d.Runs()
	if err != nil {
		return nil, nil, err
	}
	byID := map[uint32]*Run{}
	for _, r := range runs {
		byID[r.ID] = r
	}
	err = d.view(func(txn readTxn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		manifests := map[string]bool{}
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			switch {
			case string(k) == string(markerKey), k[0] == prefixRun, len(k) == 1 && k[0] == prefixNextID:
			case k[0] == prefixScalars && len(k) == 13:
				if byID[binaryID(k)] == nil {
					faults = append(faults, fmt.Sprintf("step scalars of unknown run id %d", binaryID(k)))
				}
			case k[0] == prefixSnapshot && len(k) == 15:
				step, layer, _ := parseBlockKey(k)
				r := byID[binaryID(k)]
				if r == nil {
					faults = append(faults, fmt.Sprintf("snapshot key of unknown run id %d at step %d", binaryID(k), step))
					continue
				}
				if layer == 0 {
					manifests[fmt.Sprint(r.ID, step)] = true
					continue
				}
				if layer == attrIndex {
					continue
				}
				if li := int(layer &^ kindBits); li < 1 || li > len(r.Layers) {
					faults = append(faults, fmt.Sprintf("%s@%d: block key with layer index %d (the schema has %d layers)", r.Name, step, li, len(r.Layers)))
				} else if !manifests[fmt.Sprint(r.ID, step)] {
					notes = append(notes, fmt.Sprintf("%s@%d: block of %s without a manifest (left by a killed writer; invisible)", r.Name, step, r.Layers[li-1].Name))
				}
			default:
				faults = append(faults, fmt.Sprintf("unknown key %q", k))
			}
		}
		return nil
	})
	return faults, notes, err
}

func binaryID(k []byte) uint32 {
	return uint32(k[1])<<24 | uint32(k[2])<<16 | uint32(k[3])<<8 | uint32(k[4])
}

package db

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// DefaultDir is the store directory the CLI uses when none is given.
const DefaultDir = "./gvdb-data"

// Options configure Open. The zero value opens a store read-write, creating
// it if needed, and sends Badger's warnings and errors to standard error.
type Options struct {
	// ReadOnly opens an existing store without taking the writer's lock;
	// several read-only openers may share a store, but not with a writer.
	ReadOnly bool
	// Log receives Badger's warnings and errors (nil: standard error;
	// io.Discard silences them).
	Log io.Writer
	// SyncWrites makes every commit fsync (slower; Flush does it anyway).
	SyncWrites bool
}

// DB is an open store. Its methods are safe for concurrent use.
type DB struct {
	bdb  *badger.DB
	dir  string
	opts Options
}

// Open opens (or creates) the store in dir.
func Open(dir string, opts Options) (*DB, error) {
	if opts.ReadOnly {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("open store %s: %w", dir, err)
		}
	}
	bdb, err := badger.Open(BadgerOptions(dir, opts))
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") || strings.Contains(err.Error(), "resource temporarily unavailable") {
			return nil, fmt.Errorf("open store %s: %w (close the other gvdb process, e.g. a running 'gvdb train', and try again)", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	return &DB{bdb: bdb, dir: dir, opts: opts}, nil
}

// BadgerOptions returns the Badger options a store in dir is opened with:
// no Badger compression (the codec compresses blocks), values above 64 KiB
// in the value log, one version per key.
func BadgerOptions(dir string, opts Options) badger.Options {
	return badger.DefaultOptions(dir).
		WithCompression(options.None). // blocks are compressed by the codec
		WithBlockCacheSize(64 << 20).
		WithValueThreshold(64 << 10).
		WithMemTableSize(32 << 20).
		WithNumVersionsToKeep(1).
		WithReadOnly(opts.ReadOnly).
		WithSyncWrites(opts.SyncWrites).
		WithLogger(newLogger(opts.Log))
}

// Dir returns the store's directory.
func (d *DB) Dir() string { return d.dir }

// Close flushes and closes the store.
func (d *DB) Close() error {
	if err := d.bdb.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Sync makes every committed write durable on disk.
func (d *DB) Sync() error {
	if d.opts.ReadOnly {
		return nil
	}
	if err := d.bdb.Sync(); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	return nil
}

// badgerLogger forwards Badger's warnings and errors; info and debug lines
// are dropped.
type badgerLogger struct{ l *log.Logger }

func newLogger(w io.Writer) badger.Logger {
	if w == nil {
		w = os.Stderr
	}
	return badgerLogger{log.New(w, "badger: ", 0)}
}

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Printf("error: "+strings.TrimSuffix(f, "\n"), a...)
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Printf("warning: "+strings.TrimSuffix(f, "\n"), a...)
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

// update runs fn in a read-write transaction, retrying on conflicts.
func (d *DB) update(fn func(txn *badger.Txn) error) error {
	for attempt := 0; ; attempt++ {
		err := d.bdb.Update(fn)
		if errors.Is(err, badger.ErrConflict) && attempt < 10 {
			continue
		}
		return err
	}
}

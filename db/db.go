package db

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
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
	// MustExist refuses to create a store: a directory without one is
	// ErrNoStore (a mistyped --db is an error, not a new empty store).
	MustExist bool
	// Recover opens a store for gvdb recover, after Recover carried out
	// its plan: Badger may replay a write-ahead log whose damage drops
	// entries (the plan copied it aside and said so).
	Recover bool
}

// ErrNoStore says a directory holds no gvdb store.
var ErrNoStore = errors.New("no gvdb store")

// DB is an open store. Its methods are safe for concurrent use.
type DB struct {
	bdb  *badger.DB
	dir  string
	opts Options
	// remote reads a store through its live writer's socket (bdb nil);
	// srv is a writer's socket server (serve.go).
	remote *remoteStore
	srv    *kvServer
	live   liveRuns
}

// Open opens (or creates) the store in dir. A read-only open never
// changes a file of the store: several readers share it, a store whose
// writer was killed is ErrUnclean (gvdb recover replays its log), and
// damage is an error naming what is wrong, not a repair. A panic inside
// Badger (a truncated table, say) is returned as an error.
func Open(dir string, opts Options) (d *DB, err error) {
	if opts.ReadOnly || opts.MustExist {
		if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
			return nil, fmt.Errorf("open store %s: %w (give --db, or create one with 'gvdb demo' or 'gvdb train')", dir, ErrNoStore)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			d, err = nil, fmt.Errorf("open store %s: %w: badger: %v", dir, ErrCorruptStore, r)
		}
	}()
	if opts.ReadOnly {
		if d, err := openRemote(dir, opts); d != nil || err != nil {
			return d, err
		}
	}
	if err := preOpen(dir, opts); err != nil {
		return nil, err
	}
	bdb, err := badger.Open(BadgerOptions(dir, opts))
	if err != nil {
		return nil, openError(dir, opts, err)
	}
	d = &DB{bdb: bdb, dir: dir, opts: opts}
	if err := d.checkMarker(); err != nil {
		bdb.Close()
		return nil, err
	}
	if !opts.ReadOnly {
		d.serve()
	}
	return d, nil
}

// preOpen checks a store before Badger opens it, in this order: the lock
// first (a live writer's half-finished files are not judged: a reader is
// told who writes, a second writer refused), then MANIFEST against the
// directory (Badger would remove the tables it does not list), every
// table's index and block checksums (a damaged block would end a listing
// silently), the write-ahead logs (damage that would drop committed
// entries), and, for a writer, the free space it needs.
func preOpen(dir string, opts Options) error {
	held, err := probeLock(dir, !opts.ReadOnly)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("open store %s: %w", dir, err)
	}
	if held {
		return openError(dir, opts, errors.New("Cannot acquire directory lock"))
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err == nil {
		ms, err := readManifest(dir)
		if err != nil {
			return fmt.Errorf("open store %s: %w", dir, err)
		}
		if err := ms.check(dir); err != nil {
			return fmt.Errorf("open store %s: %w", dir, err)
		}
	}
	if err := checkTables(dir); err != nil {
		return fmt.Errorf("open store %s: %w", dir, err)
	}
	if err := checkLogs(dir, !opts.ReadOnly, false); err != nil && !(opts.Recover && errors.Is(err, errCommittedAfterDamage)) {
		if errors.Is(err, errCommittedAfterDamage) {
			return fmt.Errorf("open store %s: %w (run 'gvdb recover --db %s': it says what would be lost and keeps a copy)", dir, err, dir)
		}
		return fmt.Errorf("open store %s: %w", dir, err)
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("open store %s: %w", dir, err)
		}
		if err := checkSpace(dir, 0); err != nil {
			return fmt.Errorf("open store %s: %w", dir, err)
		}
	}
	return nil
}

// openError explains why Badger would not open a store.
func openError(dir string, opts Options, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Cannot acquire directory lock") || strings.Contains(msg, "resource temporarily unavailable"):
		who := "another gvdb process"
		if w := lockHolder(dir); w != "" {
			who = w
		}
		if opts.ReadOnly {
			return fmt.Errorf("open store %s: %w: %s is writing to it (wait for it to finish, or stop it, and try again)", dir, ErrLocked, who)
		}
		return fmt.Errorf("open store %s: %w: %s has it open (close it and try again)", dir, ErrLocked, who)
	case errors.Is(err, badger.ErrTruncateNeeded) || strings.Contains(msg, "Log truncate required"):
		return fmt.Errorf("open store %s: %w: its last writer stopped without closing it (killed?); run 'gvdb recover --db %s' to replay its log and keep everything it had flushed", dir, ErrUnclean, dir)
	case opts.ReadOnly && (strings.Contains(msg, "permission denied") || strings.Contains(msg, "read-only")):
		return fmt.Errorf("open store %s: %w", dir, err)
	}
	return fmt.Errorf("open store %s: %w: %v", dir, ErrCorruptStore, err)
}

// lockHolder names the process in the store's LOCK file ("pid 123
// (gvdb train ...)"), or "" when it cannot tell.
func lockHolder(dir string) string {
	raw, err := os.ReadFile(filepath.Join(dir, "LOCK"))
	if err != nil {
		return ""
	}
	pid := strings.TrimSpace(string(raw))
	if pid == "" {
		return ""
	}
	cmd, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
	if err != nil || len(cmd) == 0 {
		return "pid " + pid
	}
	args := strings.Fields(strings.ReplaceAll(string(cmd), "\x00", " "))
	if len(args) > 6 {
		args = append(args[:6], "...")
	}
	return fmt.Sprintf("pid %s (%s)", pid, strings.Join(args, " "))
}

// BadgerOptions returns the Badger options a store in dir is opened with:
// no Badger compression (the codec compresses blocks), values above 64 KiB
// in the value log, one version per key.
func BadgerOptions(dir string, opts Options) badger.Options {
	return badger.DefaultOptions(dir).
		WithCompression(options.None). // blocks are compressed by the codec
		WithBlockCacheSize(64 << 20).
		WithValueThreshold(64 << 10).
		WithMemTableSize(memTableSize).
		WithNumVersionsToKeep(1).
		WithReadOnly(opts.ReadOnly).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithSyncWrites(opts.SyncWrites).
		WithLogger(newLogger(opts.Log))
}

// Dir returns the store's directory.
func (d *DB) Dir() string { return d.dir }

// Close flushes and closes the store.
func (d *DB) Close() error {
	if d.remote != nil {
		return d.remote.close()
	}
	d.stopServing()
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
	if d.remote != nil {
		return errRemoteWrite
	}
	for attempt := 0; ; attempt++ {
		err := d.bdb.Update(fn)
		if errors.Is(err, badger.ErrConflict) && attempt < 10 {
			continue
		}
		return err
	}
}

// view runs fn in a read-only transaction. A panic inside Badger while
// reading (a damaged table block) is returned as ErrCorruptStore.
func (d *DB) view(fn func(txn readTxn) error) (err error) {
	if d.remote != nil {
		return d.remote.view(fn)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("read store %s: %w: badger: %v", d.dir, ErrCorruptStore, r)
		}
	}()
	return d.bdb.View(func(txn *badger.Txn) error { return fn(badgerTxn{txn}) })
}

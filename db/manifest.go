package db

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// Badger's open reconciles the store's directory with MANIFEST: it
// removes every table file MANIFEST does not list, in read-only mode too,
// and a MANIFEST cut short lists fewer tables than the directory holds.
// So before Badger opens a store gvdb replays MANIFEST itself, the way
// Badger does (badger.ReplayManifestFile), and compares it with the
// directory; what would make Badger remove or lose a file is an error,
// and only recover (RecoveryPlan, Recover) changes such a store.

// manifestState is what MANIFEST says, against the directory.
type manifestState struct {
	// listed are the table ids MANIFEST lists.
	listed map[uint64]bool
	// size is MANIFEST's size; good the offset after its last whole
	// record (good < size: a torn record at the end).
	size, good int64
	// missing are listed tables without a file; orphans table files that
	// MANIFEST does not list.
	missing, orphans []string
}

// readManifest replays dir's MANIFEST without changing it.
func readManifest(dir string) (*manifestState, error) {
	path := filepath.Join(dir, badger.ManifestFilename)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	m, good, err := badger.ReplayManifestFile(f, 0, badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorruptStore, badger.ManifestFilename, err)
	}
	s := &manifestState{listed: map[uint64]bool{}, size: st.Size(), good: good}
	for id := range m.Tables {
		s.listed[id] = true
	}
	files, err := tableFiles(dir)
	if err != nil {
		return nil, err
	}
	for id, name := range files {
		if !s.listed[id] {
			s.orphans = append(s.orphans, name)
		}
	}
	for id := range s.listed {
		if _, ok := files[id]; !ok {
			s.missing = append(s.missing, fmt.Sprintf("%06d.sst", id))
		}
	}
	slices.Sort(s.orphans)
	slices.Sort(s.missing)
	return s, nil
}

// tableFiles returns the store's table files by id.
func tableFiles(dir string) (map[uint64]string, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return nil, err
	}
	out := map[uint64]string{}
	for _, n := range names {
		base := filepath.Base(n)
		id, err := strconv.ParseUint(strings.TrimSuffix(base, ".sst"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s is not a table file name Badger writes", ErrCorruptStore, base)
		}
		out[id] = base
	}
	return out, nil
}

// check turns what MANIFEST says into the error a non-recovering open
// gives, nil when MANIFEST and the directory agree.
func (s *manifestState) check(dir string) error {
	switch {
	case len(s.missing) > 0:
		return fmt.Errorf("%w: MANIFEST lists table %s, which is not in the store: data is lost (restore the file, or the store from a copy; gvdb recover cannot bring it back)",
			ErrCorruptStore, strings.Join(s.missing, ", "))
	case s.good < s.size:
		return fmt.Errorf("%w: MANIFEST: the record at byte %d of %d is torn or damaged (run 'gvdb recover --db %s': it keeps a copy of MANIFEST and sets the tables it no longer lists aside)",
			ErrCorruptStore, s.good, s.size, dir)
	case len(s.orphans) > 0:
		return fmt.Errorf("%w: table %s is not listed in MANIFEST (the flush that wrote it was interrupted); run 'gvdb recover --db %s' to set it aside and replay the log",
			ErrUnclean, strings.Join(s.orphans, ", "), dir)
	}
	return nil
}

// probeLock reports whether a live process holds the store's directory
// lock (Badger's flock on the directory): shared for a reader, exclusive
// for a writer. A held lock means a live writer (or, for a writer, any
// opener), never damage: its half-finished files are not judged.
func probeLock(dir string, writer bool) (held bool, err error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close() // closing releases the probe's lock
	how := unix.LOCK_SH
	if writer {
		how = unix.LOCK_EX
	}
	err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true, nil
	}
	return false, err
}

// RecoveryPlan is what Recover will do to a store, decided before it
// changes anything.
type RecoveryPlan struct {
	Dir string
	// Aside is the folder inside the store that keeps what Recover takes
	// out (recovered-<UTC time>); it is created only when needed.
	Aside string
	// Orphans are table files MANIFEST does not list: set aside (Badger
	// would delete them). After an interrupted flush their data is still
	// in the write-ahead log, which Recover replays.
	Orphans []string
	// TornManifest is the byte offset at which MANIFEST's torn tail starts
	// (-1: none); MANIFEST is copied aside and cut there.
	TornManifest int64
	// DamagedLogs are write-ahead logs whose replay stops before entries
	// that were committed: a copy is set aside, and Badger's replay drops
	// what follows the damage.
	DamagedLogs []string
	// Need is the free space recover needs (a flush of the log, the
	// margin); Have what the file system has.
	Need, Have int64
}

// Empty says the plan changes no file beyond Badger's own replay.
func (p *RecoveryPlan) Empty() bool {
	return len(p.Orphans) == 0 && p.TornManifest < 0 && len(p.DamagedLogs) == 0
}

// Describe says what the plan will do, one line per action.
func (p *RecoveryPlan) Describe() []string {
	var out []string
	for _, o := range p.Orphans {
		out = append(out, fmt.Sprintf("set aside table %s (not listed in MANIFEST; its data is replayed from the log if the flush that wrote it was interrupted, and is otherwise NOT in the recovered store)", o))
	}
	if p.TornManifest >= 0 {
		out = append(out, fmt.Sprintf("copy MANIFEST aside and cut its torn tail at byte %d (MANIFEST is not rebuilt: tables it no longer lists are set aside, not re-listed)", p.TornManifest))
	}
	for _, l := range p.DamagedLogs {
		out = append(out, fmt.Sprintf("copy log %s aside: its entries after the damage are LOST from the recovered store", l))
	}
	return out
}

// PlanRecovery inspects a store whose writer is gone and says what
// Recover would do; it refuses what it cannot repair (a table MANIFEST
// lists is missing, an unreadable MANIFEST, too little free space).
func PlanRecovery(dir string) (*RecoveryPlan, error) {
	if _, err := os.Stat(filepath.Join(dir, badger.ManifestFilename)); err != nil {
		return nil, fmt.Errorf("recover %s: %w (give --db)", dir, ErrNoStore)
	}
	if held, err := probeLock(dir, true); err != nil {
		return nil, err
	} else if held {
		return nil, fmt.Errorf("recover %s: %w: %s has it open (a live writer is never recovered)", dir, ErrLocked, cmpOr(lockHolder(dir), "another process"))
	}
	ms, err := readManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("recover %s: %w", dir, err)
	}
	if len(ms.missing) > 0 {
		return nil, fmt.Errorf("recover %s: %w", dir, ms.check(dir))
	}
	p := &RecoveryPlan{Dir: dir, TornManifest: -1, Orphans: ms.orphans}
	if ms.good < ms.size {
		p.TornManifest = ms.good
	}
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return nil, err
	}
	var logBytes int64
	for _, m := range mems {
		used, err := logDamage(m)
		if errors.Is(err, errCommittedAfterDamage) {
			p.DamagedLogs = append(p.DamagedLogs, filepath.Base(m))
		} else if err != nil {
			return nil, fmt.Errorf("recover %s: %w: log %s: %v", dir, ErrCorruptStore, filepath.Base(m), err)
		}
		logBytes += used
	}
	// Replaying flushes each log into a table: room for them and the
	// margin every writer keeps.
	p.Need = SpaceMargin + 2*logBytes
	if p.Have, err = FreeSpace(dir); err != nil {
		return nil, err
	}
	if p.Have < p.Need {
		return nil, fmt.Errorf("recover %s: %w: need %s, have %s; nothing was changed (free some space and run recover again)",
			dir, ErrNoSpace, ibytes(p.Need), ibytes(p.Have))
	}
	return p, nil
}

// Recover carries out the plan: it moves the orphan tables and copies the
// damaged files into p.Aside, never deleting anything, and cuts MANIFEST's
// torn tail. The caller then opens the store for writing (Options.Recover),
// which lets Badger replay its log.
func Recover(p *RecoveryPlan, aside string) error {
	if p.Empty() {
		return nil
	}
	p.Aside = filepath.Join(p.Dir, aside)
	if err := os.Mkdir(p.Aside, 0o755); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, o := range p.Orphans {
		if err := os.Rename(filepath.Join(p.Dir, o), filepath.Join(p.Aside, o)); err != nil {
			return fmt.Errorf("recover: set aside %s: %w", o, err)
		}
	}
	for _, l := range p.DamagedLogs {
		if err := copyFile(filepath.Join(p.Dir, l), filepath.Join(p.Aside, l)); err != nil {
			return fmt.Errorf("recover: copy %s: %w", l, err)
		}
	}
	if p.TornManifest >= 0 {
		path := filepath.Join(p.Dir, badger.ManifestFilename)
		if err := copyFile(path, filepath.Join(p.Aside, badger.ManifestFilename)); err != nil {
			return fmt.Errorf("recover: copy MANIFEST: %w", err)
		}
		if err := os.Truncate(path, p.TornManifest); err != nil {
			return fmt.Errorf("recover: cut MANIFEST: %w", err)
		}
	}
	return syncDir(p.Aside)
}

// copyFile copies src to dst (a new file) and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return errors.Join(out.Sync(), out.Close())
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

package db

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors; NotFoundError wraps the first three.
var (
	ErrRunNotFound     = errors.New("run not found")
	ErrLayerNotFound   = errors.New("layer not found")
	ErrStepNotFound    = errors.New("snapshot not found")
	ErrRunExists       = errors.New("run already exists")
	ErrSnapshotExists  = errors.New("snapshot already exists")
	ErrLocked          = errors.New("store is in use by another process")
	ErrInvalidName     = errors.New("invalid name")
	ErrCorruptMetadata = errors.New("corrupt metadata")
	ErrInvalidSnapshot = errors.New("invalid snapshot")
	ErrNegativeStep    = errors.New("negative step")
	// ErrUnclean: a store's writer stopped without closing it; a reader
	// cannot replay its log (gvdb recover does).
	ErrUnclean = errors.New("store was not closed cleanly")
	// ErrCorruptStore: Badger's own files are damaged.
	ErrCorruptStore = errors.New("store files are damaged")
)

// NotFoundError says that a run, layer or snapshot does not exist, and what
// does.
type NotFoundError struct {
	What  string   // "run", "layer" or "snapshot"
	Name  string   // what was asked for
	Run   string   // the run looked in, for layers and snapshots
	Known []string // what exists
	err   error
}

// Error names what was asked for, the nearest existing name and what exists.
func (e *NotFoundError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "unknown %s %q", e.What, e.Name)
	if e.Run != "" {
		fmt.Fprintf(&b, " in run %q", e.Run)
	}
	if s := Nearest(e.Name, e.Known); s != "" {
		fmt.Fprintf(&b, "; did you mean %q?", s)
	}
	switch {
	case len(e.Known) == 0:
		fmt.Fprintf(&b, " (there are no %ss)", e.What)
	case len(e.Known) <= 12:
		fmt.Fprintf(&b, " (%ss: %s)", e.What, strings.Join(e.Known, ", "))
	default:
		fmt.Fprintf(&b, " (%d %ss: %s, ..., %s)", len(e.Known), e.What, strings.Join(e.Known[:6], ", "), e.Known[len(e.Known)-1])
	}
	return b.String()
}

// Unwrap returns the sentinel (ErrRunNotFound, ErrLayerNotFound, ErrStepNotFound).
func (e *NotFoundError) Unwrap() error { return e.err }

// Nearest returns the candidate closest to name by edit distance
// (case-insensitive), or "" when none is close enough to be a likely typo.
func Nearest(name string, candidates []string) string {
	best, bestD := "", -1
	lname := strings.ToLower(name)
	for _, c := range candidates {
		d := editDistance(lname, strings.ToLower(c))
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	if bestD < 0 || bestD > max(1, len(name)/3) || best == name {
		return ""
	}
	return best
}

// editDistance is the optimal-string-alignment distance: insertions,
// deletions, substitutions and adjacent transpositions each cost one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

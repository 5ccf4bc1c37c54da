package db

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/dgraph-io/badger/v4"
)

// LayerKind says what a layer's parameters are.
type LayerKind string

// Layer kinds.
const (
	DenseWeight LayerKind = "dense"
	Bias        LayerKind = "bias"
	ConvWeight  LayerKind = "conv"
	Other       LayerKind = "other"
)

// Layer is one entry of a run's layer schema: a parameter tensor.
type Layer struct {
	Name   string    `json:"name"`
	Kind   LayerKind `json:"kind"`
	Shape  []int     `json:"shape"`
	Params int       `json:"params"`
	// Capture says how an imported run's writer captured the layer's
	// per-example gradients: CaptureHook or CaptureGeneric (run.json's
	// "capture", docs/INTERCHANGE.md); "" when not said (gvdb's own runs).
	Capture string `json:"capture,omitempty"`
}

// How a writer captured a layer (python/gvdb_capture.py): hooks on the
// module (its input and output gradient), or the generic path (the module
// re-run on each example: vmap, or batch-size-1 passes).
const (
	CaptureHook    = "hook"
	CaptureGeneric = "generic"
)

// ImportedParam is the parameter gvdb import sets on a run (the weight
// layout of its run directory): its presence marks an imported run.
const ImportedParam = "imported_weight_layout"

// Run statuses.
const (
	StatusRunning     = "running"
	StatusComplete    = "complete"
	StatusInterrupted = "interrupted"
	StatusFailed      = "failed"
)

// Run is a training run's metadata: its name and id in the store, its
// configuration (Config, the one configuration type), its layer schema and
// its lifecycle.
type Run struct {
	Name   string  `json:"name"`
	ID     uint32  `json:"id"`
	Layers []Layer `json:"layers"`
	// Ignored lists trainable parameters of the model that an imported
	// run's writer left out (python/gvdb_capture.py's ignore=): the run's
	// whole-model statistics cover its layers only.
	Ignored []string `json:"ignored,omitempty"`
	Config

	Status  string    `json:"status,omitempty"`
	Created time.Time `json:"created"`
	Version string    `json:"gvdb_version,omitempty"`

	// live: the store's live writer (this process, or the one read
	// through) is writing the run (live.go).
	live bool
}

// Imported reports whether the run came in through gvdb import (a run
// directory: python/gvdb_capture.py, another writer, an export) rather
// than from gvdb train.
func (r *Run) Imported() bool {
	_, ok := r.Params[ImportedParam]
	return ok
}

// LayerNames returns the names of the run's layers in schema order.
func (r *Run) LayerNames() []string {
	names := make([]string, len(r.Layers))
	for i, l := range r.Layers {
		names[i] = l.Name
	}
	return names
}

// Layer returns the named layer, or a NotFoundError naming the run's layers.
func (r *Run) Layer(name string) (Layer, error) {
	if i := r.layerIndex(name); i >= 0 {
		return r.Layers[i], nil
	}
	return Layer{}, &NotFoundError{What: "layer", Name: name, Run: r.Name, Known: r.LayerNames(), err: ErrLayerNotFound}
}

func (r *Run) layerIndex(name string) int {
	for i, l := range r.Layers {
		if l.Name == name {
			return i
		}
	}
	return -1
}

// TotalParams returns the total number of parameters over all layers.
func (r *Run) TotalParams() int {
	n := 0
	for _, l := range r.Layers {
		n += l.Params
	}
	return n
}

// ValidateName checks a run or layer name: 1 to 200 printable characters,
// no quotes, slashes, backslashes or control characters, and no "..":
// names become file names in exports and reports.
func ValidateName(what, name string) error {
	if name == "" || len(name) > 200 {
		return fmt.Errorf("%w: %s name must have 1 to 200 characters", ErrInvalidName, what)
	}
	for _, c := range name {
		if !unicode.IsPrint(c) || c == '\'' || c == '"' || c == '\\' || c == '/' {
			return fmt.Errorf("%w: %s name %q has character %q (quotes, slashes, backslashes and control characters are not allowed)", ErrInvalidName, what, name, c)
		}
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("%w: %s name %q contains \"..\"", ErrInvalidName, what, name)
	}
	return nil
}

func (r *Run) validate() error {
	if err := ValidateName("run", r.Name); err != nil {
		return err
	}
	if len(r.Layers) > maxLayers {
		return fmt.Errorf("%w: run %q has %d layers, at most %d are supported", ErrInvalidName, r.Name, len(r.Layers), maxLayers)
	}
	seen := map[string]bool{}
	for _, l := range r.Layers {
		if err := ValidateName("layer", l.Name); err != nil {
			return err
		}
		if seen[l.Name] {
			return fmt.Errorf("%w: run %q has layer %q twice", ErrInvalidName, r.Name, l.Name)
		}
		seen[l.Name] = true
	}
	return nil
}

// CreateRun adds a new run; its ID and (if zero) creation time are set.
// A run of the same name is ErrRunExists.
func (d *DB) CreateRun(r *Run) error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("create run: %w", err)
	}
	if r.Created.IsZero() {
		r.Created = time.Now().UTC()
	}
	err := d.update(func(txn *badger.Txn) error {
		if _, err := txn.Get(runKey(r.Name)); err == nil {
			return fmt.Errorf("%w: %q (delete it first, or pick another name)", ErrRunExists, r.Name)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		var id uint32 = 1
		item, err := txn.Get([]byte{prefixNextID})
		switch {
		case err == nil:
			if err := item.Value(func(v []byte) error {
				if len(v) != 4 {
					return fmt.Errorf("%w: next run id is %d bytes", ErrCorruptMetadata, len(v))
				}
				id = binary.BigEndian.Uint32(v)
				return nil
			}); err != nil {
				return err
			}
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		r.ID = id
		if err := txn.Set([]byte{prefixNextID}, binary.BigEndian.AppendUint32(nil, id+1)); err != nil {
			return err
		}
		return putRun(txn, r)
	})
	if err != nil {
		return fmt.Errorf("create run %q: %w", r.Name, err)
	}
	d.noteWriting(r)
	return nil
}

func putRun(txn *badger.Txn, r *Run) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return txn.Set(runKey(r.Name), v)
}

// UpdateRun rewrites an existing run's metadata (status, steps, ...). Its
// name and ID must not change.
func (d *DB) UpdateRun(r *Run) error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("update run: %w", err)
	}
	err := d.update(func(txn *badger.Txn) error {
		old, err := d.getRun(badgerTxn{txn}, r.Name)
		if err != nil {
			return err
		}
		if old.ID != r.ID {
			return fmt.Errorf("run %q has id %d, update carries %d", r.Name, old.ID, r.ID)
		}
		return putRun(txn, r)
	})
	if err != nil {
		return fmt.Errorf("update run %q: %w", r.Name, err)
	}
	d.noteWriting(r)
	return nil
}

// Run returns the named run's metadata, or a NotFoundError (wrapping
// ErrRunNotFound) that names the runs there are.
func (d *DB) Run(name string) (*Run, error) {
	var r *Run
	err := d.view(func(txn readTxn) error {
		var err error
		r, err = d.getRun(txn, name)
		return err
	})
	if err == nil {
		d.markLive(r)
	}
	return r, err
}

func (d *DB) getRun(txn readTxn, name string) (*Run, error) {
	item, err := txn.Get(runKey(name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		known, _ := runNames(txn)
		return nil, &NotFoundError{What: "run", Name: name, Known: known, err: ErrRunNotFound}
	}
	if err != nil {
		return nil, err
	}
	return decodeRun(item)
}

func decodeRun(item readItem) (*Run, error) {
	r := new(Run)
	err := item.Value(func(v []byte) error { return json.Unmarshal(v, r) })
	if err != nil {
		return nil, fmt.Errorf("%w: run %q: %v", ErrCorruptMetadata, item.Key()[1:], err)
	}
	return r, nil
}

func runNames(txn readTxn) ([]string, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRun}})
	defer it.Close()
	var names []string
	for it.Rewind(); it.Valid(); it.Next() {
		names = append(names, string(it.Item().Key()[1:]))
	}
	return names, nil
}

// Runs returns every run, sorted by name.
func (d *DB) Runs() ([]*Run, error) {
	var runs []*Run
	err := d.view(func(txn readTxn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRun}, PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			r, err := decodeRun(it.Item())
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].Name < runs[j].Name })
	d.markLive(runs...)
	return runs, nil
}

// MatchRuns returns the runs whose names match glob (a path.Match
// pattern), sorted by name; a malformed pattern is an error.
func (d *DB) MatchRuns(glob string) ([]*Run, error) {
	if _, err := path.Match(glob, ""); err != nil {
		return nil, fmt.Errorf("bad run pattern %q: %w", glob, err)
	}
	all, err := d.Runs()
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(r *Run) bool { ok, _ := path.Match(glob, r.Name); return !ok }), nil
}

// RunNames returns the names of all runs, sorted.
func (d *DB) RunNames() ([]string, error) {
	var names []string
	err := d.view(func(txn readTxn) error {
		var err error
		names, err = runNames(txn)
		return err
	})
	return slices.Sorted(slices.Values(names)), err
}

// DeleteRun removes a run with all its snapshots and scalars. Its metadata
// goes first, so a crash part-way leaves no visible half-run.
func (d *DB) DeleteRun(name string) error {
	r, err := d.Run(name)
	if err != nil {
		return fmt.Errorf("delete run: %w", err)
	}
	if err := d.update(func(txn *badger.Txn) error { return txn.Delete(runKey(name)) }); err != nil {
		return fmt.Errorf("delete run %q: %w", name, err)
	}
	if err := d.bdb.DropPrefix(runPrefix(prefixSnapshot, r.ID), runPrefix(prefixScalars, r.ID)); err != nil {
		return fmt.Errorf("delete run %q data: %w", name, err)
	}
	// Give back what the value log can (gvdb compact gives back the rest).
	if err := d.reclaim(); err != nil {
		return fmt.Errorf("delete run %q: reclaim space: %w", name, err)
	}
	return nil
}

// StatusKilled is how a run still marked running looks to a process that
// holds the store: its writer died without a word (a killed process), since
// only one process can hold a store. Its flushed snapshots are intact.
const StatusKilled = "killed"

// ShownStatus returns the run's status for display by a process that
// opened the store: StatusKilled for a run still marked running that the
// store's live writer is not writing.
func (r *Run) ShownStatus() string {
	if r.Status == StatusRunning && !r.live {
		return StatusKilled
	}
	return r.Status
}

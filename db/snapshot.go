package db

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Window is the half-open step range [From, To).
type Window struct{ From, To int64 }

// AllSteps is the window of every step.
var AllSteps = Window{0, math.MaxInt64}

// Contains reports whether step lies in the window.
func (w Window) Contains(step int64) bool { return step >= w.From && step < w.To }

// LayerBlock is one layer's encoded gradient block within a snapshot.
type LayerBlock struct {
	Layer string
	Data  []byte
}

// Snapshot is the per-example gradients of N examples at one step of a run:
// one encoded block per layer.
type Snapshot struct {
	Step   int64
	N      int
	Time   time.Time
	Blocks []LayerBlock
}

// Block returns the data of the named layer's block, or nil.
func (s *Snapshot) Block(layer string) []byte {
	for _, b := range s.Blocks {
		if b.Layer == layer {
			return b.Data
		}
	}
	return nil
}

// SnapshotInfo describes a stored snapshot without its block data.
type SnapshotInfo struct {
	Step   int64
	N      int
	Time   time.Time
	Layers []string
	Bytes  []int64 // stored bytes of each layer's block
}

const manifestVersion = 1

// txnSplits counts snapshots' extra transactions (for tests).
var txnSplits atomic.Int64

func encodeManifest(s *Snapshot, idx []uint16) []byte {
	v := []byte{manifestVersion}
	v = binary.AppendUvarint(v, uint64(s.N))
	v = binary.BigEndian.AppendUint64(v, uint64(s.Time.UnixNano()))
	v = binary.AppendUvarint(v, uint64(len(idx)))
	for _, i := range idx {
		v = binary.AppendUvarint(v, uint64(i))
	}
	return v
}

type manifest struct {
	n      int
	time   time.Time
	layers []uint16 // schema index + 1
}

func decodeManifest(v []byte) (manifest, error) {
	var m manifest
	bad := func(what string) (manifest, error) {
		return m, fmt.Errorf("%w: snapshot manifest: %s", ErrCorruptMetadata, what)
	}
	if len(v) < 1 || v[0] != manifestVersion {
		return bad("unknown version")
	}
	v = v[1:]
	n, k := binary.Uvarint(v)
	if k <= 0 || n > math.MaxInt32 {
		return bad("example count")
	}
	v = v[k:]
	if len(v) < 8 {
		return bad("truncated")
	}
	m.n = int(n)
	m.time = time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
	v = v[8:]
	c, k := binary.Uvarint(v)
	if k <= 0 || c > 1<<16 {
		return bad("layer count")
	}
	v = v[k:]
	for range c {
		l, k := binary.Uvarint(v)
		if k <= 0 || l == 0 || l >= 1<<16 {
			return bad("layer index")
		}
		v = v[k:]
		m.layers = append(m.layers, uint16(l))
	}
	return m, nil
}

// PutSnapshot stores a snapshot of run at s.Step, all or nothing: its
// blocks are written first (in as many transactions as their size needs)
// and its manifest last, so readers never see a partial snapshot. Each
// block's layer must be in the run's schema; a snapshot already at that step
// is ErrSnapshotExists.
func (d *DB) PutSnapshot(run string, s *Snapshot) error {
	if s.Step < 0 {
		return fmt.Errorf("put snapshot: %w %d", ErrNegativeStep, s.Step)
	}
	r, err := d.Run(run)
	if err != nil {
		return fmt.Errorf("put snapshot: %w", err)
	}
	if len(s.Blocks) == 0 {
		return fmt.Errorf("put snapshot %s@%d: %w: no blocks", run, s.Step, ErrInvalidSnapshot)
	}
	idx := make([]uint16, len(s.Blocks))
	seen := map[uint16]bool{}
	for i, b := range s.Blocks {
		j := r.layerIndex(b.Layer)
		if j < 0 {
			_, err := r.Layer(b.Layer)
			return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
		}
		idx[i] = uint16(j + 1)
		if seen[idx[i]] {
			return fmt.Errorf("put snapshot %s@%d: %w: layer %q twice", run, s.Step, ErrInvalidSnapshot, b.Layer)
		}
		seen[idx[i]] = true
	}
	if s.Time.IsZero() {
		s.Time = time.Now().UTC()
	}
	mkey := blockKey(r.ID, s.Step, 0)
	err = d.bdb.View(func(txn *badger.Txn) error {
		if _, err := txn.Get(mkey); err == nil {
			return fmt.Errorf("%w: %s@%d", ErrSnapshotExists, run, s.Step)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put snapshot: %w", err)
	}

	txn := d.bdb.NewTransaction(true)
	defer func() { txn.Discard() }()
	set := func(k, v []byte) error {
		err := txn.Set(k, v)
		if errors.Is(err, badger.ErrTxnTooBig) {
			txnSplits.Add(1)
			if err := txn.Commit(); err != nil {
				return err
			}
			txn = d.bdb.NewTransaction(true)
			err = txn.Set(k, v)
		}
		return err
	}
	for i, b := range s.Blocks {
		if err := set(blockKey(r.ID, s.Step, idx[i]), b.Data); err != nil {
			return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
		}
	}
	if err := set(mkey, encodeManifest(s, idx)); err != nil {
		return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
	}
	return nil
}

// layerFilter maps requested layer names to schema indexes (+1); nil names
// means every layer.
func layerFilter(r *Run, names []string) (map[uint16]bool, error) {
	if names == nil {
		return nil, nil
	}
	want := map[uint16]bool{}
	for _, name := range names {
		i := r.layerIndex(name)
		if i < 0 {
			_, err := r.Layer(name)
			return nil, err
		}
		want[uint16(i+1)] = true
	}
	return want, nil
}

// scan walks the snapshots of run r in window w. For each snapshot it calls
// fn with the manifest and the keys of the blocks that pass the filter.
// With values set it reads the blocks' data; otherwise only their sizes.
func (d *DB) scan(r *Run, w Window, layers []string, values bool, fn func(*Snapshot, []int64) error) error {
	want, err := layerFilter(r, layers)
	if err != nil {
		return err
	}
	return d.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: runPrefix(prefixSnapshot, r.ID)})
		defer it.Close()
		var cur *Snapshot
		var sizes []int64
		var inManifest map[uint16]bool
		flush := func() error {
			if cur == nil {
				return nil
			}
			s := cur
			cur = nil
			return fn(s, sizes)
		}
		for it.Seek(stepKey(prefixSnapshot, r.ID, max(w.From, 0))); it.Valid(); it.Next() {
			item := it.Item()
			step, layer, ok := parseBlockKey(item.Key())
			if !ok {
				continue
			}
			if step >= w.To {
				break
			}
			if layer == 0 {
				if err := flush(); err != nil {
					return err
				}
				var m manifest
				if err := item.Value(func(v []byte) (err error) { m, err = decodeManifest(v); return err }); err != nil {
					return fmt.Errorf("%s@%d: %w", r.Name, step, err)
				}
				cur = &Snapshot{Step: step, N: m.n, Time: m.time}
				sizes = nil
				inManifest = map[uint16]bool{}
				for _, l := range m.layers {
					inManifest[l] = true
				}
				continue
			}
			// Blocks without a manifest are left by a writer that died
			// before committing the snapshot: invisible by design.
			if cur == nil || cur.Step != step || !inManifest[layer] || (want != nil && !want[layer]) {
				continue
			}
			if int(layer) > len(r.Layers) {
				return fmt.Errorf("%w: %s@%d has layer index %d, schema has %d layers", ErrCorruptMetadata, r.Name, step, layer, len(r.Layers))
			}
			lb := LayerBlock{Layer: r.Layers[layer-1].Name}
			if values {
				v, err := item.ValueCopy(nil)
				if err != nil {
					return fmt.Errorf("read %s@%d %s: %w", r.Name, step, lb.Layer, err)
				}
				lb.Data = v
			}
			cur.Blocks = append(cur.Blocks, lb)
			sizes = append(sizes, item.ValueSize())
		}
		return flush()
	})
}

// Snapshots calls fn for each snapshot of run in window w, in step order,
// with the blocks of the given layers (nil: all). An unknown run or layer
// is a NotFoundError; an error from fn stops the scan and is returned.
func (d *DB) Snapshots(run string, w Window, layers []string, fn func(*Snapshot) error) error {
	r, err := d.Run(run)
	if err != nil {
		return err
	}
	return d.scan(r, w, layers, true, func(s *Snapshot, _ []int64) error { return fn(s) })
}

// SnapshotInfos lists run's snapshots in window w without reading blocks.
func (d *DB) SnapshotInfos(run string, w Window) ([]SnapshotInfo, error) {
	r, err := d.Run(run)
	if err != nil {
		return nil, err
	}
	var out []SnapshotInfo
	err = d.scan(r, w, nil, false, func(s *Snapshot, sizes []int64) error {
		info := SnapshotInfo{Step: s.Step, N: s.N, Time: s.Time, Bytes: sizes}
		for _, b := range s.Blocks {
			info.Layers = append(info.Layers, b.Layer)
		}
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots of %q: %w", run, err)
	}
	return out, nil
}

// Steps returns the steps at which run has snapshots.
func (d *DB) Steps(run string) ([]int64, error) {
	infos, err := d.SnapshotInfos(run, AllSteps)
	if err != nil {
		return nil, err
	}
	steps := make([]int64, len(infos))
	for i, s := range infos {
		steps[i] = s.Step
	}
	return steps, nil
}

// Snapshot returns run's snapshot at step with the given layers (nil: all),
// or a NotFoundError naming the steps there are.
func (d *DB) Snapshot(run string, step int64, layers []string) (*Snapshot, error) {
	var found *Snapshot
	err := d.Snapshots(run, Window{step, step + 1}, layers, func(s *Snapshot) error {
		found = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		steps, err := d.Steps(run)
		if err != nil {
			return nil, err
		}
		known := make([]string, len(steps))
		for i, s := range steps {
			known[i] = strconv.FormatInt(s, 10)
		}
		return nil, &NotFoundError{What: "snapshot", Name: strconv.FormatInt(step, 10), Run: run, Known: known, err: ErrStepNotFound}
	}
	return found, nil
}

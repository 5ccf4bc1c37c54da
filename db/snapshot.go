package db

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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
	// key is a rollup's key while its value is unread (Select.Later).
	key []byte
}

// Population says which examples a snapshot holds.
type Population uint8

// Populations.
const (
	// Sample: examples drawn at random from the training set.
	Sample Population = iota
	// Full: every example of the training set, the population the paper's
	// estimators sample mini-batches from.
	Full
)

// String returns "sample" or "full".
func (p Population) String() string {
	if p == Full {
		return "full"
	}
	return "sample"
}

// ParsePopulation parses "sample" or "full".
func ParsePopulation(s string) (Population, error) {
	switch s {
	case "sample":
		return Sample, nil
	case "full":
		return Full, nil
	}
	return 0, fmt.Errorf("unknown population %q (want 'full' or 'sample')", s)
}

// Snapshot is the per-example gradients of N examples at one step of a run:
// one encoded block per layer. An SVRG snapshot also holds the same
// examples' gradients at the anchor parameters θ̃ of step AnchorStep, one
// block per layer in Anchor.
type Snapshot struct {
	Step       int64
	N          int
	Time       time.Time
	Population Population
	Blocks     []LayerBlock
	// Anchor blocks, for the layers read (nil: none stored or not read).
	Anchor     []LayerBlock
	HasAnchor  bool
	AnchorStep int64
	// Rollups are per-layer sufficient statistics (db/stats.Rollup),
	// for the layers read when Select.Rollups asks; a snapshot may have
	// none (written without, or before gvdb reindex).
	Rollups []LayerBlock
	// Attributes are the examples' per-example values (labels, losses,
	// perturbation flags; db/codec.Attributes), when Select.Attributes
	// asks and the snapshot has them.
	Attributes []byte

	rollupBytes int64 // for SnapshotInfos
	rollups     int
}

// Block returns the data of the named layer's block, or nil.
func (s *Snapshot) Block(layer string) []byte { return findBlock(s.Blocks, layer) }

// AnchorBlock returns the data of the named layer's anchor block, or nil.
func (s *Snapshot) AnchorBlock(layer string) []byte { return findBlock(s.Anchor, layer) }

// Rollup returns the data of the named layer's rollup, or nil.
func (s *Snapshot) Rollup(layer string) []byte { return findBlock(s.Rollups, layer) }

func findBlock(bs []LayerBlock, layer string) []byte {
	for _, b := range bs {
		if b.Layer == layer {
			return b.Data
		}
	}
	return nil
}

// SnapshotInfo describes a stored snapshot without its block data.
type SnapshotInfo struct {
	Step       int64
	N          int
	Time       time.Time
	Population Population
	HasAnchor  bool
	AnchorStep int64
	Layers     []string
	Bytes      []int64 // stored bytes of each layer's block
	// AnchorBytes are the stored bytes of the anchor blocks, RollupBytes
	// those of the rollups (Rollups of them).
	AnchorBytes, RollupBytes int64
	Rollups                  int
}

// StoredBytes returns the bytes of the snapshot's blocks and anchor blocks
// (RollupBytes are apart).
func (s *SnapshotInfo) StoredBytes() int64 {
	n := s.AnchorBytes
	for _, b := range s.Bytes {
		n += b
	}
	return n
}

// Select says what a snapshot scan reads.
type Select struct {
	// Layers to read (nil: all).
	Layers []string
	// Anchor also reads the SVRG anchor blocks of those layers.
	Anchor bool
	// Rollups also reads those layers' rollups; NoBlocks skips their
	// blocks (and anchor blocks).
	Rollups, NoBlocks bool
	// Attributes also reads the examples' attributes.
	Attributes bool
	// Filter, if set, is asked about each snapshot before its blocks are
	// read (only its manifest fields are set); false skips the snapshot.
	Filter func(*Snapshot) bool
	// Buffer, if set, gives the buffers rollups are read into (at least n
	// bytes; a shorter one is replaced), so that a caller that is done
	// with a snapshot's rollups can reuse their memory: fresh memory
	// costs a page fault per page.
	Buffer func(n int) []byte
	// Head, if set, gives how many leading bytes of a rollup's value to
	// read (stats.RollupHead: what per-snapshot statistics need).
	Head func(v []byte) int
	// Later lists the rollups without reading them (Data nil):
	// ReadRollups then reads them, on any goroutine (a query reads them
	// on its workers, in parallel).
	Later bool
}

// Manifest versions: 1 (no flags, no checksum) is still read; 2 is written.
const (
	manifestV1 = 1
	manifestV2 = 2
)

// Manifest flags (version 2).
const (
	flagFull   = 1 << 0
	flagAnchor = 1 << 1
	knownFlags = flagFull | flagAnchor
)

// anchorBit marks an anchor block's layer index in its key, rollupBit a
// rollup's.
const (
	anchorBit = 0x8000
	rollupBit = 0x4000
	kindBits  = anchorBit | rollupBit
	// attrIndex is the layer index of a snapshot's example attributes.
	attrIndex = 0xFFFF
)

// maxLayers is the most layers a run may have: layer indexes (schema index
// + 1) must stay below rollupBit.
const maxLayers = rollupBit - 1

// txnSplits counts snapshots' extra transactions (for tests).
var txnSplits atomic.Int64

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeManifest(s *Snapshot, idx, anchor []uint16) []byte {
	var flags byte
	if s.Population == Full {
		flags |= flagFull
	}
	if s.HasAnchor {
		flags |= flagAnchor
	}
	v := []byte{manifestV2, flags}
	v = binary.AppendUvarint(v, uint64(s.N))
	v = binary.BigEndian.AppendUint64(v, uint64(s.Time.UnixNano()))
	if s.HasAnchor {
		v = binary.AppendUvarint(v, uint64(s.AnchorStep))
	}
	v = appendIndexes(v, idx)
	if s.HasAnchor {
		v = appendIndexes(v, anchor)
	}
	return binary.LittleEndian.AppendUint32(v, crc32.Checksum(v, castagnoli))
}

func appendIndexes(v []byte, idx []uint16) []byte {
	v = binary.AppendUvarint(v, uint64(len(idx)))
	for _, i := range idx {
		v = binary.AppendUvarint(v, uint64(i))
	}
	return v
}

type manifest struct {
	n          int
	time       time.Time
	population Population
	hasAnchor  bool
	anchorStep int64
	layers     []uint16 // schema index + 1
	anchor     []uint16 // schema index + 1 of the anchor blocks
}

func decodeManifest(v []byte) (manifest, error) {
	var m manifest
	bad := func(what string) (manifest, error) {
		return m, fmt.Errorf("%w: snapshot manifest: %s", ErrCorruptMetadata, what)
	}
	if len(v) < 1 {
		return bad("empty")
	}
	var flags byte
	switch v[0] {
	case manifestV1:
		v = v[1:]
	case manifestV2:
		if len(v) < 6 {
			return bad("truncated")
		}
		body, sum := v[:len(v)-4], binary.LittleEndian.Uint32(v[len(v)-4:])
		if crc32.Checksum(body, castagnoli) != sum {
			return bad("checksum mismatch")
		}
		flags = body[1]
		if flags&^knownFlags != 0 {
			return bad(fmt.Sprintf("unknown flags %#x (written by a newer gvdb?)", flags))
		}
		v = body[2:]
	default:
		return bad(fmt.Sprintf("unknown version %d", v[0]))
	}
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
	if flags&flagFull != 0 {
		m.population = Full
	}
	if flags&flagAnchor != 0 {
		s, k := binary.Uvarint(v)
		if k <= 0 || s > math.MaxInt64 {
			return bad("anchor step")
		}
		m.hasAnchor, m.anchorStep = true, int64(s)
		v = v[k:]
	}
	var err error
	if m.layers, v, err = readIndexes(v); err != nil {
		return bad("layers: " + err.Error())
	}
	if m.hasAnchor {
		if m.anchor, v, err = readIndexes(v); err != nil {
			return bad("anchor layers: " + err.Error())
		}
	}
	if len(v) != 0 {
		return bad("trailing bytes")
	}
	return m, nil
}

func readIndexes(v []byte) ([]uint16, []byte, error) {
	c, k := binary.Uvarint(v)
	if k <= 0 || c > maxLayers {
		return nil, nil, errors.New("count")
	}
	v = v[k:]
	out := make([]uint16, 0, c)
	for range c {
		l, k := binary.Uvarint(v)
		if k <= 0 || l == 0 || l > maxLayers {
			return nil, nil, errors.New("index")
		}
		v = v[k:]
		out = append(out, uint16(l))
	}
	return out, v, nil
}

// PutSnapshot stores a snapshot of run at s.Step, all or nothing: its
// blocks (and anchor blocks) are written first, in as many transactions as
// their size needs, and its manifest last, so readers never see a partial
// snapshot. Each block's layer must be in the run's schema; a snapshot
// already at that step is ErrSnapshotExists.
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
	if s.HasAnchor && (s.AnchorStep < 0 || s.AnchorStep > s.Step) {
		return fmt.Errorf("put snapshot %s@%d: %w: anchor step %d is not in [0, %d]", run, s.Step, ErrInvalidSnapshot, s.AnchorStep, s.Step)
	}
	if !s.HasAnchor && len(s.Anchor) > 0 {
		return fmt.Errorf("put snapshot %s@%d: %w: anchor blocks without HasAnchor", run, s.Step, ErrInvalidSnapshot)
	}
	idx, err := schemaIndexes(r, s.Blocks)
	if err != nil {
		return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
	}
	aidx, err := schemaIndexes(r, s.Anchor)
	if err != nil {
		return fmt.Errorf("put snapshot %s@%d: anchor: %w", run, s.Step, err)
	}
	ridx, err := schemaIndexes(r, s.Rollups)
	if err != nil {
		return fmt.Errorf("put snapshot %s@%d: rollups: %w", run, s.Step, err)
	}
	if s.Time.IsZero() {
		s.Time = time.Now().UTC()
	}
	mkey := blockKey(r.ID, s.Step, 0)
	err = d.view(func(txn readTxn) error {
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

	if d.remote != nil {
		return errRemoteWrite
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
	for i, b := range s.Anchor {
		if err := set(blockKey(r.ID, s.Step, anchorBit|aidx[i]), b.Data); err != nil {
			return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
		}
	}
	for i, b := range s.Rollups {
		if err := set(blockKey(r.ID, s.Step, rollupBit|ridx[i]), b.Data); err != nil {
			return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
		}
	}
	if s.Attributes != nil {
		if err := set(blockKey(r.ID, s.Step, attrIndex), s.Attributes); err != nil {
			return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
		}
	}
	if err := set(mkey, encodeManifest(s, idx, aidx)); err != nil {
		return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("put snapshot %s@%d: %w", run, s.Step, err)
	}
	return nil
}

// schemaIndexes maps blocks to their layers' schema index + 1; unknown and
// repeated layers are errors.
func schemaIndexes(r *Run, blocks []LayerBlock) ([]uint16, error) {
	idx := make([]uint16, len(blocks))
	seen := map[uint16]bool{}
	for i, b := range blocks {
		j := r.layerIndex(b.Layer)
		if j < 0 {
			_, err := r.Layer(b.Layer)
			return nil, err
		}
		idx[i] = uint16(j + 1)
		if seen[idx[i]] {
			return nil, fmt.Errorf("%w: layer %q twice", ErrInvalidSnapshot, b.Layer)
		}
		seen[idx[i]] = true
	}
	return idx, nil
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
// fn with the manifest's fields and the blocks that pass the selection
// (their data only when values is set) and their stored sizes.
func (d *DB) scan(r *Run, w Window, sel Select, values bool, fn func(*Snapshot, []int64, int64) error) error {
	want, err := layerFilter(r, sel.Layers)
	if err != nil {
		return err
	}
	return d.view(func(txn readTxn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: runPrefix(prefixSnapshot, r.ID)})
		defer it.Close()
		var cur *Snapshot
		var sizes []int64
		var anchorBytes int64
		var inManifest, inAnchor map[uint16]bool
		flush := func() error {
			if cur == nil {
				return nil
			}
			s := cur
			cur = nil
			return fn(s, sizes, anchorBytes)
		}
		rollupBytes := func(s *Snapshot, n int64) {
			if s != nil {
				s.rollupBytes += n
				s.rollups++
			}
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
				cur = &Snapshot{Step: step, N: m.n, Time: m.time, Population: m.population, HasAnchor: m.hasAnchor, AnchorStep: m.anchorStep}
				if sel.Filter != nil && !sel.Filter(cur) {
					cur = nil
					continue
				}
				sizes, anchorBytes = nil, 0
				inManifest, inAnchor = map[uint16]bool{}, map[uint16]bool{}
				for _, l := range m.layers {
					inManifest[l] = true
				}
				for _, l := range m.anchor {
					inAnchor[l] = true
				}
				continue
			}
			if layer == attrIndex {
				if cur != nil && cur.Step == step && sel.Attributes {
					v, err := item.ValueCopy(nil)
					if err != nil {
						return fmt.Errorf("read %s@%d attributes: %w", r.Name, step, err)
					}
					cur.Attributes = v
				}
				continue
			}
			anchor, rollup := layer&anchorBit != 0, layer&kindBits == rollupBit
			li := layer &^ kindBits
			listed := inManifest
			switch {
			case anchor:
				listed = inAnchor
			case rollup:
				// Rollups are not in the manifest (gvdb reindex adds them
				// later); they belong to a listed layer.
				listed = inManifest
			}
			// Blocks without a manifest are left by a writer that died
			// before committing the snapshot: invisible by design.
			if cur == nil || cur.Step != step || !listed[li] {
				continue
			}
			if int(li) > len(r.Layers) {
				return fmt.Errorf("%w: %s@%d has layer index %d, schema has %d layers", ErrCorruptMetadata, r.Name, step, li, len(r.Layers))
			}
			if anchor {
				anchorBytes += item.ValueSize()
			}
			if rollup {
				rollupBytes(cur, item.ValueSize())
			}
			if want != nil && !want[li] || anchor && (!sel.Anchor || sel.NoBlocks) || rollup && !sel.Rollups || !anchor && !rollup && sel.NoBlocks {
				continue
			}
			lb := LayerBlock{Layer: r.Layers[li-1].Name}
			if values {
				var err error
				switch {
				case rollup && sel.Later:
					lb.key = item.KeyCopy(nil)
				case rollup:
					lb.Data, err = readRollup(item, sel)
				default:
					lb.Data, err = item.ValueCopy(nil)
				}
				if err != nil {
					return fmt.Errorf("read %s@%d %s: %w", r.Name, step, lb.Layer, err)
				}
			}
			switch {
			case anchor:
				cur.Anchor = append(cur.Anchor, lb)
			case rollup:
				cur.Rollups = append(cur.Rollups, lb)
			default:
				cur.Blocks = append(cur.Blocks, lb)
				sizes = append(sizes, item.ValueSize())
			}
		}
		return flush()
	})
}

// readRollup copies a rollup's value, or its head (sel.Head), into a
// buffer from sel.Buffer.
func readRollup(item readItem, sel Select) ([]byte, error) {
	var out []byte
	err := item.Value(func(v []byte) error {
		if sel.Head != nil {
			v = v[:min(max(sel.Head(v), 0), len(v))]
		}
		if sel.Buffer != nil {
			out = sel.Buffer(len(v))[:0]
		}
		out = append(out, v...)
		return nil
	})
	return out, err
}

// ReadRollups reads the rollups of s that a scan with sel.Later listed
// (head and buffers as sel says), in a transaction of its own, with one
// seek: a snapshot's rollup keys are adjacent. A rollup gone since (its
// run deleted) is an error.
func (d *DB) ReadRollups(s *Snapshot, sel Select) error {
	want := map[string]*LayerBlock{}
	var first []byte
	for i := range s.Rollups {
		lb := &s.Rollups[i]
		if lb.key != nil {
			want[string(lb.key)] = lb
			if first == nil || string(lb.key) < string(first) {
				first = lb.key
			}
		}
	}
	if len(want) == 0 {
		return nil
	}
	err := d.view(func(txn readTxn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: first[:13]})
		defer it.Close()
		for it.Seek(first); it.Valid() && len(want) > 0; it.Next() {
			item := it.Item()
			lb := want[string(item.Key())]
			if lb == nil {
				continue
			}
			data, err := readRollup(item, sel)
			if err != nil {
				return fmt.Errorf("read step %d %s rollup: %w", s.Step, lb.Layer, err)
			}
			lb.Data, lb.key = data, nil
			delete(want, string(item.Key()))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, lb := range s.Rollups {
		if lb.key != nil {
			return fmt.Errorf("read step %d %s rollup: it was removed while the store was read", s.Step, lb.Layer)
		}
	}
	return nil
}

// Snapshots calls fn for each snapshot of run r in window w, in step
// order, with the blocks sel asks for. An unknown layer is a
// NotFoundError; an error from fn stops the scan and is returned.
func (d *DB) Snapshots(r *Run, w Window, sel Select, fn func(*Snapshot) error) error {
	return d.scan(r, w, sel, true, func(s *Snapshot, _ []int64, _ int64) error { return fn(s) })
}

// SnapshotInfos lists run r's snapshots in window w without reading
// blocks.
func (d *DB) SnapshotInfos(r *Run, w Window) ([]SnapshotInfo, error) {
	var out []SnapshotInfo
	err := d.scan(r, w, Select{Anchor: true}, false, func(s *Snapshot, sizes []int64, anchorBytes int64) error {
		info := SnapshotInfo{Step: s.Step, N: s.N, Time: s.Time, Population: s.Population, HasAnchor: s.HasAnchor,
			AnchorStep: s.AnchorStep, Bytes: sizes, AnchorBytes: anchorBytes, RollupBytes: s.rollupBytes, Rollups: s.rollups}
		for _, b := range s.Blocks {
			info.Layers = append(info.Layers, b.Layer)
		}
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots of %q: %w", r.Name, err)
	}
	return out, nil
}

// Steps returns the steps at which run r has snapshots.
func (d *DB) Steps(r *Run) ([]int64, error) {
	infos, err := d.SnapshotInfos(r, AllSteps)
	if err != nil {
		return nil, err
	}
	steps := make([]int64, len(infos))
	for i, s := range infos {
		steps[i] = s.Step
	}
	return steps, nil
}

// Snapshot returns run r's snapshot at step with the blocks sel asks for,
// or a NotFoundError naming the steps there are.
func (d *DB) Snapshot(r *Run, step int64, sel Select) (*Snapshot, error) {
	var found *Snapshot
	err := d.Snapshots(r, Window{step, step + 1}, sel, func(s *Snapshot) error {
		found = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		steps, err := d.Steps(r)
		if err != nil {
			return nil, err
		}
		known := make([]string, len(steps))
		for i, s := range steps {
			known[i] = strconv.FormatInt(s, 10)
		}
		return nil, &NotFoundError{What: "snapshot", Name: strconv.FormatInt(step, 10), Run: r.Name, Known: known, err: ErrStepNotFound}
	}
	return found, nil
}

// PutRollups adds rollups (db/stats.Rollup encodings, one per listed
// layer) to run r's existing snapshot at step, replacing any there:
// gvdb reindex's write.
func (d *DB) PutRollups(r *Run, step int64, rollups []LayerBlock) error {
	if _, err := d.Snapshot(r, step, Select{NoBlocks: true}); err != nil {
		return fmt.Errorf("put rollups: %w", err)
	}
	idx, err := schemaIndexes(r, rollups)
	if err != nil {
		return fmt.Errorf("put rollups %s@%d: %w", r.Name, step, err)
	}
	err = d.update(func(txn *badger.Txn) error {
		for i, b := range rollups {
			if err := txn.Set(blockKey(r.ID, step, rollupBit|idx[i]), b.Data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put rollups %s@%d: %w", r.Name, step, err)
	}
	return nil
}

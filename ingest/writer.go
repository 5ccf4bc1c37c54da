package ingest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
)

// NamedBlock is one layer's block of a snapshot.
type NamedBlock struct {
	Layer string
	Block *codec.Block
}

// Snapshot is the per-example gradients of one step: one block per layer,
// all for the same examples in the same order.
type Snapshot struct {
	Step   int64
	Time   time.Time // zero: now
	Blocks []NamedBlock
	// Population says whether the examples are the whole training set
	// (db.Full) or a random sample of it (db.Sample, the zero value).
	Population db.Population
	// Anchor, if not empty, holds the same examples' gradients at the SVRG
	// anchor parameters of step AnchorStep, one block per layer of Blocks.
	Anchor     []NamedBlock
	AnchorStep int64
	// Attributes, if set, are per-example values (label, loss, flags) for
	// the blocks' examples, in the same row order.
	Attributes *codec.Attributes
}

// all returns the snapshot's blocks followed by its anchor blocks.
func (s *Snapshot) all() []NamedBlock {
	if len(s.Anchor) == 0 {
		return s.Blocks
	}
	return append(append([]NamedBlock(nil), s.Blocks...), s.Anchor...)
}

// bytes bounds the snapshot's stored size: its values as float32, its ids
// and attributes (the codec stores no more than that, before compression).
func (s *Snapshot) bytes() int64 {
	var n int64
	for _, b := range s.all() {
		n += 4*int64(b.Block.StoredValues()) + 8*int64(b.Block.N())
	}
	if s.Attributes != nil {
		for _, c := range s.Attributes.Columns {
			n += 8 * int64(len(c.Ints)+len(c.Floats)+len(c.Bools))
		}
	}
	return n + 1<<16
}

// Options configure a Writer. Zero values pick the defaults.
type Options struct {
	// Encoding of block values: codec.Float32 (lossless) by default.
	Encoding codec.Encoding
	// Queue is how many snapshots may be accepted but not yet committed
	// before Write waits (default 4). Memory is bounded by Queue snapshots.
	Queue int
	// Workers is the number of encoding goroutines (default GOMAXPROCS).
	Workers int
	// Rollups says which per-layer rollups (db/stats.Rollup) to store
	// beside the blocks: RollupsAuto (the default: always the scalars and
	// the per-example table, and the float32 per-coordinate vectors when a
	// snapshot's rollups then take at most its blocks' bytes),
	// RollupsVectors (always the vectors), RollupsScalars (never the
	// vectors) or RollupsNone.
	Rollups RollupPolicy
}

// RollupPolicy says which rollups a Writer stores.
type RollupPolicy string

// Rollup policies.
const (
	RollupsAuto    RollupPolicy = "auto"
	RollupsVectors RollupPolicy = "vectors"
	RollupsScalars RollupPolicy = "scalars"
	RollupsNone    RollupPolicy = "none"
)

// vectors returns the per-coordinate vectors a rollup is computed with
// under the policy; under auto, keep decides per snapshot whether they are
// stored.
func (p RollupPolicy) vectors() stats.Vectors {
	if p == RollupsAuto || p == RollupsVectors {
		return stats.Float32Vectors
	}
	return stats.NoVectors
}

// encodedRollup is one layer's rollup encoded with its vectors (full) and
// without (scalars; nil when full has none).
type encodedRollup struct {
	layer         string
	full, scalars []byte
}

// encodeRollup computes and encodes block b's rollup under the policy.
func (p RollupPolicy) encodeRollup(layer string, b *codec.Block) (encodedRollup, error) {
	r, err := stats.NewRollup(stats.Layer{Name: layer, Block: b}, p.vectors())
	if err != nil {
		return encodedRollup{}, err
	}
	e := encodedRollup{layer: layer, full: r.Marshal()}
	if r.HasVectors() {
		e.scalars = r.WithoutVectors().Marshal()
	}
	return e, nil
}

// keep returns the rollups to store for a snapshot whose blocks take
// blockBytes: under auto, the vectors only when all its rollups with
// vectors take at most blockBytes (the rollups never cost more than the
// blocks), else the scalars of every layer (a scope's nvar needs the
// vectors of all its layers, so the choice is per snapshot).
func (p RollupPolicy) keep(rs []encodedRollup, blockBytes int64) []db.LayerBlock {
	full := int64(0)
	for _, r := range rs {
		full += int64(len(r.full))
	}
	vectors := p != RollupsAuto || full <= blockBytes
	out := make([]db.LayerBlock, len(rs))
	for i, r := range rs {
		out[i] = db.LayerBlock{Layer: r.layer, Data: r.full}
		if !vectors && r.scalars != nil {
			out[i].Data = r.scalars
		}
	}
	return out
}

// ParseRollupPolicy parses "auto", "vectors", "scalars" or "none".
func ParseRollupPolicy(s string) (RollupPolicy, error) {
	switch p := RollupPolicy(s); p {
	case RollupsAuto, RollupsVectors, RollupsScalars, RollupsNone:
		return p, nil
	}
	return "", fmt.Errorf("unknown rollup policy %q (want auto, vectors, scalars or none)", s)
}

// Stats count what a Writer has committed.
type Stats struct {
	Snapshots   int
	Examples    int
	InputBytes  int64   // float32 bytes of the blocks' factors and rows
	StoredBytes int64   // encoded bytes written to the store (blocks)
	RollupBytes int64   // bytes of the rollups written beside them
	MaxAbsErr   float32 // largest error a lossy encoding introduced
}

// ErrClosed is returned by a Writer's methods after Close.
var ErrClosed = errors.New("writer closed")

type job struct {
	snap    *Snapshot
	blocks  []NamedBlock // the snapshot's blocks, then its anchor blocks
	encoded []db.LayerBlock
	rollups []encodedRollup // per block of the snapshot (not the anchors)
	maxErr  []float32
	errs    []error
	wg      sync.WaitGroup
}

type task struct {
	j *job
	i int
}

// Writer streams snapshots of one run into a store.
type Writer struct {
	d      *db.DB
	run    string
	layers map[string]bool
	opts   Options

	tasks   chan task
	commits chan *job
	done    chan struct{}
	workers sync.WaitGroup

	// sending is held (shared) by Write while it hands a job to the
	// pipeline, and exclusively by Close before it closes the channels.
	sending sync.RWMutex

	mu        sync.Mutex
	cond      *sync.Cond
	accepted  int
	committed int
	err       error
	closed    bool
	stats     Stats

	beforeCommit func() // test hook
}

// NewWriter starts a writer for an existing run.
func NewWriter(d *db.DB, run string, opts Options) (*Writer, error) {
	r, err := d.Run(run)
	if err != nil {
		return nil, fmt.Errorf("new writer: %w", err)
	}
	if opts.Encoding == 0 {
		opts.Encoding = codec.Float32
	}
	if _, err := codec.ParseEncoding(opts.Encoding.String()); err != nil {
		return nil, fmt.Errorf("new writer: %w", err)
	}
	if opts.Queue <= 0 {
		opts.Queue = 4
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Rollups == "" {
		opts.Rollups = RollupsAuto
	}
	if _, err := ParseRollupPolicy(string(opts.Rollups)); err != nil {
		return nil, fmt.Errorf("new writer: %w", err)
	}
	w := &Writer{
		d: d, run: run, opts: opts, layers: map[string]bool{},
		tasks:   make(chan task, 64),
		commits: make(chan *job, opts.Queue),
		done:    make(chan struct{}),
	}
	for _, l := range r.Layers {
		w.layers[l.Name] = true
	}
	w.cond = sync.NewCond(&w.mu)
	for range opts.Workers {
		w.workers.Add(1)
		go w.encodeLoop()
	}
	go w.commitLoop()
	return w, nil
}

// Run returns the name of the run the writer writes to.
func (w *Writer) Run() string { return w.run }

func (w *Writer) check(s *Snapshot) error {
	if len(s.Blocks) == 0 {
		return fmt.Errorf("snapshot at step %d has no blocks", s.Step)
	}
	if s.Step < 0 {
		return fmt.Errorf("snapshot at step %d: %w", s.Step, db.ErrNegativeStep)
	}
	ids := s.Blocks[0].Block.IDs
	for _, nb := range s.all() {
		if !w.layers[nb.Layer] {
			return fmt.Errorf("snapshot at step %d: layer %q is not in run %q's schema", s.Step, nb.Layer, w.run)
		}
		if err := nb.Block.Validate(); err != nil {
			return fmt.Errorf("snapshot at step %d, layer %s: %w", s.Step, nb.Layer, err)
		}
		if !slices.Equal(nb.Block.IDs, ids) {
			return fmt.Errorf("snapshot at step %d: layer %s has other example ids than layer %s", s.Step, nb.Layer, s.Blocks[0].Layer)
		}
	}
	if s.Attributes != nil {
		if s.Attributes.N != len(ids) {
			return fmt.Errorf("snapshot at step %d: attributes of %d examples for %d", s.Step, s.Attributes.N, len(ids))
		}
		if err := s.Attributes.Validate(); err != nil {
			return fmt.Errorf("snapshot at step %d: %w", s.Step, err)
		}
	}
	if len(s.Anchor) > 0 {
		if len(s.Anchor) != len(s.Blocks) {
			return fmt.Errorf("snapshot at step %d: %d anchor blocks for %d layers", s.Step, len(s.Anchor), len(s.Blocks))
		}
		for i, nb := range s.Anchor {
			b := s.Blocks[i].Block
			if nb.Layer != s.Blocks[i].Layer || nb.Block.Params() != b.Params() {
				return fmt.Errorf("snapshot at step %d: anchor block %d (%s) does not match layer %s", s.Step, i, nb.Layer, s.Blocks[i].Layer)
			}
		}
		if s.AnchorStep < 0 || s.AnchorStep > s.Step {
			return fmt.Errorf("snapshot at step %d: anchor step %d is not in [0, %d]", s.Step, s.AnchorStep, s.Step)
		}
	}
	return nil
}

// Write accepts a snapshot; it is encoded and committed in the background.
// Write waits while the queue is full (or until ctx is done). It returns an
// error for an invalid snapshot or when an earlier one failed to commit.
// The writer owns s and its blocks from now on: do not modify them.
func (w *Writer) Write(ctx context.Context, s *Snapshot) error {
	if err := w.check(s); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	w.sending.RLock()
	defer w.sending.RUnlock()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.mu.Unlock()

	blocks := s.all()
	j := &job{snap: s, blocks: blocks, encoded: make([]db.LayerBlock, len(blocks)), rollups: make([]encodedRollup, len(s.Blocks)),
		maxErr: make([]float32, len(blocks)), errs: make([]error, len(blocks))}
	j.wg.Add(len(blocks))
	select {
	case w.commits <- j:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.mu.Lock()
	w.accepted++
	w.mu.Unlock()
	for i := range blocks {
		w.tasks <- task{j, i}
	}
	return nil
}

func (w *Writer) encodeLoop() {
	defer w.workers.Done()
	for t := range w.tasks {
		nb := t.j.blocks[t.i]
		data, maxErr, err := codec.EncodeReport(nb.Block, w.opts.Encoding)
		if err != nil {
			err = fmt.Errorf("encode %s@%d %s: %w", w.run, t.j.snap.Step, nb.Layer, err)
		}
		if err == nil && t.i < len(t.j.rollups) && w.opts.Rollups != RollupsNone {
			// The rollup of what is stored: of the decoded block when the
			// encoding is lossy.
			b := nb.Block
			if w.opts.Encoding != codec.Float32 {
				b, err = codec.Decode(data)
			}
			if err == nil {
				t.j.rollups[t.i], err = w.opts.Rollups.encodeRollup(nb.Layer, b)
			}
			if err != nil {
				err = fmt.Errorf("rollup %s@%d %s: %w", w.run, t.j.snap.Step, nb.Layer, err)
			}
		}
		t.j.encoded[t.i] = db.LayerBlock{Layer: nb.Layer, Data: data}
		t.j.errs[t.i] = err
		t.j.maxErr[t.i] = maxErr
		t.j.wg.Done()
	}
}

func (w *Writer) commitLoop() {
	defer close(w.done)
	for j := range w.commits {
		if w.beforeCommit != nil {
			w.beforeCommit()
		}
		j.wg.Wait()
		err := errors.Join(j.errs...)
		w.mu.Lock()
		failed := w.err != nil
		w.mu.Unlock()
		var st Stats
		var s *db.Snapshot
		if err == nil && !failed {
			nb := len(j.snap.Blocks)
			s = &db.Snapshot{Step: j.snap.Step, N: j.snap.Blocks[0].Block.N(), Time: j.snap.Time, Population: j.snap.Population,
				Blocks: j.encoded[:nb], Anchor: j.encoded[nb:], HasAnchor: len(j.snap.Anchor) > 0, AnchorStep: j.snap.AnchorStep}
			if w.opts.Rollups != RollupsNone {
				blockBytes := int64(0)
				for _, b := range s.Blocks {
					blockBytes += int64(len(b.Data))
				}
				s.Rollups = w.opts.Rollups.keep(j.rollups, blockBytes)
			}
			if j.snap.Attributes != nil {
				s.Attributes, err = codec.EncodeAttributes(j.snap.Attributes)
			}
		}
		if err == nil && !failed {
			err = w.d.PutSnapshot(w.run, s)
			st.Snapshots, st.Examples = 1, s.N
			for _, r := range s.Rollups {
				st.RollupBytes += int64(len(r.Data))
			}
			for i, b := range j.encoded {
				st.StoredBytes += int64(len(b.Data))
				blk := j.blocks[i].Block
				st.InputBytes += 4 * int64(blk.StoredValues())
				st.MaxAbsErr = max(st.MaxAbsErr, j.maxErr[i])
			}
		}
		w.mu.Lock()
		if err != nil && w.err == nil {
			w.err = fmt.Errorf("commit snapshot %s@%d: %w", w.run, j.snap.Step, err)
		}
		if err == nil && !failed {
			w.stats.Snapshots += st.Snapshots
			w.stats.Examples += st.Examples
			w.stats.InputBytes += st.InputBytes
			w.stats.StoredBytes += st.StoredBytes
			w.stats.RollupBytes += st.RollupBytes
			w.stats.MaxAbsErr = max(w.stats.MaxAbsErr, st.MaxAbsErr)
		}
		w.committed++
		w.cond.Broadcast()
		w.mu.Unlock()
		j.snap, j.blocks = nil, nil // let the caller's blocks go
	}
}

// Flush waits until every accepted snapshot is committed, then makes the
// store durable: after Flush returns nil, those snapshots survive a crash.
func (w *Writer) Flush() error {
	w.mu.Lock()
	for w.committed < w.accepted {
		w.cond.Wait()
	}
	err := w.err
	w.mu.Unlock()
	if err != nil {
		return err
	}
	return w.d.Sync()
}

// Stats returns what has been committed so far.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Close flushes and stops the writer. The store stays open.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	w.closed = true
	w.mu.Unlock()
	// Writes already past the closed check finish handing over their jobs
	// before the channels close.
	w.sending.Lock()
	defer w.sending.Unlock()
	err := w.Flush()
	close(w.commits)
	<-w.done
	close(w.tasks)
	w.workers.Wait()
	return err
}

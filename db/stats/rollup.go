package stats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// Rollup is one layer's sufficient statistics in one snapshot: enough to
// answer every moment statistic (variance, nvar, gns, snr, norms, the
// norm/inner/orthogonality tests, pooled windows) for any scope of layers
// without reading the layer's block. Per-layer sums alone do not add up
// across layers for per-example quantities, so it keeps, per example,
// |g_i|² and g_i·μ (μ this layer's mean): summed over a scope's layers they
// give the scope's. The per-coordinate vectors (16 bytes a parameter) are
// optional: nvar, snr and pooled windows need them.
type Rollup struct {
	N, D int
	// SumSqNorm is Σ_i |g_i|², SumNormSq |Σ_i g_i|².
	SumSqNorm, SumNormSq float64
	// SqNorms and Inner are |g_i|² and g_i·μ per example.
	SqNorms, Inner []float64
	// Sum and SumSq are Σ_i g_ij and Σ_i g_ij² per coordinate (nil
	// without vectors).
	Sum, SumSq []float64
	// NonFinite says a gradient value is NaN or Inf, first in example row
	// BadRow.
	NonFinite bool
	BadRow    int
}

// NewRollup computes a layer's rollup, with the per-coordinate vectors
// when vectors is set, through Compute: a query answered from rollups
// computes exactly what the block path does.
func NewRollup(l Layer, vectors bool) (*Rollup, error) {
	m, err := Compute([]Layer{l}, 0, Need{Coords: vectors, Inner: true, Mean: true})
	if err != nil {
		return nil, err
	}
	r := &Rollup{N: m.N, D: m.D, SumSqNorm: m.SumSqNorm, SumNormSq: m.SumNormSq, SqNorms: m.SqNorms, Inner: m.Inner,
		NonFinite: m.NonFinite}
	if m.NonFinite {
		r.BadRow, _ = l.Block.NonFinite()
	}
	if vectors {
		r.Sum, r.SumSq = m.Sum, m.SumSq
	}
	return r, nil
}

// HasVectors reports whether the rollup holds the per-coordinate vectors.
func (r *Rollup) HasVectors() bool { return r.Sum != nil }

// Bytes returns the size of the rollup's encoding.
func (r *Rollup) Bytes() int { return len(r.Marshal()) }

// rollupVersion is the first byte of an encoded rollup.
const rollupVersion = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptRollup is wrapped by every UnmarshalRollup error.
var ErrCorruptRollup = errors.New("corrupt rollup")

// Marshal encodes the rollup:
//
//	version 1 B | flags 1 B (bit 0: vectors, bit 1: non-finite) |
//	N uvarint | D uvarint | bad row uvarint | Σ|g_i|² f64 | |Σg_i|² f64 |
//	N × (|g_i|², g_i·μ) f64 | [D × Σg_ij f64 | D × Σg_ij² f64] | CRC32C u32
//
// all little-endian; the checksum covers everything before it.
func (r *Rollup) Marshal() []byte {
	var flags byte
	if r.HasVectors() {
		flags |= 1
	}
	if r.NonFinite {
		flags |= 2
	}
	v := make([]byte, 0, 32+16*r.N+16*len(r.Sum))
	v = append(v, rollupVersion, flags)
	v = binary.AppendUvarint(v, uint64(r.N))
	v = binary.AppendUvarint(v, uint64(r.D))
	v = binary.AppendUvarint(v, uint64(r.BadRow))
	f := func(x float64) { v = binary.LittleEndian.AppendUint64(v, math.Float64bits(x)) }
	f(r.SumSqNorm)
	f(r.SumNormSq)
	for i := range r.N {
		f(r.SqNorms[i])
		f(r.Inner[i])
	}
	for _, x := range r.Sum {
		f(x)
	}
	for _, x := range r.SumSq {
		f(x)
	}
	return binary.LittleEndian.AppendUint32(v, crc32.Checksum(v, castagnoli))
}

// UnmarshalRollup decodes a rollup, checking its checksum and sizes; n and
// d are the snapshot's example count and the layer's parameter count.
func UnmarshalRollup(v []byte, n, d int) (*Rollup, error) {
	bad := func(what string) (*Rollup, error) { return nil, fmt.Errorf("%w: %s", ErrCorruptRollup, what) }
	if len(v) < 6 {
		return bad("truncated")
	}
	body := v[:len(v)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(v[len(v)-4:]) {
		return bad("checksum mismatch")
	}
	if body[0] != rollupVersion {
		return bad(fmt.Sprintf("version %d", body[0]))
	}
	flags := body[1]
	if flags&^3 != 0 {
		return bad(fmt.Sprintf("unknown flags %#x", flags))
	}
	body = body[2:]
	var vals [3]uint64
	for i := range vals {
		x, k := binary.Uvarint(body)
		if k <= 0 {
			return bad("header")
		}
		vals[i], body = x, body[k:]
	}
	if vals[0] != uint64(n) || vals[1] != uint64(d) {
		return bad(fmt.Sprintf("shape %d x %d, the snapshot and schema say %d x %d", vals[0], vals[1], n, d))
	}
	want := 16 + 16*n
	if flags&1 != 0 {
		want += 16 * d
	}
	if len(body) != want {
		return bad(fmt.Sprintf("%d bytes of values, want %d", len(body), want))
	}
	floats := func(n int) []float64 {
		out := make([]float64, n)
		for j := range out {
			out[j] = math.Float64frombits(binary.LittleEndian.Uint64(body[8*j:]))
		}
		body = body[8*n:]
		return out
	}
	r := &Rollup{N: n, D: d, NonFinite: flags&2 != 0, BadRow: int(vals[2])}
	head := floats(2)
	r.SumSqNorm, r.SumNormSq = head[0], head[1]
	pairs := floats(2 * n)
	r.SqNorms, r.Inner = make([]float64, n), make([]float64, n)
	for i := range n {
		r.SqNorms[i], r.Inner[i] = pairs[2*i], pairs[2*i+1]
	}
	if flags&1 != 0 {
		r.Sum = floats(d)
		r.SumSq = floats(d)
	}
	return r, nil
}

// LayerRollup is one layer's rollup, named, in a scope.
type LayerRollup struct {
	Name   string
	Rollup *Rollup
}

// FromRollups returns the moments of a scope of layers from their rollups,
// as Compute would from their blocks; step only labels warnings. It fails
// with ErrNoCoords when need asks for per-coordinate moments or the summed
// gradient and a rollup has no vectors.
func FromRollups(rs []LayerRollup, step int64, need Need) (*Moments, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("moments from rollups: no layers in scope")
	}
	n := rs[0].Rollup.N
	keepSum := need.Mean || need.Coords
	m := &Moments{N: n, SqNorms: make([]float64, n)}
	d := 0
	for _, lr := range rs {
		d += lr.Rollup.D
	}
	if keepSum {
		m.Sum = make([]float64, 0, d)
	}
	if need.Coords {
		m.SumSq = make([]float64, 0, d)
	}
	if need.Inner {
		m.Inner = make([]float64, n)
	}
	for _, lr := range rs {
		r := lr.Rollup
		if r.N != n {
			return nil, fmt.Errorf("moments from rollups: layer %s has %d examples, %s has %d", lr.Name, r.N, rs[0].Name, n)
		}
		if keepSum && !r.HasVectors() {
			return nil, fmt.Errorf("layer %s: %w (its rollup has no vectors)", lr.Name, ErrNoCoords)
		}
		m.D += r.D
		m.SumNormSq += r.SumNormSq
		if r.NonFinite {
			m.NonFinite = true
			m.Warnings = append(m.Warnings, fmt.Sprintf("layer %s at step %d: NaN or Inf gradient (example row %d)", lr.Name, step, r.BadRow))
		}
		for i := range n {
			m.SqNorms[i] += r.SqNorms[i]
			if need.Inner {
				m.Inner[i] += r.Inner[i]
			}
		}
		if keepSum {
			m.Sum = append(m.Sum, r.Sum...)
		}
		if need.Coords {
			m.SumSq = append(m.SumSq, r.SumSq...)
		}
	}
	for _, v := range m.SqNorms {
		m.SumSqNorm += v
		m.SumNorm += math.Sqrt(v)
	}
	return m, nil
}

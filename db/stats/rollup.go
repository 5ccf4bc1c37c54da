package stats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
)

// Rollup is one layer's sufficient statistics in one snapshot: enough to
// answer every moment statistic (variance, nvar, gns, snr, norms, the
// norm/inner/orthogonality tests, pooled windows) for any scope of layers
// without reading the layer's block. Per-layer sums alone do not add up
// across layers for per-example quantities, so it keeps, per example,
// |g_i|² and g_i·μ (μ this layer's mean): summed over a scope's layers they
// give the scope's. The per-coordinate vectors are optional: nvar, snr and
// pooled windows need them (see Vectors).
type Rollup struct {
	N, D int
	// SumSqNorm is Σ_i |g_i|², SumNormSq |Σ_i g_i|².
	SumSqNorm, SumNormSq float64
	// SqNorms and Inner are |g_i|² and g_i·μ per example.
	SqNorms, Inner []float64
	// Sum and SumSq are Σ_i g_ij and Σ_i g_ij² per coordinate, as
	// float64 vectors (nil without them, and for float32 vectors: see
	// Sums).
	Sum, SumSq []float64
	// NonFinite says a gradient value is NaN or Inf, first in example row
	// BadRow.
	NonFinite bool
	BadRow    int
	// mean and sd are the float32 vectors of a Float32Vectors rollup (nil
	// otherwise): what Marshal stores. UnmarshalRollup keeps them encoded
	// in packed until they are first needed.
	mean, sd []float32
	packed   []byte
}

// Vectors says which per-coordinate vectors a rollup keeps.
type Vectors int

const (
	// NoVectors keeps the scalars and the per-example table only.
	NoVectors Vectors = iota
	// Float32Vectors keeps each coordinate's mean μ_j and standard
	// deviation s_j = sqrt(Σ_i (g_ij − μ_j)² / N), each rounded to float32
	// (a relative error of at most 2⁻²⁴ each): 8 bytes a live
	// coordinate, and a bit for a zero one (dead units, always-zero
	// inputs). Where a value does not fit float32 (beyond its
	// range, or nonzero below its smallest normal) the layer keeps
	// Float64Vectors instead, so rounding never loses more than 2⁻²⁴.
	Float32Vectors
	// Float64Vectors keeps Σ_i g_ij and Σ_i g_ij² as computed, 16 bytes a
	// parameter: exact, for the Parquet export and stores that ask.
	Float64Vectors
)

// NewRollup computes a layer's rollup, with the per-coordinate vectors v,
// through Compute: a query answered from rollups computes exactly what the
// block path does, up to the rounding of Float32Vectors.
func NewRollup(l Layer, v Vectors) (*Rollup, error) {
	m, err := Compute([]Layer{l}, 0, Need{Coords: v != NoVectors, Inner: true, Mean: true})
	if err != nil {
		return nil, err
	}
	r := &Rollup{N: m.N, D: m.D, SumSqNorm: m.SumSqNorm, SumNormSq: m.SumNormSq, SqNorms: m.SqNorms, Inner: m.Inner,
		NonFinite: m.NonFinite}
	if m.NonFinite {
		r.BadRow, _ = l.Block.NonFinite()
	}
	if v != NoVectors {
		r.Sum, r.SumSq = m.Sum, m.SumSq
	}
	if v == Float32Vectors {
		r.round()
	}
	return r, nil
}

// round replaces the float64 vectors by their float32 (mean, sd) form and
// what it gives back, unless a value does not fit float32.
func (r *Rollup) round() {
	n := float64(r.N)
	if r.N == 0 {
		return
	}
	mean, sd := make([]float32, r.D), make([]float32, r.D)
	for j, s := range r.Sum {
		mu := s / n
		m2 := max(r.SumSq[j]/n-mu*mu, 0)
		a, b := float32(mu), float32(math.Sqrt(m2))
		if !fitsFloat32(mu, a) || !fitsFloat32(math.Sqrt(m2), b) {
			return
		}
		mean[j], sd[j] = a, b
	}
	r.mean, r.sd = mean, sd
	r.Sum, r.SumSq = nil, nil
}

// fitsFloat32 says whether x rounds to f with a relative error of at
// most 2⁻²⁴: zero, NaN and ±Inf map to themselves; a finite x must stay
// finite and normal.
func fitsFloat32(x float64, f float32) bool {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return true
	}
	a := math.Abs(float64(f))
	return !math.IsInf(float64(f), 0) && a >= 0x1p-126
}

// Sums returns Σ_i g_ij and Σ_i g_ij² per coordinate (nil without
// vectors): the float64 vectors, or what the float32 ones give back.
func (r *Rollup) Sums() (sum, sumSq []float64, err error) {
	if !r.Rounded() {
		return r.Sum, r.SumSq, nil
	}
	sum, sumSq = make([]float64, r.D), make([]float64, r.D)
	return sum, sumSq, r.sumsInto(sum, sumSq)
}

// unpack decodes the float32 vectors that UnmarshalRollup kept packed
// (checked there: see packVectors).
func (r *Rollup) unpack() error {
	if r.packed == nil {
		return nil
	}
	mean, sd, err := unpackVectors(r.packed, r.D)
	if err != nil {
		return err
	}
	r.mean, r.sd, r.packed = mean, sd, nil
	return nil
}

// packVectors encodes float32 means and sds: a bitmap of D bits (LSB
// first; set for a coordinate whose mean or sd is nonzero, so that dead
// units and always-zero inputs take a bit), then the set coordinates'
// means, then their sds, float32 little-endian. No compression: the
// mantissas are noise, and a query reads the values at memory speed.
func packVectors(mean, sd []float32) []byte {
	d := len(mean)
	bm := make([]byte, (d+7)/8)
	nnz := 0
	for j := range mean {
		if math.Float32bits(mean[j])|math.Float32bits(sd[j]) != 0 {
			bm[j/8] |= 1 << (j % 8)
			nnz++
		}
	}
	out := make([]byte, len(bm), len(bm)+8*nnz)
	copy(out, bm)
	for _, v := range [][]float32{mean, sd} {
		for j, x := range v {
			if bm[j/8]&(1<<(j%8)) != 0 {
				out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
			}
		}
	}
	return out
}

// checkPacked checks packed vectors' length against their bitmap.
func checkPacked(p []byte, d int) error {
	nb := (d + 7) / 8
	if len(p) < nb {
		return fmt.Errorf("%w: vectors: %d bytes, want at least the %d of the bitmap", ErrCorruptRollup, len(p), nb)
	}
	if d%8 != 0 && p[nb-1]>>(d%8) != 0 {
		return fmt.Errorf("%w: vectors: bitmap bits beyond %d coordinates", ErrCorruptRollup, d)
	}
	nnz := 0
	for _, b := range p[:nb] {
		nnz += bits.OnesCount8(b)
	}
	if len(p) != nb+8*nnz {
		return fmt.Errorf("%w: vectors: %d bytes, the bitmap says %d", ErrCorruptRollup, len(p), nb+8*nnz)
	}
	return nil
}

// packedValues splits checked packed vectors into their bitmap, means and
// sds (the set coordinates', float32 little-endian).
func packedValues(p []byte, d int) (bm, means, sds []byte) {
	nb := (d + 7) / 8
	nnz := (len(p) - nb) / 8
	return p[:nb], p[nb : nb+4*nnz], p[nb+4*nnz:]
}

// packedNVarSum returns Σ_j v_j / (μ_j² + v_j), v_j = s_j²·invB, over the
// nonzero coordinates of checked packed vectors, reading them in place.
func packedNVarSum(p []byte, d int, invB float64) float64 {
	_, ms, ss := packedValues(p, d)
	sum := 0.0
	for k := 0; k+4 <= len(ms); k += 4 {
		mu := float64(math.Float32frombits(binary.LittleEndian.Uint32(ms[k:])))
		s := float64(math.Float32frombits(binary.LittleEndian.Uint32(ss[k:])))
		v := s * s * invB
		if den := mu*mu + v; den > 0 {
			sum += v / den
		}
	}
	return sum
}

// packedEach calls f with each nonzero coordinate's mean and sd of checked
// packed vectors and returns the number of zero coordinates.
func packedEach(p []byte, d int, f func(mu, s float64)) (zeros int) {
	_, ms, ss := packedValues(p, d)
	for k := 0; k+4 <= len(ms); k += 4 {
		f(float64(math.Float32frombits(binary.LittleEndian.Uint32(ms[k:]))),
			float64(math.Float32frombits(binary.LittleEndian.Uint32(ss[k:]))))
	}
	return d - len(ms)/4
}

// unpackVectors decodes packVectors' output (checked by checkPacked).
func unpackVectors(p []byte, d int) (mean, sd []float32, err error) {
	if err := checkPacked(p, d); err != nil {
		return nil, nil, err
	}
	nb := (d + 7) / 8
	nnz := (len(p) - nb) / 8
	bm, ms, ss := p[:nb], p[nb:nb+4*nnz], p[nb+4*nnz:]
	mean, sd = make([]float32, d), make([]float32, d)
	k := 0
	for i, b := range bm {
		for ; b != 0; b &= b - 1 {
			j := 8*i + bits.TrailingZeros8(b)
			mean[j] = math.Float32frombits(binary.LittleEndian.Uint32(ms[4*k:]))
			sd[j] = math.Float32frombits(binary.LittleEndian.Uint32(ss[4*k:]))
			k++
		}
	}
	return mean, sd, nil
}

// sumsInto writes Sums into sum and sumSq (D values each).
func (r *Rollup) sumsInto(sum, sumSq []float64) error {
	if !r.Rounded() {
		copy(sum, r.Sum)
		copy(sumSq, r.SumSq)
		return nil
	}
	if err := r.unpack(); err != nil {
		return err
	}
	n := float64(r.N)
	sum, sumSq = sum[:len(r.mean)], sumSq[:len(r.mean)]
	for j, m := range r.mean {
		mu, s := float64(m), float64(r.sd[j])
		sum[j] = n * mu
		sumSq[j] = n * (s*s + mu*mu)
	}
	return nil
}

// HasVectors reports whether the rollup holds the per-coordinate vectors.
func (r *Rollup) HasVectors() bool { return r.Sum != nil || r.Rounded() }

// Rounded reports whether the vectors are the float32 form.
func (r *Rollup) Rounded() bool { return r.mean != nil || r.packed != nil }

// Vectors returns the vectors the rollup holds.
func (r *Rollup) Vectors() Vectors {
	switch {
	case r.Rounded():
		return Float32Vectors
	case r.HasVectors():
		return Float64Vectors
	}
	return NoVectors
}

// WithoutVectors returns the rollup without its per-coordinate vectors.
func (r *Rollup) WithoutVectors() *Rollup {
	c := *r
	c.Sum, c.SumSq, c.mean, c.sd, c.packed = nil, nil, nil, nil, nil
	return &c
}

// Bytes returns the size of the rollup's encoding.
func (r *Rollup) Bytes() int { return len(r.Marshal()) }

// rollupVersion is the first byte of an encoded rollup.
const rollupVersion = 1

// Rollup flags.
const (
	flagFloat64Vectors = 1 << 0
	flagNonFinite      = 1 << 1
	flagFloat32Vectors = 1 << 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptRollup is wrapped by every UnmarshalRollup error.
var ErrCorruptRollup = errors.New("corrupt rollup")

// Marshal encodes the rollup:
//
//	version 1 B | flags 1 B (bit 0: float64 vectors, bit 1: non-finite,
//	bit 2: float32 vectors) | N uvarint | D uvarint | bad row uvarint |
//	Σ|g_i|² f64 | |Σg_i|² f64 | N × (|g_i|², g_i·μ) f64 |
//	[bit 0: D × Σg_ij f64, D × Σg_ij² f64 | bit 2: a bitmap of D bits
//	(coordinates with a nonzero mean or sd), then their means μ_j and
//	their sds s_j, f32] | CRC32C u32
//
// all little-endian; the checksum covers everything before it.
func (r *Rollup) Marshal() []byte {
	var flags byte
	var vec []byte
	switch {
	case r.packed != nil:
		flags |= flagFloat32Vectors
		vec = r.packed
	case r.Rounded():
		flags |= flagFloat32Vectors
		vec = packVectors(r.mean, r.sd)
	case r.HasVectors():
		flags |= flagFloat64Vectors
	}
	if r.NonFinite {
		flags |= flagNonFinite
	}
	v := make([]byte, 0, 32+16*r.N+16*len(r.Sum)*int(flags&flagFloat64Vectors)+len(vec))
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
	if flags&flagFloat64Vectors != 0 {
		for _, x := range r.Sum {
			f(x)
		}
		for _, x := range r.SumSq {
			f(x)
		}
	}
	v = append(v, vec...)
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
	if flags&^(flagFloat64Vectors|flagNonFinite|flagFloat32Vectors) != 0 || flags&flagFloat64Vectors != 0 && flags&flagFloat32Vectors != 0 {
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
	switch {
	case flags&flagFloat64Vectors != 0:
		want += 16 * d
		if len(body) != want {
			return bad(fmt.Sprintf("%d bytes of values, want %d", len(body), want))
		}
	case flags&flagFloat32Vectors != 0:
		if len(body) < want {
			return bad(fmt.Sprintf("%d bytes of values, want more than %d", len(body), want))
		}
	default:
		if len(body) != want {
			return bad(fmt.Sprintf("%d bytes of values, want %d", len(body), want))
		}
	}
	floats := func(n int) []float64 {
		out := make([]float64, n)
		for j := range out {
			out[j] = math.Float64frombits(binary.LittleEndian.Uint64(body[8*j:]))
		}
		body = body[8*n:]
		return out
	}
	r := &Rollup{N: n, D: d, NonFinite: flags&flagNonFinite != 0, BadRow: int(vals[2])}
	head := floats(2)
	r.SumSqNorm, r.SumNormSq = head[0], head[1]
	pairs := floats(2 * n)
	r.SqNorms, r.Inner = make([]float64, n), make([]float64, n)
	for i := range n {
		r.SqNorms[i], r.Inner[i] = pairs[2*i], pairs[2*i+1]
	}
	switch {
	case flags&flagFloat64Vectors != 0:
		r.Sum = floats(d)
		r.SumSq = floats(d)
	case flags&flagFloat32Vectors != 0:
		// Checked now (sizes; the checksum above covers the values);
		// decoded when first needed: a query of scalar statistics does
		// not pay for them.
		if err := checkPacked(body, d); err != nil {
			return nil, err
		}
		r.packed = body
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
	// Per-snapshot coordinate statistics read float32 vectors as they are;
	// pooling (Need.Mean) and float64 vectors need the float64 sums.
	keepRounded := need.Coords && !need.Mean
	for _, lr := range rs {
		keepRounded = keepRounded && lr.Rollup.Rounded()
	}
	if keepRounded {
		keepSum = false
		for _, lr := range rs {
			m.rounded = append(m.rounded, lr.Rollup)
		}
	}
	if keepSum {
		m.Sum = make([]float64, d)
		// SumSq comes with Sum (float32 vectors give both at once); it
		// is dropped below when not needed.
		m.SumSq = make([]float64, d)
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
			if err := r.sumsInto(m.Sum[m.D-r.D:m.D], m.SumSq[m.D-r.D:m.D]); err != nil {
				return nil, fmt.Errorf("layer %s: %w", lr.Name, err)
			}
		}
	}
	if !need.Coords {
		m.SumSq = nil
	}
	for _, v := range m.SqNorms {
		m.SumSqNorm += v
		m.SumNorm += math.Sqrt(v)
	}
	return m, nil
}

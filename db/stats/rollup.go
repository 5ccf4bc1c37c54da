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
	// vec holds float32 vectors as stored (nil otherwise).
	vec *ratios
	// meanSD says Sum and SumSq come from float32 (μ_j, s_j) vectors, the
	// encoding before ratios.
	meanSD bool
}

// Vectors says which per-coordinate vectors a rollup keeps.
type Vectors int

const (
	// NoVectors keeps the scalars and the per-example table only.
	NoVectors Vectors = iota
	// Float32Vectors keeps, for each coordinate with a nonzero mean μ_j
	// or standard deviation s_j = sqrt(Σ_i (g_ij − μ_j)² / N), the ratio
	// z_j = μ_j/s_j and s_j (μ_j where s_j = 0), each rounded to float32
	// (a relative error of at most 2⁻²⁴ each): 8 bytes a live
	// coordinate, and a bit for a zero one (dead units, always-zero
	// inputs). nvar and snr need only the z_j (see ratios). Where a value
	// does not fit float32 (beyond its range, or nonzero below its
	// smallest normal) the layer keeps Float64Vectors instead, so
	// rounding never loses more than 2⁻²⁴.
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

// round replaces the float64 vectors by their float32 form (ratios),
// unless a value does not fit float32 or a mean or sd is infinite.
func (r *Rollup) round() {
	if r.N == 0 {
		return
	}
	n := float64(r.N)
	bm := make([]byte, (r.D+7)/8)
	var z, w []byte
	for j, s := range r.Sum {
		mu := s / n
		sd := math.Sqrt(max(r.SumSq[j]/n-mu*mu, 0))
		if mu == 0 && sd == 0 {
			continue
		}
		zj, wj := mu/sd, sd
		if sd == 0 {
			zj, wj = math.Copysign(math.Inf(1), mu), mu
		}
		z32, w32 := float32(zj), float32(wj)
		if math.IsInf(mu, 0) || math.IsInf(sd, 0) || !fitsFloat32(zj, z32) || !fitsFloat32(wj, w32) {
			return
		}
		bm[j/8] |= 1 << (j % 8)
		z = binary.LittleEndian.AppendUint32(z, math.Float32bits(z32))
		w = binary.LittleEndian.AppendUint32(w, math.Float32bits(w32))
	}
	r.vec = &ratios{nnz: len(z) / 4, bitmap: bm, z: z, w: w}
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

// ratios are a rollup's float32 vectors as stored: a bitmap of D bits
// (least significant first; set for a coordinate whose mean or sd is
// nonzero, so that dead units and always-zero inputs take a bit), then,
// for the nnz set coordinates in order, z_j = μ_j/s_j (±Inf where
// s_j = 0), then w_j = s_j (μ_j where s_j = 0), float32 little-endian.
// nvar and snr need z alone, which a query of them reads without w (see
// RollupHead); w is then nil.
type ratios struct {
	nnz          int
	bitmap, z, w []byte
}

// nvarSum returns Σ_j v_j / (μ_j² + v_j) = Σ_j 1 / (B z_j² + 1), v_j =
// s_j²/B, over the set coordinates (±Inf z, a zero sd, gives 0).
func (v *ratios) nvarSum(b float64) float64 {
	var s0, s1 float64 // two sums: the additions need not wait on each other
	z := v.z
	k := 0
	for ; k+8 <= len(z); k += 8 {
		x := float64(math.Float32frombits(binary.LittleEndian.Uint32(z[k:])))
		y := float64(math.Float32frombits(binary.LittleEndian.Uint32(z[k+4:])))
		s0 += 1 / (b*x*x + 1)
		s1 += 1 / (b*y*y + 1)
	}
	if k < len(z) {
		x := float64(math.Float32frombits(binary.LittleEndian.Uint32(z[k:])))
		s0 += 1 / (b*x*x + 1)
	}
	return s0 + s1
}

// snrSum returns Σ_j ln((μ_j² + v_j) / v_j) = Σ_j ln(1 + B z_j²) over the
// set coordinates with v_j > 0 (finite z).
func (v *ratios) snrSum(b float64) float64 {
	sum := 0.0
	for k := 0; k+4 <= len(v.z); k += 4 {
		x := float64(math.Float32frombits(binary.LittleEndian.Uint32(v.z[k:])))
		if !math.IsInf(x, 0) {
			sum += math.Log1p(b * x * x)
		}
	}
	return sum
}

// sumsInto writes Σ_i g_ij = N·μ_j and Σ_i g_ij² = N·(s_j² + μ_j²) into
// sum and sumSq (D values each), from z and w.
func (v *ratios) sumsInto(n int, sum, sumSq []float64) error {
	if v.w == nil {
		return errNoSds
	}
	clear(sum)
	clear(sumSq)
	nf := float64(n)
	k := 0
	for i, b := range v.bitmap {
		for ; b != 0; b &= b - 1 {
			j := 8*i + bits.TrailingZeros8(b)
			z := float64(math.Float32frombits(binary.LittleEndian.Uint32(v.z[4*k:])))
			s := float64(math.Float32frombits(binary.LittleEndian.Uint32(v.w[4*k:])))
			mu := z * s
			if math.IsInf(z, 0) {
				mu, s = s, 0
			}
			sum[j] = nf * mu
			sumSq[j] = nf * (s*s + mu*mu)
			k++
		}
	}
	return nil
}

// errNoSds is sumsInto's error for a rollup read without its sds (its
// head only): a caller asked for less than it then needed.
var errNoSds = errors.New("rollup read without its sds (RollupHead)")

// Sums returns Σ_i g_ij and Σ_i g_ij² per coordinate (nil without
// vectors): the float64 vectors, or what the float32 ones give back.
func (r *Rollup) Sums() (sum, sumSq []float64, err error) {
	if r.vec == nil {
		return r.Sum, r.SumSq, nil
	}
	sum, sumSq = make([]float64, r.D), make([]float64, r.D)
	return sum, sumSq, r.vec.sumsInto(r.N, sum, sumSq)
}

// sumsInto writes Sums into sum and sumSq (D values each).
func (r *Rollup) sumsInto(sum, sumSq []float64) error {
	if r.vec == nil {
		copy(sum, r.Sum)
		copy(sumSq, r.SumSq)
		return nil
	}
	return r.vec.sumsInto(r.N, sum, sumSq)
}

// HasVectors reports whether the rollup holds the per-coordinate vectors.
func (r *Rollup) HasVectors() bool { return r.Sum != nil || r.vec != nil }

// Vectors returns the vectors the rollup holds.
func (r *Rollup) Vectors() Vectors {
	switch {
	case r.vec != nil || r.meanSD:
		return Float32Vectors
	case r.Sum != nil:
		return Float64Vectors
	}
	return NoVectors
}

// WithoutVectors returns the rollup without its per-coordinate vectors.
func (r *Rollup) WithoutVectors() *Rollup {
	c := *r
	c.Sum, c.SumSq, c.vec, c.meanSD = nil, nil, nil, false
	return &c
}

// Bytes returns the size of the rollup's encoding.
func (r *Rollup) Bytes() int { return len(r.Marshal()) }

// Recompute returns block l's rollup with the vectors and rounding of r
// (a stored rollup), for gvdb check to compare r with.
func Recompute(l Layer, r *Rollup) (*Rollup, error) {
	if !r.meanSD {
		return NewRollup(l, r.Vectors())
	}
	c, err := NewRollup(l, Float64Vectors)
	if err != nil {
		return nil, err
	}
	n := float64(c.N)
	for j, s := range c.Sum {
		mu := float64(float32(s / n))
		sd := float64(float32(math.Sqrt(max(c.SumSq[j]/n-s/n*(s/n), 0))))
		c.Sum[j], c.SumSq[j] = n*mu, n*(sd*sd+mu*mu)
	}
	c.meanSD = true
	return c, nil
}

// rollupVersion is the first byte of an encoded rollup.
const rollupVersion = 1

// Rollup flags.
const (
	flagFloat64Vectors = 1 << 0
	flagNonFinite      = 1 << 1
	// flagMeanSD marks float32 (μ_j, s_j) vectors, written before the
	// ratios and still read (as float64 sums).
	flagMeanSD = 1 << 2
	flagRatios = 1 << 3
	knownFlags = flagFloat64Vectors | flagNonFinite | flagMeanSD | flagRatios
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptRollup is wrapped by every UnmarshalRollup error.
var ErrCorruptRollup = errors.New("corrupt rollup")

// Marshal encodes the rollup:
//
//	version 1 B | flags 1 B (bit 0: float64 vectors, bit 1: non-finite,
//	bit 3: float32 ratios) | N uvarint | D uvarint | bad row uvarint |
//	[bit 3: nnz uvarint] | Σ|g_i|² f64 | |Σg_i|² f64 |
//	N × (|g_i|², g_i·μ) f64 | vectors | CRC32C u32
//
// all little-endian. The vectors are, for bit 0, D × Σg_ij f64 then D ×
// Σg_ij² f64, and the checksum covers everything before it. For bit 3
// (see ratios) they are the bitmap, the z_j, a CRC32C u32 of everything
// before it (the head: all nvar and snr need), then the w_j; the last
// checksum then covers the w_j alone.
func (r *Rollup) Marshal() []byte {
	var flags byte
	switch {
	case r.vec != nil:
		flags |= flagRatios
	case r.Sum != nil:
		flags |= flagFloat64Vectors
	}
	if r.NonFinite {
		flags |= flagNonFinite
	}
	size := 40 + 16*r.N + 16*len(r.Sum)
	if r.vec != nil {
		size += len(r.vec.bitmap) + 8*r.vec.nnz
	}
	v := make([]byte, 0, size)
	v = append(v, rollupVersion, flags)
	v = binary.AppendUvarint(v, uint64(r.N))
	v = binary.AppendUvarint(v, uint64(r.D))
	v = binary.AppendUvarint(v, uint64(r.BadRow))
	if r.vec != nil {
		v = binary.AppendUvarint(v, uint64(r.vec.nnz))
	}
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
	tail := 0
	if r.vec != nil {
		v = append(v, r.vec.bitmap...)
		v = append(v, r.vec.z...)
		v = binary.LittleEndian.AppendUint32(v, crc32.Checksum(v, castagnoli))
		tail = len(v)
		v = append(v, r.vec.w...)
	}
	return binary.LittleEndian.AppendUint32(v, crc32.Checksum(v[tail:], castagnoli))
}

// rollupHeader is an encoded rollup's header.
type rollupHeader struct {
	flags             byte
	n, d, badRow, nnz uint64
	size              int // its bytes
	// Ratios: where the per-example values end, and the head.
	valuesEnd, headEnd int
}

// parseRollupHeader reads an encoded rollup's header and, for ratios,
// locates the head (the sizes bounded by len(v), so that nothing
// overflows; the caller checks the shape and the length).
func parseRollupHeader(v []byte) (rollupHeader, error) {
	var h rollupHeader
	bad := func(what string) (rollupHeader, error) { return h, fmt.Errorf("%w: %s", ErrCorruptRollup, what) }
	if len(v) < 6 {
		return bad("truncated")
	}
	if v[0] != rollupVersion {
		return bad(fmt.Sprintf("version %d", v[0]))
	}
	h.flags = v[1]
	if h.flags&^knownFlags != 0 || bits.OnesCount8(h.flags&(flagFloat64Vectors|flagMeanSD|flagRatios)) > 1 {
		return bad(fmt.Sprintf("unknown flags %#x", h.flags))
	}
	vals := []*uint64{&h.n, &h.d, &h.badRow}
	if h.flags&flagRatios != 0 {
		vals = append(vals, &h.nnz)
	}
	h.size = 2
	for _, p := range vals {
		x, k := binary.Uvarint(v[h.size:])
		if k <= 0 {
			return bad("header")
		}
		*p, h.size = x, h.size+k
	}
	if h.flags&flagRatios != 0 {
		if h.n > uint64(len(v)) || h.d > 8*uint64(len(v)) || h.nnz > h.d {
			return bad(fmt.Sprintf("%d examples, %d coordinates (%d nonzero) in %d bytes", h.n, h.d, h.nnz, len(v)))
		}
		h.valuesEnd = h.size + 16 + 16*int(h.n)
		h.headEnd = h.valuesEnd + (int(h.d)+7)/8 + 4*int(h.nnz) + 4
	}
	return h, nil
}

// RollupHead returns how many leading bytes of an encoded rollup v hold
// everything but its float32 sds: all that nvar, snr and the scalar
// statistics need of float32 vectors, checkable alone (about half the
// bytes). It is len(v) for the other encodings and for what it cannot
// parse (UnmarshalRollup then says what is wrong).
func RollupHead(v []byte) int {
	h, err := parseRollupHeader(v)
	if err != nil || h.flags&flagRatios == 0 {
		return len(v)
	}
	return min(h.headEnd, len(v))
}

// UnmarshalRollup decodes a rollup, checking its checksums and sizes; n and
// d are the snapshot's example count and the layer's parameter count. v
// may be a float32-vector rollup's head (RollupHead): the result then
// answers everything but the sums (Sums, pooling).
func UnmarshalRollup(v []byte, n, d int) (*Rollup, error) {
	bad := func(what string) (*Rollup, error) { return nil, fmt.Errorf("%w: %s", ErrCorruptRollup, what) }
	checksum := func(body, sum []byte) bool {
		return crc32.Checksum(body, castagnoli) == binary.LittleEndian.Uint32(sum)
	}
	if len(v) < 6 {
		return bad("truncated")
	}
	ratio := v[1]&flagRatios != 0
	if !ratio && !checksum(v[:len(v)-4], v[len(v)-4:]) {
		return bad("checksum mismatch")
	}
	h, err := parseRollupHeader(v)
	if err != nil {
		return nil, err
	}
	if h.n != uint64(n) || h.d != uint64(d) {
		return bad(fmt.Sprintf("shape %d x %d, the snapshot and schema say %d x %d", h.n, h.d, n, d))
	}
	body := v[h.size:]
	want := 16 + 16*n
	switch {
	case ratio:
		tail := 4*int(h.nnz) + 4
		if len(v) != h.headEnd && len(v) != h.headEnd+tail {
			return bad(fmt.Sprintf("%d bytes, want %d (head) or %d", len(v), h.headEnd, h.headEnd+tail))
		}
		if !checksum(v[:h.headEnd-4], v[h.headEnd-4:h.headEnd]) || len(v) > h.headEnd && !checksum(v[h.headEnd:len(v)-4], v[len(v)-4:]) {
			return bad("checksum mismatch")
		}
		body = v[h.size:h.valuesEnd]
	case h.flags&flagFloat64Vectors != 0:
		want += 16 * d
		fallthrough
	default:
		if len(body) < 4 {
			return bad("truncated")
		}
		body = body[:len(body)-4]
		if h.flags&flagMeanSD != 0 {
			if len(body) < want {
				return bad(fmt.Sprintf("%d bytes of values, want more than %d", len(body), want))
			}
			break
		}
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
	r := &Rollup{N: n, D: d, NonFinite: h.flags&flagNonFinite != 0, BadRow: int(h.badRow)}
	head := floats(2)
	r.SumSqNorm, r.SumNormSq = head[0], head[1]
	pairs := floats(2 * n)
	r.SqNorms, r.Inner = make([]float64, n), make([]float64, n)
	for i := range n {
		r.SqNorms[i], r.Inner[i] = pairs[2*i], pairs[2*i+1]
	}
	switch {
	case h.flags&flagFloat64Vectors != 0:
		r.Sum = floats(d)
		r.SumSq = floats(d)
	case h.flags&flagMeanSD != 0:
		if r.Sum, r.SumSq, err = meanSDSums(body, n, d); err != nil {
			return nil, err
		}
		r.meanSD = true
	case ratio:
		// Kept as stored (the checksums above cover them): nvar and snr
		// read the z_j in place.
		nb := (d + 7) / 8
		bm := v[h.valuesEnd : h.valuesEnd+nb]
		if err := checkBitmap(bm, d, int(h.nnz)); err != nil {
			return nil, err
		}
		zEnd := h.valuesEnd + nb + 4*int(h.nnz)
		r.vec = &ratios{nnz: int(h.nnz), bitmap: bm, z: v[h.valuesEnd+nb : zEnd]}
		if len(v) > h.headEnd {
			r.vec.w = v[h.headEnd : len(v)-4]
		}
	}
	return r, nil
}

// checkBitmap checks a vectors bitmap of d bits: nnz set, none beyond d.
func checkBitmap(bm []byte, d, nnz int) error {
	if d%8 != 0 && bm[len(bm)-1]>>(d%8) != 0 {
		return fmt.Errorf("%w: vectors: bitmap bits beyond %d coordinates", ErrCorruptRollup, d)
	}
	set := 0
	for _, b := range bm {
		set += bits.OnesCount8(b)
	}
	if set != nnz {
		return fmt.Errorf("%w: vectors: the bitmap sets %d coordinates, the header says %d", ErrCorruptRollup, set, nnz)
	}
	return nil
}

// meanSDSums decodes flagMeanSD vectors (a bitmap of d bits, then the set
// coordinates' μ_j, then their s_j, float32) into Σ_i g_ij = N·μ_j and
// Σ_i g_ij² = N·(s_j² + μ_j²).
func meanSDSums(p []byte, n, d int) (sum, sumSq []float64, err error) {
	nb := (d + 7) / 8
	if len(p) < nb {
		return nil, nil, fmt.Errorf("%w: vectors: %d bytes, want at least the %d of the bitmap", ErrCorruptRollup, len(p), nb)
	}
	nnz := (len(p) - nb) / 8
	if len(p) != nb+8*nnz {
		return nil, nil, fmt.Errorf("%w: vectors: %d bytes after a bitmap of %d", ErrCorruptRollup, len(p)-nb, nb)
	}
	if err := checkBitmap(p[:nb], d, nnz); err != nil {
		return nil, nil, err
	}
	ms, ss := p[nb:nb+4*nnz], p[nb+4*nnz:]
	sum, sumSq = make([]float64, d), make([]float64, d)
	nf := float64(n)
	k := 0
	for i, b := range p[:nb] {
		for ; b != 0; b &= b - 1 {
			j := 8*i + bits.TrailingZeros8(b)
			mu := float64(math.Float32frombits(binary.LittleEndian.Uint32(ms[4*k:])))
			s := float64(math.Float32frombits(binary.LittleEndian.Uint32(ss[4*k:])))
			sum[j], sumSq[j] = nf*mu, nf*(s*s+mu*mu)
			k++
		}
	}
	return sum, sumSq, nil
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
		keepRounded = keepRounded && lr.Rollup.vec != nil
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

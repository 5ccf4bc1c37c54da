package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Version is the format version byte that Encode writes and Decode accepts.
const Version = 1

// MaxBlockBytes bounds the uncompressed payload of one block (1 GiB), so
// that a corrupt header cannot make Decode allocate without limit.
const MaxBlockBytes = 1 << 30

var magic = [2]byte{'g', 'b'}

// Encoding is how a block's float values are stored.
type Encoding uint8

const (
	// Float32 stores values bit for bit (lossless; the default).
	Float32 Encoding = 1
	// Float16 rounds to IEEE binary16: relative error <= 2^-11 for values
	// in the normal range [6.1e-5, 65504]; smaller values lose precision
	// and finite values beyond 65504 are an error.
	Float16 Encoding = 2
	// BFloat16 keeps float32's range with 8 bits of precision: relative
	// error <= 2^-8.
	BFloat16 Encoding = 3
	// Int8 stores round(x/s) with one scale s = max|x|/127 per row
	// (example): absolute error <= s/2. NaN and Inf are kept exactly as
	// exceptions.
	Int8 Encoding = 4
)

var encodingNames = map[Encoding]string{Float32: "float32", Float16: "float16", BFloat16: "bfloat16", Int8: "int8"}

// String returns the encoding's name, as ParseEncoding reads it.
func (e Encoding) String() string {
	if s, ok := encodingNames[e]; ok {
		return s
	}
	return fmt.Sprintf("encoding(%d)", uint8(e))
}

// width is the number of bytes one value takes.
func (e Encoding) width() int {
	switch e {
	case Float32:
		return 4
	case Float16, BFloat16:
		return 2
	case Int8:
		return 1
	}
	return 0
}

// ParseEncoding parses an encoding name as String writes it.
func ParseEncoding(s string) (Encoding, error) {
	for e, name := range encodingNames {
		if strings.EqualFold(s, name) {
			return e, nil
		}
	}
	return 0, fmt.Errorf("unknown encoding %q (want float32, float16, bfloat16 or int8)", s)
}

const (
	compNone = 0
	compZstd = 1 // the hot stream is a zstd frame; cold is raw
	compBoth = 2 // hot and cold, concatenated, are one zstd frame
)

const (
	modePlain  = 0
	modeBitmap = 1
)

var (
	// ErrCorrupt is wrapped by every error Decode returns for bytes that
	// are not a valid block.
	ErrCorrupt = errors.New("corrupt block")
	// ErrUnrepresentable is returned by Encode when a lossy encoding cannot
	// hold a finite value (float16 beyond 65504).
	ErrUnrepresentable = errors.New("value not representable")
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// sink collects an encoded payload in two streams: hot (compressed: ids,
// bitmaps, scales and the high byte planes of values, which hold sign and
// exponent) and cold (stored as is: the low mantissa byte planes, which
// are noise that zstd cannot shrink and would only spend time on).
type sink struct{ hot, cold []byte }

// sinks recycles Encode's scratch buffers.
var sinks = sync.Pool{New: func() any { return new(sink) }}

var (
	zenc     *zstd.Encoder
	zdec     *zstd.Decoder
	zstdOnce sync.Once
)

func zstdInit() {
	zstdOnce.Do(func() {
		var err error
		zenc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
		if err != nil {
			panic(err) // static options: cannot fail
		}
		zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxBlockBytes))
		if err != nil {
			panic(err)
		}
	})
}

// Header is what the fixed part of an encoded block says about it.
type Header struct {
	Version  int
	Kind     Kind
	Encoding Encoding
	// Compressed is true when the hot stream is zstd-compressed;
	// ColdCompressed when the cold stream is too (one frame for both).
	Compressed, ColdCompressed bool
	N                          int
	T, In, Out                 int // factored blocks
	Dim                        int // dense blocks
	// MaxAbsErr is the largest absolute error the encoding introduced.
	MaxAbsErr float32
	// RawLen is the length of the compressible part of the payload before
	// compression, ColdLen that of the part stored as is; Len the length
	// of the whole encoded block.
	RawLen, ColdLen, Len int
}

// Params returns the number of parameters of one per-example gradient.
func (h Header) Params() int {
	if h.Kind == Factored {
		return h.In * h.Out
	}
	return h.Dim
}

// Float32Bytes returns the size of the block's stored values as plain
// float32 (its factors or rows), the baseline for a compression ratio.
func (h Header) Float32Bytes() int {
	if h.Kind == Factored {
		return 4 * h.N * h.T * (h.In + h.Out)
	}
	return 4 * h.N * h.Dim
}

// Encode encodes b with the given value encoding.
func Encode(b *Block, enc Encoding) ([]byte, error) {
	data, _, err := encode(b, enc)
	return data, err
}

// EncodeReport is Encode that also returns the largest absolute error the
// encoding introduced (0 for Float32).
func EncodeReport(b *Block, enc Encoding) ([]byte, float32, error) {
	return encode(b, enc)
}

func encode(b *Block, enc Encoding) ([]byte, float32, error) {
	if err := b.Validate(); err != nil {
		return nil, 0, err
	}
	if enc.width() == 0 {
		return nil, 0, fmt.Errorf("encode block: unknown encoding %d", enc)
	}
	n := b.N()
	need := 64 + n*binary.MaxVarintLen64 + b.StoredValues()*enc.width() + b.StoredValues()/8 + 8*n*max(b.T, 1)
	sk := sinks.Get().(*sink)
	defer sinks.Put(sk)
	sk.hot = slices.Grow(sk.hot[:0], need)
	sk.cold = slices.Grow(sk.cold[:0], b.StoredValues()*enc.width()/2)
	for _, id := range b.IDs {
		sk.hot = binary.AppendUvarint(sk.hot, id)
	}
	var maxErr float32
	var err error
	if b.Kind == Factored {
		var e1, e2 float32
		if e1, err = sk.matrix(b.A, n*b.T, b.In, enc); err != nil {
			return nil, 0, fmt.Errorf("encode block: A: %w", err)
		}
		if e2, err = sk.matrix(b.Delta, n*b.T, b.Out, enc); err != nil {
			return nil, 0, fmt.Errorf("encode block: Delta: %w", err)
		}
		maxErr = max(e1, e2)
	} else {
		if maxErr, err = sk.matrix(b.Rows, n, b.Dim, enc); err != nil {
			return nil, 0, fmt.Errorf("encode block: %w", err)
		}
	}
	payload, cold := sk.hot, sk.cold

	dst := []byte{magic[0], magic[1], Version, byte(b.Kind), byte(enc), 0}
	compAt := len(dst) - 1
	dst = binary.AppendUvarint(dst, uint64(n))
	if b.Kind == Factored {
		dst = binary.AppendUvarint(dst, uint64(b.T))
		dst = binary.AppendUvarint(dst, uint64(b.In))
		dst = binary.AppendUvarint(dst, uint64(b.Out))
	} else {
		dst = binary.AppendUvarint(dst, uint64(b.Dim))
	}
	dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(maxErr))
	dst = binary.AppendUvarint(dst, uint64(len(payload)))
	dst = binary.AppendUvarint(dst, uint64(len(cold)))
	zstdInit()
	body := len(dst)
	dst = slices.Grow(dst, len(payload)+len(cold)+8)
	if coldCompresses(cold) {
		// Quantized values (8-bit pixels, standardized) repeat their low
		// bytes too: one frame for both streams.
		both := append(payload, cold...)
		sk.hot = both // keep the grown buffer for the pool
		dst = zenc.EncodeAll(both, dst)
		dst[compAt] = compBoth
	} else {
		dst = zenc.EncodeAll(payload, dst)
		if len(dst)-body >= len(payload) {
			dst = append(dst[:body], payload...)
		} else {
			dst[compAt] = compZstd
		}
		dst = append(dst, cold...)
	}
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst, crcTable))
	return dst, maxErr, nil
}

// coldSample is how much of the cold stream coldCompresses tries.
const coldSample = 64 << 10

// coldCompresses reports whether zstd shrinks a sample of the cold stream
// (low mantissa bytes) below 80%: true for quantized values such as
// standardized 8-bit pixels, false for gradients, whose low bytes are
// noise (the sample then costs about 0.1 ms per block).
func coldCompresses(cold []byte) bool {
	if len(cold) < 4096 {
		return false
	}
	sample := cold[:min(len(cold), coldSample)]
	z := zenc.EncodeAll(sample, make([]byte, 0, len(sample)))
	return len(z) < len(sample)*4/5
}

// matrix appends one rows x cols matrix to the sink and returns the largest
// absolute error the encoding introduced.
func (sk *sink) matrix(vals []float32, rows, cols int, enc Encoding) (float32, error) {
	dst := sk.hot
	total := rows * cols
	nnz := 0
	for _, v := range vals {
		nnz += int(nonzero(v))
	}
	w := enc.width()
	mode := byte(modePlain)
	if (total-nnz)*w > total/8+1 {
		mode = modeBitmap
	}
	dst = append(dst, mode)

	var scales, rowMax []float32
	if enc == Int8 {
		scales = make([]float32, rows)
		rowMax = make([]float32, rows)
		for r := range rows {
			var m float32
			for _, v := range vals[r*cols : (r+1)*cols] {
				if a := float32(math.Abs(float64(v))); a > m && !math.IsInf(float64(a), 0) {
					m = a
				}
			}
			scales[r] = m / 127
			rowMax[r] = m
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(scales[r]))
		}
	}

	count := total
	if mode == modeBitmap {
		count = nnz
		bm := len(dst)
		dst = grow(dst, (total+7)/8)
		fillBitmap(dst[bm:], vals)
	}

	// The top byte plane (sign and exponent) goes to hot, the others to
	// cold; every byte of both is written below.
	hotAt, coldAt := len(dst), len(sk.cold)
	dst = extend(dst, count)
	sk.cold = extend(sk.cold, count*(w-1))
	lo, hi := sk.cold[coldAt:], dst[hotAt:]
	if enc == Float32 {
		shuffle32(lo, hi, vals, count, mode == modeBitmap)
		sk.hot = dst
		return 0, nil
	}
	var maxErr float32
	type exception struct {
		at   int
		bits uint32
	}
	var exceptions []exception
	j := 0
	for k, v := range vals {
		bits := math.Float32bits(v)
		if mode == modeBitmap && bits == 0 {
			continue
		}
		switch enc {
		case Float16, BFloat16:
			var h uint16
			var back float32
			if enc == Float16 {
				h = f32ToF16(v)
				back = f16ToF32(h)
			} else {
				h = f32ToBF16(v)
				back = bf16ToF32(h)
			}
			finite := !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0)
			if finite {
				if math.IsInf(float64(back), 0) {
					return 0, fmt.Errorf("%w: %g at row %d overflows %s", ErrUnrepresentable, v, k/cols, enc)
				}
				if e := float32(math.Abs(float64(back) - float64(v))); e > maxErr {
					maxErr = e
				}
			}
			lo[j] = byte(h)
			hi[j] = byte(h >> 8)
		case Int8:
			var q int8
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				exceptions = append(exceptions, exception{k, bits})
			} else {
				if s := scales[k/cols]; s > 0 {
					q = int8(max(-127, min(127, math.Round(float64(v/s)))))
				}
				e := float32(math.Abs(float64(float32(q)*scales[k/cols]) - float64(v)))
				if float64(e) > float64(rowMax[k/cols])/127 {
					// Only in float32's subnormal range, where the scale
					// itself rounds: keep the value exactly.
					exceptions = append(exceptions, exception{k, bits})
					q, e = 0, 0
				}
				maxErr = max(maxErr, e)
			}
			hi[j] = byte(q)
		}
		j++
	}
	if enc == Int8 {
		dst = binary.AppendUvarint(dst, uint64(len(exceptions)))
		prev := 0
		for _, e := range exceptions {
			dst = binary.AppendUvarint(dst, uint64(e.at-prev))
			dst = binary.LittleEndian.AppendUint32(dst, e.bits)
			prev = e.at
		}
	}
	sk.hot = dst
	return maxErr, nil
}

// ReadHeader verifies data's checksum and parses its header without
// decompressing the payload.
func ReadHeader(data []byte) (Header, error) {
	h, _, err := readHeader(data)
	return h, err
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// readHeader returns the header and the offset of the payload.
func readHeader(data []byte) (Header, int, error) {
	var h Header
	if len(data) < 6+4 {
		return h, 0, corrupt("%d bytes is too short", len(data))
	}
	if data[0] != magic[0] || data[1] != magic[1] {
		return h, 0, corrupt("bad magic %q", data[:2])
	}
	body := data[:len(data)-4]
	if got, want := crc32.Checksum(body, crcTable), binary.LittleEndian.Uint32(data[len(data)-4:]); got != want {
		return h, 0, corrupt("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	h.Version = int(data[2])
	if h.Version != Version {
		return h, 0, corrupt("format version %d, this gvdb reads version %d", h.Version, Version)
	}
	h.Kind = Kind(data[3])
	h.Encoding = Encoding(data[4])
	if h.Encoding.width() == 0 {
		return h, 0, corrupt("unknown encoding %d", data[4])
	}
	switch data[5] {
	case compNone:
	case compZstd:
		h.Compressed = true
	case compBoth:
		h.Compressed, h.ColdCompressed = true, true
	default:
		return h, 0, corrupt("unknown compression %d", data[5])
	}
	off := 6
	next := func(what string) (int, error) {
		v, k := binary.Uvarint(body[off:])
		if k <= 0 || v > MaxBlockBytes {
			return 0, corrupt("bad %s", what)
		}
		off += k
		return int(v), nil
	}
	var err error
	if h.N, err = next("example count"); err != nil {
		return h, 0, err
	}
	switch h.Kind {
	case Factored:
		if h.T, err = next("positions"); err != nil {
			return h, 0, err
		}
		if h.In, err = next("input width"); err != nil {
			return h, 0, err
		}
		if h.Out, err = next("output width"); err != nil {
			return h, 0, err
		}
		if h.T < 1 || h.In < 1 || h.Out < 1 {
			return h, 0, corrupt("factored shape T=%d In=%d Out=%d", h.T, h.In, h.Out)
		}
	case Dense:
		if h.Dim, err = next("row width"); err != nil {
			return h, 0, err
		}
		if h.Dim < 1 {
			return h, 0, corrupt("dense row width 0")
		}
	default:
		return h, 0, corrupt("unknown kind %d", h.Kind)
	}
	if len(body)-off < 4 {
		return h, 0, corrupt("truncated header")
	}
	h.MaxAbsErr = math.Float32frombits(binary.LittleEndian.Uint32(body[off:]))
	off += 4
	if h.RawLen, err = next("hot length"); err != nil {
		return h, 0, err
	}
	if h.ColdLen, err = next("cold length"); err != nil {
		return h, 0, err
	}
	if !h.ColdCompressed && h.ColdLen > len(body)-off {
		return h, 0, corrupt("cold section of %d bytes past the end", h.ColdLen)
	}
	// Every value takes at least one bit (bitmap) in the payload: bound the
	// shape by the payload so that no allocation exceeds 32x its length.
	values := mulSat(uint64(h.N), uint64(h.Dim))
	if h.Kind == Factored {
		values = mulSat(mulSat(uint64(h.N), uint64(h.T)), uint64(h.In+h.Out))
	}
	if values > 8*uint64(h.RawLen+h.ColdLen) || uint64(h.N) > uint64(h.RawLen) {
		return h, 0, corrupt("shape needs more than the %d-byte payload holds", h.RawLen+h.ColdLen)
	}
	if !h.Compressed && len(body)-off != h.RawLen+h.ColdLen {
		return h, 0, corrupt("payload is %d bytes, header says %d", len(body)-off, h.RawLen+h.ColdLen)
	}
	h.Len = len(data)
	return h, off, nil
}

// Decode parses an encoded block. Malformed input returns an error wrapping
// ErrCorrupt.
func Decode(data []byte) (*Block, error) {
	h, off, err := readHeader(data)
	if err != nil {
		return nil, err
	}
	if h.ColdCompressed {
		zstdInit()
		frame := data[off : len(data)-4]
		all, err := zdec.DecodeAll(frame, make([]byte, 0, min(h.RawLen+h.ColdLen, 64*len(frame)+4096)))
		if err != nil {
			return nil, corrupt("zstd: %v", err)
		}
		if len(all) != h.RawLen+h.ColdLen {
			return nil, corrupt("payload is %d bytes, header says %d", len(all), h.RawLen+h.ColdLen)
		}
		return decodePayload(h, all[:h.RawLen], all[h.RawLen:])
	}
	payload := data[off : len(data)-4-h.ColdLen]
	cold := data[len(data)-4-h.ColdLen : len(data)-4]
	if h.Compressed {
		zstdInit()
		payload, err = zdec.DecodeAll(payload, make([]byte, 0, min(h.RawLen, 64*len(payload)+4096)))
		if err != nil {
			return nil, corrupt("zstd: %v", err)
		}
		if len(payload) != h.RawLen {
			return nil, corrupt("payload is %d bytes, header says %d", len(payload), h.RawLen)
		}
	}
	return decodePayload(h, payload, cold)
}

// decodePayload parses a block's uncompressed hot and cold streams.
func decodePayload(h Header, payload, cold []byte) (*Block, error) {
	r := reader{buf: payload, cold: cold}
	b := &Block{Kind: h.Kind, IDs: make([]uint64, h.N), MaxAbsErr: h.MaxAbsErr}
	for i := range b.IDs {
		b.IDs[i] = r.uvarint()
	}
	if h.Kind == Factored {
		b.T, b.In, b.Out = h.T, h.In, h.Out
		b.A = r.matrix(h.N*h.T, h.In, h.Encoding)
		b.Delta = r.matrix(h.N*h.T, h.Out, h.Encoding)
	} else {
		b.Dim = h.Dim
		b.Rows = r.matrix(h.N, h.Dim, h.Encoding)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.buf) != 0 || len(r.cold) != 0 {
		return nil, corrupt("%d trailing payload bytes", len(r.buf)+len(r.cold))
	}
	return b, nil
}

// reader consumes a payload; the first error sticks and later reads return
// zero values.
type reader struct {
	buf, cold []byte
	err       error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = corrupt(format, args...)
	}
	r.buf, r.cold = nil, nil
}

func (r *reader) uvarint() uint64 {
	v, k := binary.Uvarint(r.buf)
	if k <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.buf = r.buf[k:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || n > len(r.buf) {
		r.fail("truncated payload: need %d bytes, have %d", n, len(r.buf))
		return nil
	}
	b := r.buf[:n]
	r.buf = r.buf[n:]
	return b
}

func (r *reader) matrix(rows, cols int, enc Encoding) []float32 {
	total := rows * cols
	mode := r.bytes(1)
	if r.err != nil {
		return nil
	}
	var scales []byte
	if enc == Int8 {
		scales = r.bytes(4 * rows)
	}
	count := total
	var bitmap []byte
	switch mode[0] {
	case modePlain:
	case modeBitmap:
		bitmap = r.bytes((total + 7) / 8)
		count = 0
		for _, x := range bitmap {
			count += bits.OnesCount8(x)
		}
	default:
		r.fail("unknown matrix mode %d", mode[0])
	}
	w := enc.width()
	if r.err != nil || count > len(r.buf) || count*(w-1) > len(r.cold) {
		r.fail("truncated values")
		return nil
	}
	hi := r.bytes(count)
	lo := r.cold[:count*(w-1)]
	r.cold = r.cold[count*(w-1):]
	vals := make([]float32, total)
	if enc == Float32 {
		if !unshuffle32(vals, bitmap, hi, lo, count) {
			r.fail("bitmap has bits past the matrix")
			return nil
		}
		return vals
	}
	j := 0
	for k := range vals {
		if bitmap != nil && bitmap[k>>3]&(1<<(k&7)) == 0 {
			continue
		}
		if j >= count {
			r.fail("bitmap has bits past the matrix")
			return nil
		}
		switch enc { // Float32 took unshuffle32 above
		case Float16:
			vals[k] = f16ToF32(uint16(lo[j]) | uint16(hi[j])<<8)
		case BFloat16:
			vals[k] = bf16ToF32(uint16(lo[j]) | uint16(hi[j])<<8)
		case Int8:
			s := math.Float32frombits(binary.LittleEndian.Uint32(scales[4*(k/cols):]))
			vals[k] = float32(int8(hi[j])) * s
		}
		j++
	}
	if j != count {
		r.fail("bitmap has bits past the matrix")
		return nil
	}
	if enc == Int8 {
		n := r.uvarint()
		at := 0
		for e := uint64(0); e < n && r.err == nil; e++ {
			at += int(min(r.uvarint(), uint64(total)))
			bits := r.bytes(4)
			if r.err != nil {
				break
			}
			if at >= total {
				r.fail("exception index %d past %d values", at, total)
				break
			}
			vals[at] = math.Float32frombits(binary.LittleEndian.Uint32(bits))
		}
	}
	return vals
}

// unshuffle32 rebuilds count float32 values from their byte planes (hi
// holds the top bytes, lo the three others, plane by plane) into vals at
// the positions bitmap sets, zeros elsewhere (all of vals when bitmap is
// nil, count then being len(vals)). The values are rebuilt in the last
// count slots of vals and then moved forward to their positions: the
// k-th position takes the j-th value with j ≥ k - (len(vals) - count), so
// no value is overwritten before it is moved. It reports false when the
// bitmap sets other than count bits within vals.
func unshuffle32(vals []float32, bitmap, hi, lo []byte, count int) bool {
	total := len(vals)
	if count > total {
		return false
	}
	packed := vals[total-count:]
	b0, b1, b2, b3 := lo[:count], lo[count:2*count], lo[2*count:3*count], hi[:count]
	for j := range packed {
		packed[j] = math.Float32frombits(uint32(b0[j]) | uint32(b1[j])<<8 | uint32(b2[j])<<16 | uint32(b3[j])<<24)
	}
	if bitmap == nil {
		return true
	}
	j := total - count
	for k := range vals {
		if bitmap[k>>3]&(1<<(k&7)) == 0 {
			vals[k] = 0
			continue
		}
		if j == total {
			return false
		}
		vals[k] = vals[j]
		j++
	}
	return j == total
}

// fillBitmap sets bit k of bm when vals[k] is not +0, without branches.
func fillBitmap(bm []byte, vals []float32) {
	k := 0
	for ; k+8 <= len(vals); k += 8 {
		v := vals[k : k+8 : k+8]
		bm[k>>3] = nonzero(v[0]) | nonzero(v[1])<<1 | nonzero(v[2])<<2 | nonzero(v[3])<<3 |
			nonzero(v[4])<<4 | nonzero(v[5])<<5 | nonzero(v[6])<<6 | nonzero(v[7])<<7
	}
	for ; k < len(vals); k++ {
		bm[k>>3] |= nonzero(vals[k]) << (k & 7)
	}
}

// nonzero is 1 when v's bits are not all zero, else 0.
func nonzero(v float32) byte {
	b := math.Float32bits(v)
	return byte((b | -b) >> 31)
}

// shuffle32 writes the byte planes of count float32 values (all of vals,
// or only the nonzero ones when skipZeros) into lo (planes 0 to 2) and hi
// (plane 3: sign and high exponent bits), compacting without branches.
func shuffle32(lo, hi []byte, vals []float32, count int, skipZeros bool) {
	if count == 0 {
		return
	}
	p0, p1, p2 := lo[:count], lo[count:2*count], lo[2*count:3*count]
	p3 := hi[:count]
	j := 0
	for _, v := range vals {
		if j == count {
			break // only zeros are left
		}
		b := math.Float32bits(v)
		// A zero is written too, then overwritten by the next value.
		p0[j], p1[j], p2[j], p3[j] = byte(b), byte(b>>8), byte(b>>16), byte(b>>24)
		if skipZeros {
			j += int((b | -b) >> 31)
		} else {
			j++
		}
	}
}

// extend extends dst by n bytes that the caller overwrites.
func extend(dst []byte, n int) []byte {
	dst = slices.Grow(dst, n)
	return dst[:len(dst)+n]
}

// grow extends dst by n zero bytes.
func grow(dst []byte, n int) []byte {
	dst = slices.Grow(dst, n)
	k := len(dst)
	dst = dst[:k+n]
	clear(dst[k:])
	return dst
}

// mulSat multiplies, saturating at the largest uint64 instead of wrapping.
func mulSat(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

package codec

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func randBlock(rng *rand.Rand, kind Kind, n int) *Block {
	fill := func(k int, sparse bool) []float32 {
		v := make([]float32, k)
		for i := range v {
			x := rng.NormFloat64()
			if sparse && x < 0 {
				continue
			}
			v[i] = float32(x * math.Pow(10, float64(rng.IntN(5)-4)))
		}
		return v
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = rng.Uint64() >> uint(rng.IntN(64))
	}
	if kind == Factored {
		return &Block{Kind: Factored, IDs: ids, T: 2, In: 7, Out: 5, A: fill(n*2*7, true), Delta: fill(n*2*5, false)}
	}
	return &Block{Kind: Dense, IDs: ids, Dim: 11, Rows: fill(n*11, false)}
}

func values(b *Block) []float32 {
	if b.Kind == Factored {
		return append(append([]float32(nil), b.A...), b.Delta...)
	}
	return b.Rows
}

// specials puts NaN, +-Inf, -0 and float32 extremes into a block.
func specials(b *Block) {
	v := b.Rows
	if b.Kind == Factored {
		v = b.Delta
	}
	if len(v) < 6 {
		return
	}
	v[0] = float32(math.NaN())
	v[1] = float32(math.Inf(1))
	v[2] = float32(math.Inf(-1))
	v[3] = float32(math.Copysign(0, -1))
	v[4] = math.SmallestNonzeroFloat32
	v[5] = 1e-30
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	type tc struct {
		name string
		b    *Block
	}
	var cases []tc
	for _, kind := range []Kind{Factored, Dense} {
		for _, n := range []int{0, 1, 3, 64} {
			cases = append(cases, tc{kind.String() + "/random", randBlock(rng, kind, n)})
		}
		zero := randBlock(rng, kind, 9)
		clear(zero.A)
		clear(zero.Delta)
		clear(zero.Rows)
		cases = append(cases, tc{kind.String() + "/zeros", zero})
		sp := randBlock(rng, kind, 9)
		specials(sp)
		cases = append(cases, tc{kind.String() + "/specials", sp})
	}
	for _, c := range cases {
		for _, enc := range []Encoding{Float32, Float16, BFloat16, Int8} {
			t.Run(c.name+"/"+enc.String(), func(t *testing.T) {
				data, err := Encode(c.b, enc)
				if err != nil {
					t.Fatalf("encode: %v", err)
				}
				got, err := Decode(data)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if got.Kind != c.b.Kind || got.T != c.b.T || got.In != c.b.In || got.Out != c.b.Out || got.Dim != c.b.Dim {
					t.Fatalf("shape changed: got %+v", got)
				}
				if len(got.IDs) != len(c.b.IDs) {
					t.Fatalf("got %d ids, want %d", len(got.IDs), len(c.b.IDs))
				}
				for i := range got.IDs {
					if got.IDs[i] != c.b.IDs[i] {
						t.Fatalf("id %d: got %d, want %d", i, got.IDs[i], c.b.IDs[i])
					}
				}
				checkValues(t, enc, c.b, got)
				h, err := ReadHeader(data)
				if err != nil || h.N != c.b.N() || h.Encoding != enc || h.Len != len(data) {
					t.Fatalf("header %+v, %v", h, err)
				}
				if h.MaxAbsErr != got.MaxAbsErr || (enc == Float32 && h.MaxAbsErr != 0) {
					t.Fatalf("reported error %g (block %g)", h.MaxAbsErr, got.MaxAbsErr)
				}
			})
		}
	}
}

// checkValues asserts bit-exactness for float32 and each lossy encoding's
// error bound, and that specials survive every encoding.
func checkValues(t *testing.T, enc Encoding, want, got *Block) {
	t.Helper()
	w, g := values(want), values(got)
	if len(w) != len(g) {
		t.Fatalf("got %d values, want %d", len(g), len(w))
	}
	cols := want.Dim
	if want.Kind == Factored {
		cols = 0 // per-row bound below uses the row of A or Delta
	}
	rowMax := func(k int) float64 {
		// The row k sits in, within A, Delta or Rows.
		var vals []float32
		width := cols
		off := k
		if want.Kind == Factored {
			if k < len(want.A) {
				vals, width = want.A, want.In
			} else {
				vals, width, off = want.Delta, want.Out, k-len(want.A)
			}
		} else {
			vals = want.Rows
		}
		r := off / width
		m := 0.0
		for _, v := range vals[r*width : (r+1)*width] {
			if a := math.Abs(float64(v)); a > m && !math.IsInf(a, 0) && !math.IsNaN(a) {
				m = a
			}
		}
		return m
	}
	var maxErr float64
	for k := range w {
		x, y := float64(w[k]), float64(g[k])
		if enc == Float32 {
			if math.Float32bits(w[k]) != math.Float32bits(g[k]) {
				t.Fatalf("value %d: got bits %08x, want %08x", k, math.Float32bits(g[k]), math.Float32bits(w[k]))
			}
			continue
		}
		switch {
		case math.IsNaN(x):
			if !math.IsNaN(y) {
				t.Fatalf("value %d: NaN became %g", k, y)
			}
			continue
		case math.IsInf(x, 0):
			if x != y {
				t.Fatalf("value %d: %g became %g", k, x, y)
			}
			continue
		}
		e := math.Abs(x - y)
		maxErr = max(maxErr, e)
		switch enc {
		case Float16:
			if math.Abs(x) >= 0x1p-14 && e > math.Abs(x)*0x1p-11 {
				t.Fatalf("float16 value %d: %g -> %g, relative error %g > 2^-11", k, x, y, e/math.Abs(x))
			}
		case BFloat16:
			if math.Abs(x) >= 0x1p-126 && e > math.Abs(x)*0x1p-8 {
				t.Fatalf("bfloat16 value %d: %g -> %g, relative error %g > 2^-8", k, x, y, e/math.Abs(x))
			}
		case Int8:
			if m := rowMax(k); e > m/127 {
				t.Fatalf("int8 value %d: %g -> %g, error %g > row max/127 = %g", k, x, y, e, m/127)
			}
		}
	}
	if float32(maxErr) != got.MaxAbsErr {
		t.Fatalf("reported max error %g, measured %g", got.MaxAbsErr, maxErr)
	}
}

func TestFloat16Exhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := f16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			if back := f32ToF16(f); back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %04x came back as %04x", h, back)
			}
			continue
		}
		if back := f32ToF16(f); back != uint16(h) {
			t.Fatalf("%04x -> %g -> %04x", h, f, back)
		}
	}
	// Rounding picks the nearer neighbour, ties to even.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		x := float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(40)-25)))
		h := f32ToF16(x)
		y := f16ToF32(h)
		for _, nb := range []uint16{h - 1, h + 1} {
			z := f16ToF32(nb)
			if math.IsNaN(float64(z)) || (nb&0x7fff) > 0x7c00 {
				continue
			}
			if dz, dy := math.Abs(float64(z)-float64(x)), math.Abs(float64(y)-float64(x)); dz < dy || (dz == dy && h&1 == 1 && (nb^h)&0x8000 == 0) {
				t.Fatalf("%g rounded to %g (%04x), but %g (%04x) is nearer", x, y, h, z, nb)
			}
		}
	}
}

func TestBFloat16Rounding(t *testing.T) {
	cases := []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above half
		{0x7f800000, 0x7f80}, // +Inf
		{0xff800000, 0xff80}, // -Inf
	}
	for _, c := range cases {
		if got := f32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("bf16(%08x) = %04x, want %04x", c.in, got, c.want)
		}
	}
	if !math.IsNaN(float64(bf16ToF32(f32ToBF16(float32(math.NaN()))))) {
		t.Error("NaN did not survive bfloat16")
	}
}

func TestEncodeErrors(t *testing.T) {
	b := &Block{Kind: Dense, IDs: []uint64{1}, Dim: 2, Rows: []float32{1, 1e6}}
	if _, err := Encode(b, Float16); !errors.Is(err, ErrUnrepresentable) {
		t.Errorf("float16 overflow: got %v, want ErrUnrepresentable", err)
	}
	bad := &Block{Kind: Dense, IDs: []uint64{1, 2}, Dim: 2, Rows: []float32{1}}
	if _, err := Encode(bad, Float32); !errors.Is(err, ErrInvalidBlock) {
		t.Errorf("short rows: got %v, want ErrInvalidBlock", err)
	}
	if _, err := Encode(&Block{Kind: 9}, Float32); !errors.Is(err, ErrInvalidBlock) {
		t.Errorf("bad kind: got %v", err)
	}
	if _, err := Encode(b, 0); err == nil {
		t.Error("encoding 0 accepted")
	}
}

func TestDecodeCorrupt(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	data, err := Encode(randBlock(rng, Factored, 20), Float32)
	if err != nil {
		t.Fatal(err)
	}
	// Every single-bit flip and every truncation is caught.
	for k := 0; k < len(data); k++ {
		for bit := 0; bit < 8; bit++ {
			c := append([]byte(nil), data...)
			c[k] ^= 1 << bit
			if _, err := Decode(c); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip byte %d bit %d: got %v, want ErrCorrupt", k, bit, err)
			}
		}
	}
	for k := 0; k < len(data); k++ {
		if _, err := Decode(data[:k]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: got %v", k, err)
		}
	}
}

func TestGradient(t *testing.T) {
	b := &Block{Kind: Factored, IDs: []uint64{0, 1}, T: 2, In: 2, Out: 3,
		A:     []float32{1, 2, 3, 4, 0, 0, 0, 0},
		Delta: []float32{1, 0, -1, 2, 1, 0, 0, 0, 0, 0, 0, 0}}
	// Example 0: [1 2]^T [1 0 -1] + [3 4]^T [2 1 0].
	want := []float64{1 + 6, 3, -1, 2 + 8, 4, -2}
	got := b.Gradient(0, make([]float64, 6))
	for j := range want {
		if got[j] != want[j] {
			t.Fatalf("gradient = %v, want %v", got, want)
		}
	}
}

func TestParseEncoding(t *testing.T) {
	for _, e := range []Encoding{Float32, Float16, BFloat16, Int8} {
		if got, err := ParseEncoding(e.String()); err != nil || got != e {
			t.Errorf("ParseEncoding(%q) = %v, %v", e, got, err)
		}
	}
	if _, err := ParseEncoding("fp8"); err == nil {
		t.Error("fp8 accepted")
	}
}

// quantizedBlock is a first layer's factors on standardized 8-bit pixels:
// A takes 256 distinct values, so its low bytes repeat; Delta is noise.
func quantizedBlock(rng *rand.Rand, n, in int) *Block {
	b := &Block{Kind: Factored, IDs: make([]uint64, n), T: 1, In: in, Out: 8, A: make([]float32, n*in), Delta: make([]float32, n*8)}
	for i := range b.IDs {
		b.IDs[i] = uint64(i)
	}
	for i := range b.A {
		k := 0
		if rng.IntN(5) == 0 { // mostly background, as in MNIST
			k = rng.IntN(256)
		}
		b.A[i] = (float32(k)/255 - 0.1307) / 0.3081
	}
	for i := range b.Delta {
		b.Delta[i] = float32(rng.NormFloat64() * 1e-3)
	}
	return b
}

// TestColdCompression: where the low byte planes repeat (quantized
// inputs) both streams are compressed, bit-exact, and the block shrinks;
// where they are noise (gradients) only the hot stream is; every bit
// flip of the compressed form is still caught.
func TestColdCompression(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	q := quantizedBlock(rng, 64, 784)
	data, err := Encode(q, Float32)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(data)
	if err != nil || !h.ColdCompressed {
		t.Fatalf("quantized inputs: header %+v, %v; want the cold stream compressed", h, err)
	}
	raw := 4 * (len(q.A) + len(q.Delta))
	if len(data)*2 > raw { // the cold stream raw alone is 75%
		t.Errorf("quantized inputs: %d bytes for %d float32 bytes; want under 50%%", len(data), raw)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range values(q) {
		if w := values(got)[i]; math.Float32bits(v) != math.Float32bits(w) {
			t.Fatalf("value %d: %v, want %v bit-exact", i, w, v)
		}
	}
	noise := randBlock(rng, Dense, 2000)
	nd, err := Encode(noise, Float32)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := ReadHeader(nd); h.ColdCompressed {
		t.Error("noise: the cold stream was compressed")
	}
	small := quantizedBlock(rng, 32, 64)
	data, _ = Encode(small, Float32)
	if h, _ := ReadHeader(data); !h.ColdCompressed {
		t.Skip("the small block did not compress its cold stream") // the flip test needs one that does
	}
	for k := range data {
		for bit := range 8 {
			c := append([]byte(nil), data...)
			c[k] ^= 1 << bit
			if _, err := Decode(c); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip byte %d bit %d: got %v, want ErrCorrupt", k, bit, err)
			}
		}
	}
	for k := range data {
		if _, err := Decode(data[:k]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: got %v", k, err)
		}
	}
}

// TestUnshuffle32 checks the float32 fast path of decoding against a
// value-by-value scatter: every size up to a few bitmap bytes, sparse and
// dense, and bitmaps whose set bits are not the values' count (padding
// bits past the matrix, a bit too few) are refused.
func TestUnshuffle32(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for total := 0; total < 70; total++ {
		for _, density := range []float64{0, 0.3, 1} {
			want := make([]float32, total)
			bitmap := make([]byte, (total+7)/8)
			var packed []float32
			for k := range want {
				if rng.Float64() < density {
					want[k] = float32(rng.NormFloat64())
					bitmap[k>>3] |= 1 << (k & 7)
					packed = append(packed, want[k])
				}
			}
			count := len(packed)
			hi, lo := make([]byte, count), make([]byte, 3*count)
			for j, v := range packed {
				b := math.Float32bits(v)
				lo[j], lo[count+j], lo[2*count+j], hi[j] = byte(b), byte(b>>8), byte(b>>16), byte(b>>24)
			}
			got := make([]float32, total)
			for k := range got {
				got[k] = -1 // leftovers must be overwritten
			}
			if !unshuffle32(got, bitmap, hi, lo, count) {
				t.Fatalf("total %d, %d values: refused", total, count)
			}
			for k := range want {
				if math.Float32bits(got[k]) != math.Float32bits(want[k]) {
					t.Fatalf("total %d, %d values: position %d is %v, want %v", total, count, k, got[k], want[k])
				}
			}
			if count == total {
				dense := make([]float32, total)
				if !unshuffle32(dense, nil, hi, lo, count) || !slices.EqualFunc(dense, want, sameBits) {
					t.Fatalf("total %d without a bitmap: %v, want %v", total, dense, want)
				}
			}
			if total%8 != 0 {
				// A padding bit past the matrix: one value too many.
				bad := append([]byte(nil), bitmap...)
				bad[len(bad)-1] |= 0x80
				if unshuffle32(make([]float32, total), bad, append(hi, 0), append(lo, 0, 0, 0), count+1) {
					t.Fatalf("total %d: a bit past the matrix was accepted", total)
				}
			}
			if count > 0 && unshuffle32(make([]float32, total), bitmap, hi[:count-1], lo, count-1) {
				t.Fatalf("total %d: a bitmap with one bit more than the values was accepted", total)
			}
		}
	}
}

func sameBits(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) }

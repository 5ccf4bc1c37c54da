package codec

import (
	"errors"
	"fmt"
	"math"
)

// Kind says how a Block stores its per-example gradients.
type Kind uint8

const (
	// Factored stores, for each example i and position t, the layer input
	// a_it (In values) and the gradient d_it of the summed loss with respect
	// to the layer's pre-activation output (Out values). The per-example
	// gradient of the In x Out weight matrix is G_i = sum_t a_it d_it^T,
	// flattened row-major: G_i[p*Out+q] = sum_t A[i,t,p] * Delta[i,t,q].
	// Dense layers have T = 1; convolutions have one position per output
	// pixel (im2col rows).
	Factored Kind = 1
	// Dense stores each example's gradient as one row of Dim values.
	Dense Kind = 2
)

// String returns "factored" or "dense".
func (k Kind) String() string {
	switch k {
	case Factored:
		return "factored"
	case Dense:
		return "dense"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Block is the per-example gradients of one layer in one snapshot.
//
// Matrices are row-major float32 slices with one row per example (and, for
// factored blocks, T consecutive rows per example).
type Block struct {
	Kind Kind
	// IDs are the dataset indices of the N examples, in row order.
	IDs []uint64

	// Factored blocks: A is N*T x In, Delta is N*T x Out.
	T     int
	In    int
	Out   int
	A     []float32
	Delta []float32

	// Dense blocks: Rows is N x Dim.
	Dim  int
	Rows []float32

	// MaxAbsErr is the largest absolute error that the lossy encoding this
	// block was decoded from introduced (0 for float32). Encode ignores it.
	MaxAbsErr float32
}

// N returns the number of examples in the block.
func (b *Block) N() int { return len(b.IDs) }

// Params returns D, the number of parameters one per-example gradient has.
func (b *Block) Params() int {
	if b.Kind == Factored {
		return b.In * b.Out
	}
	return b.Dim
}

// StoredValues returns how many float values the block holds.
func (b *Block) StoredValues() int {
	if b.Kind == Factored {
		return len(b.A) + len(b.Delta)
	}
	return len(b.Rows)
}

// ErrInvalidBlock is wrapped by every error that Validate returns.
var ErrInvalidBlock = errors.New("invalid block")

// Validate checks that the block's shape fields agree with its slices.
func (b *Block) Validate() error {
	n := len(b.IDs)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidBlock, fmt.Sprintf(format, args...))
	}
	switch b.Kind {
	case Factored:
		if b.T < 1 || b.In < 1 || b.Out < 1 {
			return bad("factored block needs T, In, Out >= 1, got T=%d In=%d Out=%d", b.T, b.In, b.Out)
		}
		if len(b.A) != n*b.T*b.In {
			return bad("A has %d values, want N*T*In = %d*%d*%d", len(b.A), n, b.T, b.In)
		}
		if len(b.Delta) != n*b.T*b.Out {
			return bad("Delta has %d values, want N*T*Out = %d*%d*%d", len(b.Delta), n, b.T, b.Out)
		}
		if b.Rows != nil || b.Dim != 0 {
			return bad("factored block has dense rows")
		}
	case Dense:
		if b.Dim < 1 {
			return bad("dense block needs Dim >= 1, got %d", b.Dim)
		}
		if len(b.Rows) != n*b.Dim {
			return bad("Rows has %d values, want N*Dim = %d*%d", len(b.Rows), n, b.Dim)
		}
		if b.A != nil || b.Delta != nil {
			return bad("dense block has factors")
		}
	default:
		return bad("unknown kind %d", b.Kind)
	}
	return nil
}

// Gradient writes example i's gradient (Params values) into dst, which must
// have room for it, materializing factors when needed, and returns dst.
func (b *Block) Gradient(i int, dst []float64) []float64 {
	dst = dst[:b.Params()]
	if b.Kind == Dense {
		for j, v := range b.Rows[i*b.Dim : (i+1)*b.Dim] {
			dst[j] = float64(v)
		}
		return dst
	}
	clear(dst)
	for t := 0; t < b.T; t++ {
		r := i*b.T + t
		a := b.A[r*b.In : (r+1)*b.In]
		d := b.Delta[r*b.Out : (r+1)*b.Out]
		for p, ap := range a {
			if ap == 0 {
				continue
			}
			row := dst[p*b.Out : (p+1)*b.Out]
			for q, dq := range d {
				row[q] += float64(ap) * float64(dq)
			}
		}
	}
	return dst
}

// Materialized returns the block as dense rows, one per-example gradient
// (Params values) per row, in float32; a dense block is returned as is.
func (b *Block) Materialized() *Block {
	if b.Kind == Dense {
		return b
	}
	p := b.Params()
	rows := make([]float32, b.N()*p)
	g := make([]float64, p)
	for i := range b.N() {
		for j, v := range b.Gradient(i, g) {
			rows[i*p+j] = float32(v)
		}
	}
	return &Block{Kind: Dense, IDs: b.IDs, Dim: p, Rows: rows}
}

// NonFinite reports the first NaN or Inf value in the block, if any, as the
// example row it sits in.
func (b *Block) NonFinite() (row int, ok bool) {
	check := func(vals []float32, width int) (int, bool) {
		// v*0 is 0 for finite v and NaN for NaN and ±Inf: one cheap pass,
		// then a search only when something is off.
		var s float32
		for _, v := range vals {
			s += v * 0
		}
		if s == 0 {
			return 0, false
		}
		for k, v := range vals {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return k / width, true
			}
		}
		return 0, false
	}
	if b.Kind == Factored {
		if r, ok := check(b.A, b.T*b.In); ok {
			return r, true
		}
		return check(b.Delta, b.T*b.Out)
	}
	return check(b.Rows, b.Dim)
}

package stats

import (
	"fmt"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"gvdb/db/codec"
)

// Gram is the N x N matrix of inner products K_ij = <g_i, g_j> of N
// per-example gradients over a scope of layers, row-major and symmetric.
// It costs 8·N² bytes (8 MiB at N = 1024, 800 MB at N = 10,000); it is
// built in row chunks so that temporaries stay at 2·chunk·N values.
type Gram struct {
	N int
	K []float64
}

// gramChunk is the number of rows built at once.
const gramChunk = 256

// maxMaterialize bounds the bytes a convolution layer's materialized
// per-example gradients may take when building a Gram matrix.
const maxMaterialize = 1 << 30

// NewGram builds the Gram matrix of the layers' per-example gradients:
// for a dense layer <g_i, g_j> = (a_i·a_j)(d_i·d_j), summed over layers.
func NewGram(layers []Layer) (*Gram, error) {
	if len(layers) == 0 {
		return nil, fmt.Errorf("gram: no layers in scope")
	}
	n := layers[0].Block.N()
	g := &Gram{N: n, K: make([]float64, n*n)}
	for _, l := range layers {
		b := l.Block
		if b.N() != n {
			return nil, fmt.Errorf("gram: layer %s has %d examples, want %d", l.Name, b.N(), n)
		}
		switch {
		case b.Kind == codec.Dense:
			g.add(f64(b.Rows), b.Dim, nil, 0)
		case b.T == 1:
			g.add(f64(b.A), b.In, f64(b.Delta), b.Out)
		default:
			p := b.Params()
			if int64(n)*int64(p)*8 > maxMaterialize {
				return nil, fmt.Errorf("gram: layer %s would materialize %d x %d gradients (over 1 GiB); use fewer examples", l.Name, n, p)
			}
			rows := make([]float64, n*p)
			for i := range n {
				materialize(b, i, rows[i*p:(i+1)*p])
			}
			g.add(rows, p, nil, 0)
		}
	}
	// Mirror the upper triangle.
	for i := range n {
		for j := i + 1; j < n; j++ {
			g.K[j*n+i] = g.K[i*n+j]
		}
	}
	return g, nil
}

// add adds (x_i·x_j)(y_i·y_j) (or x_i·x_j when y is nil) to the upper
// triangle of K, for x (N x p) and y (N x q).
func (g *Gram) add(x []float64, p int, y []float64, q int) {
	n := g.N
	kx := make([]float64, gramChunk*n)
	var ky []float64
	if y != nil {
		ky = make([]float64, gramChunk*n)
	}
	for r0 := 0; r0 < n; r0 += gramChunk {
		r1 := min(r0+gramChunk, n)
		rows, cols := r1-r0, n-r0
		cx := general(rows, cols, kx[:rows*cols])
		blas64.Gemm(blas.NoTrans, blas.Trans, 1, general(rows, p, x[r0*p:r1*p]), general(cols, p, x[r0*p:]), 0, cx)
		if y != nil {
			cy := general(rows, cols, ky[:rows*cols])
			blas64.Gemm(blas.NoTrans, blas.Trans, 1, general(rows, q, y[r0*q:r1*q]), general(cols, q, y[r0*q:]), 0, cy)
		}
		for i := r0; i < r1; i++ {
			krow := g.K[i*n:]
			off := (i - r0) * cols
			for j := i; j < n; j++ {
				v := kx[off+j-r0]
				if y != nil {
					v *= ky[off+j-r0]
				}
				krow[j] += v
			}
		}
	}
}

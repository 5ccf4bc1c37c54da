package stats

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// TestBLASAgrees: whichever BLAS this process loaded (OpenBLAS at run time,
// or gonum), its products agree with gonum's to rounding, in every
// transpose, for shapes below and above the small-product cut-off.
func TestBLASAgrees(t *testing.T) {
	t.Logf("BLAS: %s", BLASName())
	rng := rand.New(rand.NewPCG(1, 2))
	ref := gonum.Implementation{}
	for _, s := range [][3]int{{3, 4, 5}, {70, 33, 91}, {128, 1, 300}} {
		m, n, k := s[0], s[1], s[2]
		for _, ta := range []blas.Transpose{blas.NoTrans, blas.Trans} {
			for _, tb := range []blas.Transpose{blas.NoTrans, blas.Trans} {
				a, b := make([]float64, m*k), make([]float64, k*n)
				for i := range a {
					a[i] = rng.NormFloat64()
				}
				for i := range b {
					b[i] = rng.NormFloat64()
				}
				lda, ldb := k, n
				if ta == blas.Trans {
					lda = m
				}
				if tb == blas.Trans {
					ldb = k
				}
				c0, c1 := make([]float64, m*n), make([]float64, m*n)
				for i := range c0 {
					c0[i] = rng.NormFloat64()
					c1[i] = c0[i]
				}
				ref.Dgemm(ta, tb, m, n, k, 0.5, a, lda, b, ldb, 2, c0, n)
				impl.Dgemm(ta, tb, m, n, k, 0.5, a, lda, b, ldb, 2, c1, n)
				a32, b32, c32 := make([]float32, len(a)), make([]float32, len(b)), make([]float32, len(c1))
				for i, v := range a {
					a32[i] = float32(v)
				}
				for i, v := range b {
					b32[i] = float32(v)
				}
				impl.Sgemm(ta, tb, m, n, k, 1, a32, lda, b32, ldb, 0, c32, n)
				c2 := make([]float64, m*n)
				ref.Dgemm(ta, tb, m, n, k, 1, a, lda, b, ldb, 0, c2, n)
				for i := range c0 {
					if d := math.Abs(c0[i] - c1[i]); d > 1e-12*(1+math.Abs(c0[i])) {
						t.Fatalf("%v Dgemm %v %v [%d]: %g vs gonum %g", s, ta, tb, i, c1[i], c0[i])
					}
					if d := math.Abs(float64(c32[i]) - c2[i]); d > 1e-4*math.Sqrt(float64(k)) {
						t.Fatalf("%v Sgemm %v %v [%d]: %g vs %g", s, ta, tb, i, c32[i], c2[i])
					}
				}
			}
		}
	}
}

package stats

import "gonum.org/v1/gonum/blas"

// Impl is a complete BLAS implementation (what Gorgonia's Use takes).
type Impl interface {
	blas.Float32
	blas.Float64
	blas.Complex64
	blas.Complex128
}

//go:build !openblas

package stats

import "gonum.org/v1/gonum/blas/gonum"

// BLAS names the BLAS implementation this binary uses: gonum's pure Go
// ("gonum"), or "openblas" when built with -tags openblas.
const BLAS = "gonum"

// Implementation returns the BLAS implementation the statistics use, so
// that the CLI can hand the same one to the trainer.
func Implementation() Impl { return gonum.Implementation{} }

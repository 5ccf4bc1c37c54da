//go:build !openblas

package stats

// BLAS names the BLAS implementation this binary uses: gonum's pure Go
// ("gonum"), or "openblas" when built with -tags openblas.
const BLAS = "gonum"

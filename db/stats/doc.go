// Package stats computes gvdb's gradient statistics on in-memory snapshot
// blocks: gradient variance, normalized gradient variance (NGV), gradient
// noise scale, SNR, norms, Cockpit's norm/inner-product/orthogonality
// tests, and Gradient Clustering (GC), exactly as docs/DESIGN.md section 3
// defines them. It never touches the store.
//
// The N examples of a snapshot are the population mini-batches are drawn
// from (with replacement); moments use 1/N. Nothing is materialized when it
// need not be: for a dense layer the gradient of example i is a_i d_iᵀ, so
//
//   - Σ_i g_i = AᵀΔ and Σ_i g_i∘g_i = (A∘A)ᵀ(Δ∘Δ) are matrix products,
//   - |g_i|² = |a_i|²|d_i|² and <g_i, g_j> = (a_i·a_j)(d_i·d_j), so
//     |Σ_i g_i|² is also Σ_ij (a_i·a_j)(d_i·d_j), which Compute takes
//     when it costs less than AᵀΔ (N²(In+Out)/2 against N·In·Out: small N),
//
// and Gradient Clustering (GC) searches its partition on the N x N Gram
// matrix, or beyond N = 8192 or the memory budget on a seeded sketch of
// the gradients (sketch.go), always with exact cluster means and an exact
// final score (the paper approximates centres by rank-1 products). GC is
// in-sample (InSample) on a full snapshot and held out (HeldOut) on a
// sample (gcpop.go). SVRG's per-example differences g_i(θ) − g_i(θ̃) are
// factored blocks of two positions (Difference), so the same forms apply.
// Blocks with T > 1 positions sum by one product over all position rows
// and are materialized one example at a time where that is cheaper. Every
// formula is checked against a float64 brute force on materialized
// gradients in the tests.
//
// stats imports gvdb's db/codec (the block type) and gonum.
package stats

// Package trainer trains Gorgonia models (logistic regression, MLP, CNN)
// on MNIST or the paper's synthetic tasks and emits exact per-example
// gradients through a Sink.
//
// One forward/backward pass of the summed loss gives, for every dense
// layer, the factors of each example's gradient: the layer input a_i and
// d_i = ∂ℓ_i/∂z_i, the gradient of that example's loss with respect to the
// layer's pre-activation output; the weight gradient of example i is
// a_i d_iᵀ and its bias gradient d_i. Convolutions run as im2col plus a
// matrix product, so the same factors exist per output position; a
// convolution's block holds the factors or the materialized gradient,
// whichever is smaller. The measured gradient is that of the per-example
// loss, without weight decay (as in the paper).
//
// trainer is the only gvdb package that imports Gorgonia. It imports
// ingest (snapshot and block types) and db (the layer schema type).
package trainer

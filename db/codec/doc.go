// Package codec is the on-disk format of gvdb gradient blocks: pure encode
// and decode, no I/O.
//
// A Block holds the per-example gradients of one layer for the N examples of
// one snapshot, either factored (dense and convolution weights: the gradient
// of example i is sum_t a_it d_it^T) or as dense rows (biases and anything
// else). Encode turns a Block into a self-describing, versioned, checksummed
// byte string; Decode turns it back and rejects anything malformed with an
// error, never a panic. FORMAT.md beside this file draws the byte layout.
//
// Values are float32 (lossless, the default) or, opt-in, float16, bfloat16
// or int8 with a per-row scale; a lossy encoding records its largest absolute
// error in the block header. Before zstd compression, exact zeros are moved
// into a bitmap and the remaining values are byte-shuffled.
//
// This package imports nothing from gvdb.
package codec

// Package synth makes seeded synthetic gradient blocks shaped like real
// ones, for tests and benchmarks across gvdb: ReLU-sparse layer inputs
// (about half exact zeros) and heavy-tailed small output gradients.
//
// It imports gvdb's codec and db (for the layer schema).
package synth

import (
	"math"
	"math/rand/v2"
	"strconv"

	"gvdb/db"
	"gvdb/db/codec"
)

// Activations returns n*width ReLU-like values: about half are exact zeros,
// the rest half-normal with scale 1.
func Activations(rng *rand.Rand, n, width int) []float32 {
	v := make([]float32, n*width)
	for k := range v {
		if x := rng.NormFloat64(); x > 0 {
			v[k] = float32(x)
		}
	}
	return v
}

// Deltas returns n*width heavy-tailed values of order 1e-3: Student-t with
// 3 degrees of freedom, scaled.
func Deltas(rng *rand.Rand, n, width int) []float32 {
	v := make([]float32, n*width)
	for k := range v {
		z := rng.NormFloat64()
		c := rng.NormFloat64()*rng.NormFloat64() + rng.NormFloat64()*rng.NormFloat64() + rng.NormFloat64()*rng.NormFloat64()
		v[k] = float32(1e-3 * z / math.Sqrt(math.Abs(c)/3+1e-3))
	}
	return v
}

// IDs returns n distinct example ids drawn from [0, population).
func IDs(rng *rand.Rand, n, population int) []uint64 {
	ids := make([]uint64, n)
	for i, p := range rng.Perm(max(n, population))[:n] {
		ids[i] = uint64(p)
	}
	return ids
}

// Factored returns a dense-layer block (T = 1) of n examples with in x out
// weights.
func Factored(rng *rand.Rand, n, in, out int) *codec.Block {
	return &codec.Block{
		Kind: codec.Factored, IDs: IDs(rng, n, 60000),
		T: 1, In: in, Out: out,
		A: Activations(rng, n, in), Delta: Deltas(rng, n, out),
	}
}

// Dense returns a dense block (a bias gradient, say) of n rows of dim values.
func Dense(rng *rand.Rand, n, dim int) *codec.Block {
	return &codec.Block{Kind: codec.Dense, IDs: IDs(rng, n, 60000), Dim: dim, Rows: Deltas(rng, n, dim)}
}

// Layer is one layer of a synthetic model.
type Layer struct {
	Name    string
	In, Out int  // weight shape In x Out; a bias has In values
	Bias    bool // true for a bias (dense block of In values)
}

// MLP returns the layers of an MLP with the given widths (784, 1024, 1024,
// 10 for the paper's MNIST MLP): a weight and a bias per linear layer.
func MLP(widths ...int) []Layer {
	var ls []Layer
	for l := 0; l+1 < len(widths); l++ {
		name := "fc" + strconv.Itoa(l+1)
		ls = append(ls, Layer{Name: name + ".weight", In: widths[l], Out: widths[l+1]})
		ls = append(ls, Layer{Name: name + ".bias", In: widths[l+1], Bias: true})
	}
	return ls
}

// Snapshot returns one block per layer for the same n examples: the bias
// block of a layer equals the Delta of its weight block, as in a real
// network.
func Snapshot(rng *rand.Rand, n int, layers []Layer) map[string]*codec.Block {
	ids := IDs(rng, n, 60000)
	out := make(map[string]*codec.Block, len(layers))
	var lastDelta []float32
	for _, l := range layers {
		if l.Bias {
			rows := lastDelta
			if len(rows) != n*l.In {
				rows = Deltas(rng, n, l.In)
			}
			out[l.Name] = &codec.Block{Kind: codec.Dense, IDs: ids, Dim: l.In, Rows: rows}
			continue
		}
		b := &codec.Block{Kind: codec.Factored, IDs: ids, T: 1, In: l.In, Out: l.Out,
			A: Activations(rng, n, l.In), Delta: Deltas(rng, n, l.Out)}
		lastDelta = b.Delta
		out[l.Name] = b
	}
	return out
}

// Schema returns the store's layer schema for layers.
func Schema(layers []Layer) []db.Layer {
	out := make([]db.Layer, len(layers))
	for i, l := range layers {
		if l.Bias {
			out[i] = db.Layer{Name: l.Name, Kind: db.Bias, Shape: []int{l.In}, Params: l.In}
		} else {
			out[i] = db.Layer{Name: l.Name, Kind: db.DenseWeight, Shape: []int{l.In, l.Out}, Params: l.In * l.Out}
		}
	}
	return out
}

// Perturbed returns blocks for the same examples as s, every value
// multiplied by 1 + eps·z (z standard normal): the gradients of the same
// examples at nearby parameters (an SVRG anchor, say). A bias block stays
// equal to the Delta of the weight block before it.
func Perturbed(rng *rand.Rand, s map[string]*codec.Block, layers []Layer, eps float64) map[string]*codec.Block {
	jitter := func(v []float32) []float32 {
		out := make([]float32, len(v))
		for i, x := range v {
			out[i] = x * float32(1+eps*rng.NormFloat64())
		}
		return out
	}
	out := make(map[string]*codec.Block, len(s))
	var lastDelta []float32
	for _, l := range layers {
		b := s[l.Name]
		if l.Bias {
			rows := lastDelta
			if len(rows) != len(b.Rows) {
				rows = jitter(b.Rows)
			}
			out[l.Name] = &codec.Block{Kind: codec.Dense, IDs: b.IDs, Dim: b.Dim, Rows: rows}
			continue
		}
		p := &codec.Block{Kind: codec.Factored, IDs: b.IDs, T: b.T, In: b.In, Out: b.Out, A: jitter(b.A), Delta: jitter(b.Delta)}
		lastDelta = p.Delta
		out[l.Name] = p
	}
	return out
}

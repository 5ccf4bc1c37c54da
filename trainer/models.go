package trainer

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// A Model is one row of the model table: a name for `gvdb train --model`,
// its default hidden widths, a line for -h, and its builder. The CLI's
// list of models, its help and its validation all come from Models, so a
// new model is one row here plus its builder.
type Model struct {
	Name string
	// Doc is one line for `gvdb train -h`.
	Doc string
	// Hidden are the default --hidden widths (nil: none); HiddenDoc says
	// what they mean.
	Hidden    []int
	HiddenDoc string
	// Images says the model needs image data (Dataset.C > 0).
	Images bool
	// build adds the model's layers to n (n.x is its input, set by build)
	// and returns its output, of width outputs.
	build func(n *Net, spec Spec, rng *rand.Rand, outputs int) (*G.Node, error)
}

// Models is the model table.
var Models = []Model{
	{Name: "logreg", Doc: "softmax (or, on regression data, linear) regression: one dense layer",
		HiddenDoc: "none", build: buildMLP},
	// The paper's MLP 784-1024-1024-10.
	{Name: "mlp", Doc: "multi-layer perceptron with ReLU (the paper's 784-1024-1024-10 by default)",
		Hidden: []int{1024, 1024}, HiddenDoc: "hidden widths", build: buildMLP},
	// A CNN smaller than the paper's (conv5x5x64-pool-conv5x5x128-pool-
	// fc1000), so that it trains at a useful speed on 2 cores.
	{Name: "cnn", Doc: "two 5x5 conv + 2x2 max-pool stages, then a dense hidden layer (im2col)",
		Hidden: []int{16, 32, 128}, HiddenDoc: "C1,C2,FC: conv channels and dense width", Images: true, build: buildCNN},
}

// LookupModel returns the named row of the model table, or an error that
// lists the models.
func LookupModel(name string) (*Model, error) {
	for i := range Models {
		if Models[i].Name == name {
			return &Models[i], nil
		}
	}
	return nil, fmt.Errorf("unknown model %q (want %s)", name, strings.Join(ModelNames(), ", "))
}

// ModelNames returns the names of the model table's rows, in order.
func ModelNames() []string {
	names := make([]string, len(Models))
	for i, m := range Models {
		names[i] = m.Name
	}
	return names
}

// DefaultHidden returns the default hidden widths of a model (nil for an
// unknown one).
func DefaultHidden(kind string) []int {
	if m, err := LookupModel(kind); err == nil {
		return m.Hidden
	}
	return nil
}

// dense adds a fully connected layer z = x·W + b, followed by a ReLU
// unless it is the last.
func (n *Net) dense(name string, in, out int, x *G.Node, last bool, rng *rand.Rand) (*G.Node, error) {
	l := &layer{name: name, in: in, out: out}
	n.param(l, rng)
	l.a = x
	var err error
	if l.z, err = G.BroadcastAdd(G.Must(G.Mul(x, l.wN)), l.bN, nil, []byte{0}); err != nil {
		return nil, err
	}
	n.layers = append(n.layers, l)
	if last {
		return l.z, nil
	}
	return G.Rectify(l.z)
}

// buildMLP builds logreg (no hidden layer) and mlp.
func buildMLP(n *Net, spec Spec, rng *rand.Rand, outputs int) (*G.Node, error) {
	if spec.Kind == "logreg" && len(spec.Hidden) > 0 {
		return nil, fmt.Errorf("logreg has no hidden layers (got %v)", spec.Hidden)
	}
	n.x = G.NewMatrix(n.g, G.Float32, G.WithShape(n.batch, n.data.Dim), G.WithName("x"))
	h := n.x
	widths := append(append([]int{n.data.Dim}, spec.Hidden...), outputs)
	var err error
	for i := 0; i+1 < len(widths); i++ {
		if h, err = n.dense("fc"+strconv.Itoa(i+1), widths[i], widths[i+1], h, i+2 == len(widths), rng); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// buildCNN builds the CNN: conv5x5-ReLU-pool twice, a dense hidden layer,
// the output layer.
func buildCNN(n *Net, spec Spec, rng *rand.Rand, outputs int) (*G.Node, error) {
	if len(spec.Hidden) != 3 {
		return nil, fmt.Errorf("cnn takes --hidden C1,C2,FC (3 numbers), got %v", spec.Hidden)
	}
	data, batch := n.data, n.batch
	n.x = G.NewTensor(n.g, G.Float32, 4, G.WithShape(batch, data.C, data.H, data.W), G.WithName("x"))
	h := n.x
	var err error
	c, hh, ww := data.C, data.H, data.W
	for i, ch := range spec.Hidden[:2] {
		if h, err = n.convLayer("conv"+strconv.Itoa(i+1), h, c, hh, ww, ch, rng); err != nil {
			return nil, err
		}
		c, hh, ww = ch, (hh-kernel+1)/2, (ww-kernel+1)/2
		if hh < 1 || ww < 1 {
			return nil, fmt.Errorf("image too small for two 5x5 conv + 2x2 pool stages")
		}
	}
	if h, err = G.Reshape(h, tensor.Shape{batch, c * hh * ww}); err != nil {
		return nil, err
	}
	if h, err = n.dense("fc1", c*hh*ww, spec.Hidden[2], h, false, rng); err != nil {
		return nil, err
	}
	return n.dense("fc2", spec.Hidden[2], outputs, h, true, rng)
}

package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"gonum.org/v1/gonum/blas"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"gvdb/db"
)

// Spec describes a model.
type Spec struct {
	// Kind names a row of the model table (Models).
	Kind string
	// Hidden are the MLP's hidden widths, or the CNN's two conv channel
	// counts followed by its fully connected width.
	Hidden []int
}

// ParseHidden parses "1024,1024".
func ParseHidden(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1<<16 {
			return nil, fmt.Errorf("hidden width %q is not a whole number from 1 to 65536", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// layer is one trainable linear map z = a·W + b, dense or convolutional.
type layer struct {
	name    string
	conv    bool
	in, out int // W is in x out; conv: in = C·k·k
	oh, ow  int // conv output spatial size (positions T = oh·ow)

	wN, bN *G.Node
	wT, bT *tensor.Dense
	a, z   *G.Node
	aVal   G.Value
	dzVal  G.Value
	vel    [2][]float32 // momentum buffers of W and b
}

func (l *layer) positions() int {
	if l.conv {
		return l.oh * l.ow
	}
	return 1
}

// Net is a model compiled for a fixed batch size.
type Net struct {
	spec    Spec
	batch   int
	data    *Dataset
	g       *G.ExprGraph
	x, y    *G.Node
	mask    *G.Node // regression only
	cost    *G.Node
	costVal G.Value
	outVal  G.Value
	layers  []*layer
	vm      G.VM
}

const kernel = 5

// NewNet builds spec for data (its input shape and output size) at the
// given batch size, initialized from seed like PyTorch's default: weights
// and biases ~ U(±1/sqrt(fan_in)).
func NewNet(spec Spec, data *Dataset, batch int, seed uint64) (net *Net, err error) {
	defer func() {
		if r := recover(); r != nil {
			net, err = nil, fmt.Errorf("build %s: gorgonia: %v", spec.Kind, r)
		}
	}()
	return newNet(spec, data, batch, seed)
}

func newNet(spec Spec, data *Dataset, batch int, seed uint64) (*Net, error) {
	n := &Net{spec: spec, batch: batch, data: data, g: G.NewGraph()}
	outputs := data.Classes
	if outputs == 0 {
		outputs = 1
	}
	rng := rand.New(rand.NewPCG(seed, 0x1417))
	def, err := LookupModel(spec.Kind)
	if err != nil {
		return nil, err
	}
	if def.Images && data.C == 0 {
		return nil, fmt.Errorf("%s needs image data (%s is not)", spec.Kind, data.Name)
	}
	h, err := def.build(n, spec, rng, outputs)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", spec.Kind, err)
	}

	if data.Classes > 0 {
		n.y = G.NewMatrix(n.g, G.Float32, G.WithShape(batch, outputs), G.WithName("y"))
		lp := G.Must(G.LogSoftMax(h))
		n.cost = G.Must(G.Neg(G.Must(G.Sum(G.Must(G.HadamardProd(lp, n.y))))))
	} else {
		// Regression: padding rows have mask 0 and so no loss and no
		// gradient.
		n.y = G.NewMatrix(n.g, G.Float32, G.WithShape(batch, 1), G.WithName("y"))
		n.mask = G.NewMatrix(n.g, G.Float32, G.WithShape(batch, 1), G.WithName("mask"))
		diff := G.Must(G.Sub(h, n.y))
		n.cost = G.Must(G.Sum(G.Must(G.HadamardProd(G.Must(G.Square(diff)), n.mask))))
	}
	G.Read(h, &n.outVal)
	G.Read(n.cost, &n.costVal)
	var learn G.Nodes
	for _, l := range n.layers {
		learn = append(learn, l.wN, l.bN)
	}
	if _, err := G.Grad(n.cost, learn...); err != nil {
		return nil, fmt.Errorf("build %s: gradient: %w", spec.Kind, err)
	}
	for _, l := range n.layers {
		G.Read(l.a, &l.aVal)
		G.Read(l.z.Deriv(), &l.dzVal)
	}
	n.vm = G.NewTapeMachine(n.g, G.BindDualValues(learn...))
	return n, nil
}

// param creates a layer's weight and bias nodes with PyTorch's default
// initialization.
func (n *Net) param(l *layer, rng *rand.Rand) {
	bound := 1 / math.Sqrt(float64(l.in))
	wd := make([]float32, l.in*l.out)
	for i := range wd {
		wd[i] = float32((2*rng.Float64() - 1) * bound)
	}
	bd := make([]float32, l.out)
	for i := range bd {
		bd[i] = float32((2*rng.Float64() - 1) * bound)
	}
	l.wT = tensor.New(tensor.WithShape(l.in, l.out), tensor.WithBacking(wd))
	l.bT = tensor.New(tensor.WithShape(l.out), tensor.WithBacking(bd))
	l.wN = G.NewMatrix(n.g, G.Float32, G.WithShape(l.in, l.out), G.WithName(l.name+".weight"), G.WithValue(l.wT))
	l.bN = G.NewVector(n.g, G.Float32, G.WithShape(l.out), G.WithName(l.name+".bias"), G.WithValue(l.bT))
	l.vel = [2][]float32{make([]float32, len(wd)), make([]float32, len(bd))}
}

// convLayer adds conv(k x k, stride 1, no padding) -> ReLU -> maxpool 2x2 on
// a (B, c, h, w) input, as im2col rows times an (c·k·k) x ch weight.
func (n *Net) convLayer(name string, x *G.Node, c, h, w, ch int, rng *rand.Rand) (*G.Node, error) {
	l := &layer{name: name, conv: true, in: c * kernel * kernel, out: ch, oh: h - kernel + 1, ow: w - kernel + 1}
	n.param(l, rng)
	col, err := G.Im2Col(x, tensor.Shape{kernel, kernel}, tensor.Shape{0, 0}, tensor.Shape{1, 1}, tensor.Shape{1, 1})
	if err != nil {
		return nil, err
	}
	if l.a, err = G.Reshape(col, tensor.Shape{n.batch * l.oh * l.ow, l.in}); err != nil {
		return nil, err
	}
	if l.z, err = G.BroadcastAdd(G.Must(G.Mul(l.a, l.wN)), l.bN, nil, []byte{0}); err != nil {
		return nil, err
	}
	n.layers = append(n.layers, l)
	r, err := G.Rectify(l.z)
	if err != nil {
		return nil, err
	}
	img, err := G.Reshape(r, tensor.Shape{n.batch, l.oh, l.ow, ch})
	if err != nil {
		return nil, err
	}
	if img, err = G.Transpose(img, 0, 3, 1, 2); err != nil {
		return nil, err
	}
	return G.MaxPool2D(img, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2})
}

// Schema returns the layer schema: a weight and a bias per layer.
func (n *Net) Schema() []db.Layer {
	var out []db.Layer
	for _, l := range n.layers {
		// Weights are stored In x Out, as the factors define them; a
		// convolution's In is its im2col patch (C·k·k values).
		kind, shape := db.DenseWeight, []int{l.in, l.out}
		if l.conv {
			kind = db.ConvWeight
		}
		out = append(out, db.Layer{Name: l.name + ".weight", Kind: kind, Shape: shape, Params: l.in * l.out},
			db.Layer{Name: l.name + ".bias", Kind: db.Bias, Shape: []int{l.out}, Params: l.out})
	}
	return out
}

// Params returns the number of trainable parameters.
func (n *Net) Params() int {
	p := 0
	for _, l := range n.layers {
		p += l.in*l.out + l.out
	}
	return p
}

// CopyParams copies o's parameter values into n (same spec).
func (n *Net) CopyParams(o *Net) {
	for i, l := range n.layers {
		copy(l.wT.Data().([]float32), o.layers[i].wT.Data().([]float32))
		copy(l.bT.Data().([]float32), o.layers[i].bT.Data().([]float32))
	}
}

// run feeds rows idx of the data set (padding a short batch with zero
// inputs and zero targets, which contribute no loss and no gradient) and
// runs the forward and backward pass.
func (n *Net) run(d *Dataset, idx []int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gorgonia: %v", r)
		}
	}()
	xs := make([]float32, n.batch*d.Dim)
	width := max(d.Classes, 1)
	ys := make([]float32, n.batch*width)
	mask := make([]float32, n.batch)
	for r, i := range idx {
		copy(xs[r*d.Dim:], d.Row(i))
		mask[r] = 1
		if d.Classes > 0 {
			target(ys[r*width:(r+1)*width], d.Labels[i], d.Smoothing)
		} else {
			ys[r] = d.Targets[i]
		}
	}
	if n.mask != nil {
		if err := G.Let(n.mask, tensor.New(tensor.WithShape(n.batch, 1), tensor.WithBacking(mask))); err != nil {
			return err
		}
	}
	shape := tensor.Shape{n.batch, d.Dim}
	if n.x.Dims() == 4 { // image input (cnn)
		shape = tensor.Shape{n.batch, d.C, d.H, d.W}
	}
	if err := G.Let(n.x, tensor.New(tensor.WithShape(shape...), tensor.WithBacking(xs))); err != nil {
		return err
	}
	if err := G.Let(n.y, tensor.New(tensor.WithShape(n.batch, width), tensor.WithBacking(ys))); err != nil {
		return err
	}
	n.vm.Reset()
	if err := n.vm.RunAll(); err != nil {
		return fmt.Errorf("forward/backward: %w", err)
	}
	return nil
}

// target writes a classification target: one-hot at label, smoothed to
// (1 − e)·onehot + e/K.
func target(row []float32, label int, e float64) {
	k := float64(len(row))
	for c := range row {
		row[c] = float32(e / k)
	}
	row[label] += float32(1 - e)
}

// exampleLosses returns the loss of each of the first m examples idx of
// the last pass: cross-entropy against the (smoothed) target, or the
// squared error.
func (n *Net) exampleLosses(d *Dataset, idx []int) []float64 {
	out := n.outVal.Data().([]float32)
	width := max(d.Classes, 1)
	losses := make([]float64, len(idx))
	t := make([]float32, width)
	for r, i := range idx {
		z := out[r*width : (r+1)*width]
		if d.Classes == 0 {
			e := float64(z[0]) - float64(d.Targets[i])
			losses[r] = e * e
			continue
		}
		hi := float64(z[0])
		for _, v := range z {
			hi = max(hi, float64(v))
		}
		sum := 0.0
		for _, v := range z {
			sum += math.Exp(float64(v) - hi)
		}
		lse := hi + math.Log(sum)
		target(t, d.Labels[i], d.Smoothing)
		for c, v := range z {
			losses[r] += float64(t[c]) * (lse - float64(v))
		}
	}
	return losses
}

// grads returns the summed-loss gradients of W and b of layer l.
func (n *Net) grads(l *layer) (gw, gb []float32, err error) {
	w, err := l.wN.Grad()
	if err != nil {
		return nil, nil, err
	}
	b, err := l.bN.Grad()
	if err != nil {
		return nil, nil, err
	}
	return w.Data().([]float32), b.Data().([]float32), nil
}

// zeroGrads clears the accumulated parameter gradients.
func (n *Net) zeroGrads() error {
	for _, l := range n.layers {
		gw, gb, err := n.grads(l)
		if err != nil {
			return err
		}
		clear(gw)
		clear(gb)
	}
	return nil
}

// Close releases the VM.
func (n *Net) Close() error {
	err := n.vm.Close()
	// Gorgonia keeps the graph, and through it the Net, reachable after
	// its VM closes: without this, a process that trains more than once
	// (the demo, tests) kept every training set (180 MB for MNIST).
	n.data = nil
	return err
}

// BLAS is a complete BLAS implementation.
type BLAS interface {
	blas.Float32
	blas.Float64
	blas.Complex64
	blas.Complex128
}

// UseBLAS makes Gorgonia's matrix products use b (for instance OpenBLAS,
// which the CLI hands over when it is installed: db/stats/blas.go).
func UseBLAS(b BLAS) { G.Use(b) }

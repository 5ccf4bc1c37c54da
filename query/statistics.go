package query

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/alecthomas/participle/v2/lexer"

	"gvdb/db"
	"gvdb/db/stats"
	"gvdb/query/parser"
)

// needs says what a statistic needs from a snapshot besides the scope's
// basic moments (N, D, Σ|g_i|², |Σ g_i|²).
type needs struct {
	coords bool // per-coordinate moments Σ_i g_ij² (and the summed gradient)
	inner  bool // per-example g_i·μ
	mean   bool // the summed gradient Σ_i g_i
	gc     bool // a Gradient Clustering partition
	anchor bool // the SVRG anchor blocks (moments of the differences)
	// anchorCoords: per-coordinate moments of the SVRG differences.
	anchorCoords bool
}

// statDef is one statistic of the language: the one place that says what
// it is called, what it takes, what it needs, whether it pools, how it is
// computed and what it means. docs/QUERY.md's table is checked against
// this table by a test.
type statDef struct {
	name string
	// args name the statistic's arguments: "B" (batch size, default the
	// run's) and "K" (clusters, default B).
	args []string
	need needs
	// pooled says the statistic has a pooled form: it is a function of
	// moments that merge across snapshots (pooled(stat)).
	pooled bool
	// fit says the statistic takes a Gradient Clustering fit after its
	// numbers: a method ('exact' or 'paper') and a refit period
	// (gc_variance(K, B, 'paper', 2000)).
	fit bool
	// eval computes the statistic for one snapshot and scope, or for a
	// window's pooled moments (then only x.m is set).
	eval func(x *scopeData, args []float64) (float64, error)
	doc  string
}

// scopeData is what a statistic is computed from: one snapshot's blocks
// over one scope of layers, with what was derived from them so far.
type scopeData struct {
	m          *stats.Moments
	population db.Population
	// gc returns the snapshot scope's Gradient Clustering (its partitions
	// through the evaluation's cache, the Gram matrix or sketch built
	// only when one is fitted); svrg the moments of the per-example
	// differences g_i(θ) − g_i(θ̃).
	gc   func() *gcScope
	svrg func() (*stats.Moments, error)
	// refit returns the partition fitted at the latest full snapshot at or
	// before this one whose step is a multiple of every (refit_every), and
	// its cache key.
	refit func(every int64, k int, method stats.Method) (*stats.FixedPartition, string, error)
	// warn reports a warning for the snapshot, warnRun one for its run.
	warn, warnRun func(string)
	// run is the snapshot's run; strata the sample's recorded design
	// (gvdb train --snapshot-strata; nil: none).
	run    *db.Run
	strata *stats.Strata
}

// moment adapts a function of the moments.
func moment(f func(m *stats.Moments, a []float64) (float64, error)) func(*scopeData, []float64) (float64, error) {
	return func(x *scopeData, a []float64) (float64, error) { return f(x.m, a) }
}

// gcStat adapts a function of a Gradient Clustering partition: held out
// on a sample unless insample, in-sample on a full snapshot; with a
// refit period (fit arguments), the partition fitted at an earlier full
// snapshot, scored on this one. a holds the statistic's numbers, then the
// method and the refit period (0: fitted on this snapshot).
func gcStat(insample bool, f func(x *scopeData, p *stats.Partition, a []float64) (float64, error)) func(*scopeData, []float64) (float64, error) {
	return func(x *scopeData, a []float64) (float64, error) {
		if x.m.NonFinite {
			return math.NaN(), nil
		}
		g := x.gc()
		k := int(a[0])
		method, refit := stats.Method(a[len(a)-2]), int64(a[len(a)-1])
		var p *stats.Partition
		var err error
		switch {
		case refit > 0 && insample:
			return math.NaN(), fmt.Errorf("refit_every scores a partition fitted elsewhere: the _insample forms fit on the snapshot itself")
		case refit > 0:
			fixed, fkey, err := x.refit(refit, k, method)
			if err != nil {
				return math.NaN(), err
			}
			var warnings []string
			if p, warnings, err = g.score(fkey, fixed); err != nil {
				return math.NaN(), err
			}
			warnings = slices.Clone(warnings) // the cache's
			if w, perRun := strataWarning(x, g.ids(), fixed, refit, k, method); perRun {
				x.warnRun(w)
			} else if w != "" {
				warnings = append(warnings, w)
			}
			for _, w := range warnings {
				x.warn(w)
			}
		case insample || x.population == db.Full:
			p, err = g.fit(k, method, false)
		default:
			p, err = g.fit(k, method, true)
		}
		if err != nil {
			return math.NaN(), err
		}
		return f(x, p, a)
	}
}

// svrgStat adapts a function of the SVRG difference moments.
func svrgStat(f func(m *stats.Moments, a []float64) (float64, error)) func(*scopeData, []float64) (float64, error) {
	return func(x *scopeData, a []float64) (float64, error) {
		m, err := x.svrg()
		if err != nil || m == nil {
			return math.NaN(), err
		}
		return f(m, a)
	}
}

func ok(v float64) (float64, error) { return v, nil }

// statistics is the language's statistic table; docs/QUERY.md defines
// each one.
var statistics = []*statDef{
	{name: "variance", args: []string{"B"}, pooled: true,
		eval: moment(func(m *stats.Moments, a []float64) (float64, error) { return ok(m.Variance(a[0])) }),
		doc:  "variance of the SG-B mini-batch mean per coordinate: S/(B·D)"},
	{name: "nvar", args: []string{"B"}, pooled: true, need: needs{coords: true},
		eval: moment(func(m *stats.Moments, a []float64) (float64, error) { return m.NVar(a[0]) }),
		doc:  "normalized gradient variance of SG-B: mean_j v_j/(μ_j²+v_j)"},
	{name: "gns", pooled: true,
		eval: moment(func(m *stats.Moments, _ []float64) (float64, error) { return ok(m.GNS()) }),
		doc:  "gradient noise scale B_simple = S/|μ|²"},
	{name: "snr", args: []string{"B"}, pooled: true, need: needs{coords: true},
		eval: moment(func(m *stats.Moments, a []float64) (float64, error) { return m.SNR(a[0]) }),
		doc:  "mean_j ln((μ_j²+v_j)/v_j) over coordinates with v_j > 0"},
	{name: "norm", pooled: true,
		eval: moment(func(m *stats.Moments, _ []float64) (float64, error) { return ok(m.Norm()) }),
		doc:  "|μ|, the norm of the mean gradient"},
	{name: "example_norm", pooled: true,
		eval: moment(func(m *stats.Moments, _ []float64) (float64, error) { return ok(m.ExampleNorm()) }),
		doc:  "mean_i |g_i|"},
	{name: "norm_test", args: []string{"B"}, pooled: true,
		eval: moment(func(m *stats.Moments, a []float64) (float64, error) { return ok(m.NormTest(a[0])) }),
		doc:  "norm test sqrt(Σ|g_i−μ|²/((N−1)·B·|μ|²)); B = N is Cockpit's"},
	{name: "inner_test", args: []string{"B"}, need: needs{inner: true},
		eval: moment(func(m *stats.Moments, a []float64) (float64, error) { return m.InnerTest(a[0]) }),
		doc:  "inner-product test sqrt(Var(g_i·μ)/(B·|μ|⁴))"},
	{name: "ortho_test", args: []string{"B"}, need: needs{inner: true},
		eval: moment(func(m *stats.Moments, a []float64) (float64, error) { return m.OrthoTest(a[0]) }),
		doc:  "orthogonality test sqrt(Σ|g_i−(g_i·μ/|μ|²)μ|²/((N−1)·B·|μ|²))"},
	{name: "gc_variance", fit: true, args: []string{"K", "B"}, need: needs{gc: true},
		eval: gcStat(false, func(x *scopeData, p *stats.Partition, a []float64) (float64, error) {
			return ok(p.Variance(a[1], x.m.D))
		}),
		doc: "variance of Gradient Clustering with K clusters, batch B (full snapshot: in-sample; sample: held out); then optionally the method ('exact', gvdb's fit, or 'paper', the paper's algorithm) and refit_every T (the partition of the latest full snapshot at a multiple of T)"},
	{name: "gc_nvar", fit: true, args: []string{"K", "B"}, need: needs{gc: true, mean: true},
		eval: gcStat(false, func(x *scopeData, p *stats.Partition, a []float64) (float64, error) {
			return x.gc().nvar(p, x.m, a[1])
		}),
		doc: "normalized variance of Gradient Clustering (populations as gc_variance)"},
	{name: "gc_distortion", fit: true, args: []string{"K"}, need: needs{gc: true},
		eval: gcStat(false, func(_ *scopeData, p *stats.Partition, _ []float64) (float64, error) {
			return ok(p.Distortion())
		}),
		doc: "weighted distortion Σ_k N_k Σ_{i∈C_k}|g_i−μ_k|² of the K-clustering (populations as gc_variance)"},
	{name: "gc_variance_insample", fit: true, args: []string{"K", "B"}, need: needs{gc: true},
		eval: gcStat(true, func(x *scopeData, p *stats.Partition, a []float64) (float64, error) {
			return ok(p.Variance(a[1], x.m.D))
		}),
		doc: "gc_variance fitted and scored on the snapshot's own examples (optimistic on a sample)"},
	{name: "gc_nvar_insample", fit: true, args: []string{"K", "B"}, need: needs{gc: true, mean: true},
		eval: gcStat(true, func(x *scopeData, p *stats.Partition, a []float64) (float64, error) {
			return x.gc().nvar(p, x.m, a[1])
		}),
		doc: "gc_nvar fitted and scored on the snapshot's own examples"},
	{name: "gc_distortion_insample", fit: true, args: []string{"K"}, need: needs{gc: true},
		eval: gcStat(true, func(_ *scopeData, p *stats.Partition, _ []float64) (float64, error) {
			return ok(p.Distortion())
		}),
		doc: "gc_distortion fitted and scored on the snapshot's own examples"},
	{name: "svrg_variance", args: []string{"B"}, need: needs{anchor: true},
		eval: svrgStat(func(m *stats.Moments, a []float64) (float64, error) { return ok(m.Variance(a[0])) }),
		doc:  "variance of SVRG's μ̃ + (1/B)Σ(g_i(θ) − g_i(θ̃)): Var_i[g_i(θ) − g_i(θ̃)]/(B·D)"},
	{name: "svrg_nvar", args: []string{"B"}, need: needs{anchor: true, anchorCoords: true, mean: true},
		eval: func(x *scopeData, a []float64) (float64, error) {
			d, err := x.svrg()
			if err != nil || d == nil {
				return math.NaN(), err
			}
			return stats.SVRGNVar(d, x.m, a[0])
		},
		doc: "normalized variance of SVRG: mean_j v_j/(μ_j²+v_j), v_j = Var_i[g_ij(θ) − g_ij(θ̃)]/B"},
	{name: "examples", pooled: true,
		eval: moment(func(m *stats.Moments, _ []float64) (float64, error) { return ok(float64(m.N)) }),
		doc:  "N, the examples in a snapshot (summed when pooled)"},
	{name: "params", pooled: true,
		eval: moment(func(m *stats.Moments, _ []float64) (float64, error) { return ok(float64(m.D)) }),
		doc:  "D, the parameters in scope"},
}

var statByName = func() map[string]*statDef {
	m := map[string]*statDef{}
	for _, d := range statistics {
		m[d.name] = d
	}
	return m
}()

// lookupStat returns the named statistic, or nil.
func lookupStat(name string) *statDef { return statByName[name] }

func isStat(n string) bool { return lookupStat(n) != nil }

// keys are the names that identify a row rather than compute a value.
var keys = map[string]bool{"step": true, "run": true, "layer": true}

func statNames() []string {
	names := make([]string, 0, len(statistics))
	for _, d := range statistics {
		names = append(names, d.name)
	}
	sort.Strings(names)
	return names
}

// signature returns "name(args)", as the docs write it.
func (d *statDef) signature() string {
	if len(d.args) == 0 {
		return d.name
	}
	return d.name + "(" + strings.Join(d.args, ", ") + ")"
}

// StatisticDocs returns "name(args): description" lines for help texts.
func StatisticDocs() []string {
	var out []string
	for _, n := range statNames() {
		d := lookupStat(n)
		out = append(out, d.signature()+": "+d.doc)
	}
	return out
}

// maxArg bounds statistic arguments (batch sizes and cluster counts).
const maxArg = 1 << 31

// checkK applies the one rule on a number of clusters K, wherever a
// query or a figure names one: a whole number from 1 to n, the examples
// available (where says which), else an error at pos saying the range.
func checkK(pos lexer.Position, what string, k float64, n int, where string) error {
	if k >= 1 && k <= float64(n) && k == math.Trunc(k) {
		return nil
	}
	if n < 1 {
		return &parser.Error{Pos: pos, Msg: fmt.Sprintf("%s: K must be a whole number from 1 to the examples available, and there are none (%s)", what, where)}
	}
	return &parser.Error{Pos: pos, Msg: fmt.Sprintf("%s: K must be a whole number from 1 to %d (%s), got %g", what, n, where, k)}
}

// statRef is one statistic the query needs, with its arguments as written
// (NaN: the default, resolved per run).
type statRef struct {
	name   string
	args   []float64
	pooled bool
	// method and refit are a Gradient Clustering statistic's fit
	// (statDef.fit): how the partition is fitted, and every how many steps
	// (0: on each snapshot).
	method stats.Method
	refit  int64
	fitSet bool           // the query gave a method
	pos    lexer.Position // where the query names it
}

// statRefOf returns the statistic an operand names, with its arguments:
// a bare statistic name, a call such as gc_variance(128, 256), or
// pooled(stat). ok is false for operands that are not statistics (numbers,
// scalars, keys); err reports a malformed statistic call.
func statRefOf(o parser.Operand) (ref statRef, ok bool, err error) {
	switch x := o.(type) {
	case *parser.Name:
		n := string(x.Name)
		return statRef{name: n, pos: x.Pos}, isStat(n), nil
	case *parser.Call:
		n := string(x.Name)
		if n == "pooled" {
			if len(x.Args) != 1 {
				return ref, false, parser.Errorf(x.Pos, "pooled takes exactly one statistic: pooled(variance(128))")
			}
			inner, ok, err := statRefOf(singleOperand(x.Args[0]))
			if err != nil {
				return ref, false, err
			}
			if !ok || inner.pooled {
				return ref, false, parser.Errorf(x.Pos, "pooled takes a statistic: pooled(variance(128))")
			}
			if !lookupStat(inner.name).pooled {
				return ref, false, parser.Errorf(x.Pos, "%s has no pooled form (it is defined per snapshot)", inner.name)
			}
			inner.pooled = true
			return inner, true, nil
		}
		def := lookupStat(n)
		if def == nil {
			return ref, false, unknownStat(x.Pos, n)
		}
		if max := len(def.args); len(x.Args) > max && !def.fit {
			return ref, false, parser.Errorf(x.Pos, "%s takes at most %d argument(s) (%s), got %d", n, max, strings.Join(def.args, ", "), len(x.Args))
		}
		ref = statRef{name: n, pos: x.Pos}
		for _, a := range x.Args {
			if str, ok := singleOperand(a).(*parser.Str); ok {
				if !def.fit {
					return ref, false, parser.Errorf(str.Pos, "%s takes numbers only, got %s", n, str)
				}
				if ref.fitSet {
					return ref, false, parser.Errorf(str.Pos, "%s takes one method, got a second: %s", n, str)
				}
				m, err := stats.ParseMethod(str.Value)
				if err != nil {
					return ref, false, parser.Errorf(str.Pos, "%s: %v", n, err)
				}
				ref.method, ref.fitSet = m, true
				continue
			}
			v, err := constant(a)
			if err != nil {
				return ref, false, err
			}
			if ref.fitSet {
				if ref.refit != 0 {
					return ref, false, parser.Errorf(x.Pos, "%s takes at most the method and refit_every after its numbers", n)
				}
				if !(v >= 1 && v <= 1<<62) || v != math.Trunc(v) {
					return ref, false, parser.Errorf(x.Pos, "%s: refit_every must be a whole number of steps from 1, got %g", n, v)
				}
				ref.refit = int64(v)
				continue
			}
			if len(ref.args) == len(def.args) {
				more := ""
				if def.fit {
					more = ", then 'exact' or 'paper' and refit_every"
				}
				return ref, false, parser.Errorf(x.Pos, "%s takes at most %d number(s) (%s)%s, got %d", n, len(def.args), strings.Join(def.args, ", "), more, len(ref.args)+1)
			}
			if !(v >= 1 && v <= maxArg) || v != math.Trunc(v) {
				return ref, false, parser.Errorf(x.Pos, "%s: %s must be a whole number from 1 to %d, got %g", n, def.args[len(ref.args)], maxArg, v)
			}
			ref.args = append(ref.args, v)
		}
		return ref, true, nil
	}
	return ref, false, nil
}

// singleOperand returns the operand of an expression that is exactly one
// operand, or nil.
func singleOperand(e *parser.Expr) parser.Operand {
	if len(e.Ops) > 0 || len(e.Left.Ops) > 0 || e.Left.Left.Neg {
		return nil
	}
	return e.Left.Left.Operand
}

// resolve fills default arguments for a run with batch size batch: B is
// the batch size, K is B (one example per cluster per batch, as the
// paper).
func (s statRef) resolve(batch int) statRef {
	def := lookupStat(s.name)
	out := statRef{name: s.name, pooled: s.pooled, args: make([]float64, len(def.args)), method: s.method, refit: s.refit, fitSet: s.fitSet, pos: s.pos}
	given := func(name string) float64 {
		for j, b := range def.args {
			if b == name && j < len(s.args) && !math.IsNaN(s.args[j]) {
				return s.args[j]
			}
		}
		return math.NaN()
	}
	for i, a := range def.args {
		v := given(a)
		if math.IsNaN(v) {
			v = float64(batch)
			if a == "K" && !math.IsNaN(given("B")) {
				v = given("B")
			}
		}
		out.args[i] = v
	}
	return out
}

// key identifies a resolved statistic in a row's cells.
func (s statRef) key() string {
	k := s.text(",")
	if s.pooled {
		k = "pooled(" + k + ")"
	}
	return k
}

// text prints the statistic with its arguments separated by sep.
func (s statRef) text(sep string) string {
	if len(s.args) == 0 {
		return s.name
	}
	parts := make([]string, len(s.args))
	for i, a := range s.args {
		parts[i] = fmt.Sprint(a)
	}
	if s.fitSet || s.refit > 0 {
		parts = append(parts, parser.Quote(s.method.String()))
	}
	if s.refit > 0 {
		parts = append(parts, fmt.Sprint(s.refit))
	}
	return s.name + "(" + strings.Join(parts, sep) + ")"
}

// evalArgs are the numbers a statistic's eval takes: its arguments, then,
// for a Gradient Clustering fit, the method and the refit period.
func (s statRef) evalArgs() []float64 {
	if !lookupStat(s.name).fit {
		return s.args
	}
	return append(append([]float64(nil), s.args...), float64(s.method), float64(s.refit))
}

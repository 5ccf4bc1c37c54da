package report

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"gvdb/db"
	"gvdb/query"
	"gvdb/query/parser"
)

// Verdicts of a finding.
const (
	Holds         = "holds"
	DoesNotHold   = "does not hold"
	NotMeasurable = "not measurable here"
)

// Finding is one of the paper's claims measured on the runs of a report.
type Finding struct {
	Claim   string  // the paper's claim
	Measure string  // what was measured, on which runs
	Value   float64 // the number (NaN when not measurable)
	Verdict string  // Holds, DoesNotHold or NotMeasurable
	Why     string  // the numbers behind the verdict, or why it is not measurable
}

// FindingsTable is the findings as a table (gvdb report --findings-only).
func FindingsTable(fs []Finding) *query.Table {
	t := &query.Table{Columns: []string{"claim", "measured", "value", "verdict", "why"}}
	for _, f := range fs {
		t.Add(f.Claim, f.Measure, f.Value, f.Verdict, f.Why)
	}
	return t
}

// runStats are the per-run numbers the findings use.
type runStats struct {
	r                *db.Run
	b                int
	steps            []int64   // snapshot steps
	variance, nvar   []float64 // variance(B), nvar(B) per snapshot step
	gcExact, gcPaper float64   // mean GC / SG-2B over full snapshots (NaN: none)
	gcOverSG         float64   // mean GC exact / SG-B over full snapshots
	paperNote        string    // why the paper's refitted GC is missing
	paperT           int64     // its refit period (paperRefit)
	windows          []float64 // loss decrease rate per window between snapshots
	winNvar, winVar  []float64 // nvar and variance at each window's start
	perturbed        string
}

// Findings measures the paper's claims on runs: variance's trend over
// training, learning rate against variance, GC (the paper's algorithm
// refitted every T steps, paperRefit, and gvdb's exact fit) against
// SG-2B, NGV against variance as a tracker of convergence speed, and
// GC's gain on perturbed data. k is the largest GC cluster count (K =
// min(k, B)). Its queries share cache (nil: one of their own).
func Findings(ctx context.Context, d *db.DB, runs []*db.Run, k int, cache *query.GCCache) ([]Finding, error) {
	if cache == nil {
		cache = query.NewGCCache(0)
	}
	eval := func(q string) (*query.Result, error) {
		st, err := parser.ParseStatement(q)
		if err != nil {
			return nil, err
		}
		return query.Eval(ctx, d, st, query.Options{Cache: cache})
	}
	var rs []*runStats
	for _, r := range runs {
		fulls, err := fullSteps(d, r)
		if err != nil {
			return nil, err
		}
		if kr := min(k, max(r.BatchSize, 1)); len(fulls) > 0 {
			t, _ := paperRefit(r, fulls, kr)
			warm(ctx, d, cache, r, kr, t)
		}
		s, err := measureRun(eval, r, k)
		if err != nil {
			return nil, err
		}
		rs = append(rs, s)
	}
	return []Finding{trendFinding(rs), lrFinding(rs), gcFinding(rs, true), gcFinding(rs, false), ngvFinding(rs), perturbFinding(rs)}, nil
}

// column returns res's column name as float64s, and the steps.
func column(res *query.Result, name string) ([]int64, []float64) {
	ci, si := slices.Index(res.Columns, name), slices.Index(res.Columns, "step")
	var steps []int64
	var vals []float64
	for _, row := range res.Rows {
		v := math.NaN()
		if ci >= 0 {
			if f, ok := row[ci].(float64); ok {
				v = f
			}
		}
		var s int64
		if si >= 0 {
			s, _ = row[si].(int64)
		}
		steps, vals = append(steps, s), append(vals, v)
	}
	return steps, vals
}

func measureRun(eval func(string) (*query.Result, error), r *db.Run, k int) (*runStats, error) {
	b := max(r.BatchSize, 1)
	k = min(k, b)
	q := parser.Quote(r.Name)
	s := &runStats{r: r, b: b, gcExact: math.NaN(), gcPaper: math.NaN(), gcOverSG: math.NaN(), perturbed: perturbations(r)}
	res, err := eval(fmt.Sprintf("SELECT variance(%d) AS v, nvar(%d) AS nv FROM %s", b, b, q))
	if err != nil {
		return nil, err
	}
	s.steps, s.variance = column(res, "v")
	_, s.nvar = column(res, "nv")
	// GC at the full snapshots, against SG-2B and SG-B there.
	full, err := eval(fmt.Sprintf("SELECT variance(%d) AS sg, variance(%d) AS sg2, gc_variance(%d, %d) AS gc FROM %s WHERE population = 'full'", b, 2*b, k, b, q))
	if err == nil && len(full.Rows) > 0 {
		_, sg := column(full, "sg")
		_, sg2 := column(full, "sg2")
		_, gc := column(full, "gc")
		s.gcExact, s.gcOverSG = meanRatio(gc, sg2), meanRatio(gc, sg)
		fulls, _ := column(full, "gc")
		if t, why := paperRefit(r, fulls, k); t > 0 {
			p, err := eval(fmt.Sprintf("SELECT variance(%d) AS sg2, gc_variance(%d, %d, 'paper', %d) AS gc FROM %s WHERE population = 'full'", 2*b, k, b, t, q))
			if err != nil {
				s.paperNote = err.Error()
			} else {
				_, sg2 := column(p, "sg2")
				_, gc := column(p, "gc")
				s.gcPaper, s.paperT = meanRatio(gc, sg2), t
			}
		} else {
			s.paperNote = why
		}
	} else {
		s.paperNote = "no full snapshots"
	}
	// Loss decrease rate over each window between snapshots, beside NGV
	// and variance at the window's start.
	if r.SnapshotEvery > 0 {
		lres, err := eval(fmt.Sprintf("SELECT loss FROM %s GROUP BY window(%d)", q, r.SnapshotEvery))
		if err != nil {
			return nil, err
		}
		ls, loss := column(lres, "loss")
		at := map[int64]int{}
		for i, st := range s.steps {
			at[st] = i
		}
		for i := 0; i+1 < len(ls); i++ {
			j, ok := at[ls[i]]
			if !ok || math.IsNaN(loss[i]) || math.IsNaN(loss[i+1]) || ls[i+1] == ls[i] {
				continue
			}
			s.windows = append(s.windows, (loss[i]-loss[i+1])/float64(ls[i+1]-ls[i]))
			s.winNvar, s.winVar = append(s.winNvar, s.nvar[j]), append(s.winVar, s.variance[j])
		}
	}
	return s, nil
}

// meanRatio is the mean of a[i]/b[i] over the finite ratios.
func meanRatio(a, b []float64) float64 {
	sum, n := 0.0, 0
	for i := range a {
		if r := a[i] / b[i]; !math.IsNaN(r) && !math.IsInf(r, 0) {
			sum += r
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// thirds returns the mean of the first and the last third of xs.
func thirds(xs []float64) (first, last float64) {
	n := len(xs) / 3
	mean := func(v []float64) float64 {
		s, c := 0.0, 0
		for _, x := range v {
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				s += x
				c++
			}
		}
		return s / float64(c)
	}
	return mean(xs[:n]), mean(xs[len(xs)-n:])
}

func trendFinding(rs []*runStats) Finding {
	f := Finding{Claim: "gradient variance increases during training", Measure: "variance(B) per coordinate, mean of the last third of snapshots over the first third, per run (geometric mean over runs)", Value: math.NaN()}
	var parts []string
	logSum, n, up := 0.0, 0, 0
	for _, s := range rs {
		if len(s.variance) < 3 {
			continue
		}
		a, z := thirds(s.variance)
		r := z / a
		if math.IsNaN(r) || math.IsInf(r, 0) || r <= 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.3g", s.r.Name, r))
		logSum += math.Log(r)
		n++
		if r > 1 {
			up++
		}
	}
	if n == 0 {
		f.Verdict, f.Why = NotMeasurable, "no run has 3 or more snapshots"
		return f
	}
	f.Value = math.Exp(logSum / float64(n))
	f.Verdict = DoesNotHold
	if up == n {
		f.Verdict = Holds
	}
	f.Why = fmt.Sprintf("rises in %d of %d runs (last/first third: %s)", up, n, strings.Join(parts, ", "))
	return f
}

func lrFinding(rs []*runStats) Finding {
	f := Finding{Claim: "smaller learning rates coincide with higher variance", Measure: "Spearman correlation of lr with the mean variance(B) over training, across runs on clean data", Value: math.NaN()}
	var lrs, vs []float64
	var parts []string
	for _, s := range rs {
		if s.perturbed != "" || s.r.LR <= 0 {
			continue
		}
		m := meanRatio(s.variance, ones(len(s.variance)))
		lrs, vs = append(lrs, s.r.LR), append(vs, m)
		parts = append(parts, fmt.Sprintf("%s (lr %g) %.3g", s.r.Name, s.r.LR, m))
	}
	distinct := map[float64]bool{}
	for _, l := range lrs {
		distinct[l] = true
	}
	if len(distinct) < 2 {
		f.Verdict, f.Why = NotMeasurable, "needs runs on clean data that differ in learning rate"
		return f
	}
	f.Value = Spearman(lrs, vs)
	f.Verdict = DoesNotHold
	if f.Value < 0 {
		f.Verdict = Holds
	}
	f.Why = "mean variance: " + strings.Join(parts, ", ")
	return f
}

func ones(n int) []float64 {
	o := make([]float64, n)
	for i := range o {
		o[i] = 1
	}
	return o
}

func gcFinding(rs []*runStats, paper bool) Finding {
	f := Finding{Claim: "GC (gvdb's exact fit) has lower variance than SG-2B", Measure: "GC / SG-2B variance at the full snapshots, K = min(k, B), mean over snapshots and runs", Value: math.NaN()}
	if paper {
		f.Claim = "GC (the paper's algorithm, refitted every T steps and used in between) has lower variance than SG-2B"
	}
	var parts, missing []string
	sum, n, below := 0.0, 0, 0
	for _, s := range rs {
		v := s.gcExact
		if paper {
			v = s.gcPaper
		}
		if math.IsNaN(v) {
			if paper && s.paperNote != "" {
				missing = append(missing, s.r.Name+": "+s.paperNote)
			}
			continue
		}
		if paper {
			parts = append(parts, fmt.Sprintf("%s %.3g (T = %d)", s.r.Name, v, s.paperT))
		} else {
			parts = append(parts, fmt.Sprintf("%s %.3g", s.r.Name, v))
		}
		sum += v
		n++
		if v < 1 {
			below++
		}
	}
	if n == 0 {
		f.Verdict, f.Why = NotMeasurable, "no run has full snapshots (gvdb train --full-snapshot-every)"
		if len(missing) > 0 {
			f.Why += "; " + strings.Join(missing, "; ")
		}
		return f
	}
	f.Value = sum / float64(n)
	f.Verdict = DoesNotHold
	if below == n {
		f.Verdict = Holds
	}
	f.Why = fmt.Sprintf("below 1 in %d of %d runs: %s", below, n, strings.Join(parts, ", "))
	if len(missing) > 0 {
		f.Why += "; left out: " + strings.Join(missing, "; ")
	}
	return f
}

func ngvFinding(rs []*runStats) Finding {
	f := Finding{Claim: "normalized variance (NGV) tracks convergence speed better than variance", Measure: "|Spearman| of NGV and of variance at each window's start with the loss decrease rate over the window (windows between snapshots, all runs); value: |ρ NGV| − |ρ variance|", Value: math.NaN()}
	var rate, nv, v []float64
	for _, s := range rs {
		rate, nv, v = append(rate, s.windows...), append(nv, s.winNvar...), append(v, s.winVar...)
	}
	if len(rate) < 4 {
		f.Verdict, f.Why = NotMeasurable, fmt.Sprintf("%d windows with loss and a snapshot; needs 4 or more (runs with --snapshot-every and logged loss)", len(rate))
		return f
	}
	rn, rv := Spearman(nv, rate), Spearman(v, rate)
	f.Value = math.Abs(rn) - math.Abs(rv)
	f.Verdict = DoesNotHold
	if f.Value > 0 {
		f.Verdict = Holds
	}
	f.Why = fmt.Sprintf("ρ(NGV, rate) = %.3g, ρ(variance, rate) = %.3g over %d windows", rn, rv, len(rate))
	return f
}

func perturbFinding(rs []*runStats) Finding {
	f := Finding{Claim: "duplicates and corrupted labels widen GC's gain", Measure: "mean GC / SG-B at the full snapshots on runs with duplicates or corrupted labels, over that on clean runs (below 1: a wider gain)", Value: math.NaN()}
	var clean, pert []float64
	var parts []string
	for _, s := range rs {
		if math.IsNaN(s.gcOverSG) {
			continue
		}
		switch {
		case s.perturbed == "":
			clean = append(clean, s.gcOverSG)
		case strings.Contains(s.perturbed, "duplicate") || strings.Contains(s.perturbed, "corrupt_labels"):
			pert = append(pert, s.gcOverSG)
		default:
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (%s) %.3g", s.r.Name, cmpOr(s.perturbed, "clean"), s.gcOverSG))
	}
	if len(clean) == 0 || len(pert) == 0 {
		f.Verdict, f.Why = NotMeasurable, "needs clean runs and runs with --duplicate or --corrupt-labels, all with full snapshots"
		return f
	}
	f.Value = meanRatio(pert, ones(len(pert))) / meanRatio(clean, ones(len(clean)))
	f.Verdict = DoesNotHold
	if f.Value < 1 {
		f.Verdict = Holds
	}
	f.Why = "GC / SG-B: " + strings.Join(parts, ", ")
	return f
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Spearman is the rank correlation of x and y (average ranks for ties;
// NaN pairs dropped).
func Spearman(x, y []float64) float64 {
	var a, b []float64
	for i := range x {
		if !math.IsNaN(x[i]) && !math.IsNaN(y[i]) {
			a, b = append(a, x[i]), append(b, y[i])
		}
	}
	ra, rb := ranks(a), ranks(b)
	n := float64(len(ra))
	var ma, mb float64
	for i := range ra {
		ma += ra[i] / n
		mb += rb[i] / n
	}
	var sab, saa, sbb float64
	for i := range ra {
		sab += (ra[i] - ma) * (rb[i] - mb)
		saa += (ra[i] - ma) * (ra[i] - ma)
		sbb += (rb[i] - mb) * (rb[i] - mb)
	}
	return sab / math.Sqrt(saa*sbb)
}

func ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return x[idx[i]] < x[idx[j]] })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && x[idx[j+1]] == x[idx[i]] {
			j++
		}
		for k := i; k <= j; k++ {
			r[idx[k]] = float64(i+j)/2 + 1
		}
		i = j + 1
	}
	return r
}

// PaperRefitEvery is the paper's refit period of its Gradient Clustering
// partition (its code's g_bsnap_iter, 2000 steps on MNIST).
const PaperRefitEvery = 2000

// paperRefit chooses T, the refit period of the paper's GC curve on run r
// (K clusters) whose full snapshots are at the steps fulls, so that there
// are snapshots between refits, where the partition is stale as in the
// paper: the period the run's samples are stratified by when it is the
// paper's K-partition (the samples' estimates are then unbiased); else
// the paper's 2000 steps when that is a multiple of the full-snapshot
// period F and the run reaches it (two refits); else 2F when the run has
// at least 3 full snapshots (the one between refits is scored exactly);
// else F. It returns T and the choice in words, or 0 and why the curve
// cannot be drawn.
func paperRefit(r *db.Run, fulls []int64, k int) (int64, string) {
	f := r.FullSnapshotEvery
	switch {
	case len(fulls) == 0:
		return 0, "the run has no full snapshots (gvdb train --full-snapshot-every)"
	case f <= 0:
		return 0, "the run records no full-snapshot period to refit on"
	case r.SnapshotStrata == k && r.SnapshotStrataMethod == "paper" && r.SnapshotStrataEvery > 0:
		return r.SnapshotStrataEvery, "the period its samples are stratified by"
	case PaperRefitEvery%f == 0 && fulls[len(fulls)-1] >= PaperRefitEvery:
		return PaperRefitEvery, "the paper's period"
	case len(fulls) >= 3:
		return 2 * f, "twice the full-snapshot period"
	}
	return f, "the full-snapshot period"
}

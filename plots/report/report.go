// Package report writes the figure set of "A Study of Gradient Variance in
// Deep Learning" for the runs in a store: per run, the variance and
// normalized variance of SG-B, SG-2B, SVRG and Gradient Clustering over
// training, NGV beside the loss and the GC distortion-vs-K curve; across
// runs, variance, NGV and loss; and, where clean and perturbed runs are
// both present, GC's gain on each. Each figure is drawn from a query, and
// the index (index.md, a self-contained index.html) shows it under the
// figure.
//
// report imports db, query and plots; cmd/gvdb only wires it to flags.
package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"gvdb/db"
	"gvdb/db/stats"
	"gvdb/plots"
	"gvdb/query"
	"gvdb/query/outfile"
	"gvdb/query/parser"
)

// Figure is one figure of a report: its file (a PNG, with an SVG of the
// same name beside it), its section, a short heading (at most
// MaxHeading characters), a caption (what is plotted, on which
// population, by which estimator) and the queries that made it.
type Figure struct {
	File, Section, Heading, Caption, Query string
}

// MaxHeading is the longest figure heading, in characters.
const MaxHeading = 100

// Options say what a report covers and how its figures look.
type Options struct {
	// Runs is a glob of the runs to include ("" or "*": all).
	Runs string
	// K is the largest number of Gradient Clustering clusters (the paper's
	// 128): GC uses K = min(K, B), the distortion curve K up to it.
	K int
	// Figure sizes every figure; its Title, when set, titles all of them,
	// and its Scale overrides each figure's own.
	Figure plots.Options
	// Log receives a line per figure and the warnings.
	Log io.Writer
	// Overwrite replaces a report gvdb wrote before in the same folder
	// (the files its manifest, ManifestFile, lists). A folder holding any
	// other file is refused either way, and nothing in it is touched.
	Overwrite bool
	// Cache shares Gradient Clustering work (partitions, Gram matrices)
	// between the report's queries and the caller's (nil: the report
	// makes its own, query.NewGCCache(0)).
	Cache *query.GCCache
}

// ManifestFile lists, in a report's folder, the files gvdb wrote there.
const ManifestFile = ".gvdb-report.json"

// writer is one report being written.
type writer struct {
	d    *db.DB
	out  string
	o    Options
	eval func(q string) (*query.Result, error)
	figs []Figure
	// section is the section the next figures go in.
	section string
	ctx     context.Context
	runs    []*db.Run
	warned  map[string]bool
}

// Write draws the figures of the runs matching o.Runs into the folder
// out and writes the index; it returns the figures. The folder is written
// all or nothing (outfile.WriteDir): it must be new or empty (or, with
// o.Overwrite, hold only an earlier report); the figures go to a new
// folder beside it, renamed into place when complete, so a failure leaves
// no partial figures, and a symbolic link at out is refused.
func Write(ctx context.Context, d *db.DB, out string, o Options) ([]Figure, error) {
	if o.Runs == "" {
		o.Runs = "*"
	}
	if o.K < 1 {
		o.K = 128
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	runs, err := selectRuns(d, o.Runs)
	if err != nil {
		return nil, err
	}
	if o.Cache == nil {
		o.Cache = query.NewGCCache(0)
	}
	w := &writer{d: d, o: o, ctx: ctx, runs: runs, warned: map[string]bool{}}
	w.eval = func(q string) (*query.Result, error) {
		st, err := parser.ParseStatement(q)
		if err != nil {
			return nil, fmt.Errorf("report query %q: %w", q, err)
		}
		res, err := query.Eval(ctx, d, st, query.Options{Cache: o.Cache})
		if err != nil {
			return nil, fmt.Errorf("report query %q: %w", q, err)
		}
		return res, nil
	}
	var figs []Figure
	err = outfile.WriteDir(out, outfile.DirOptions{What: "report", Manifest: ManifestFile, Overwrite: o.Overwrite}, func(tmp string) error {
		w.out = tmp
		var err error
		figs, err = w.figures(runs)
		return err
	})
	if err != nil {
		return nil, err
	}
	return figs, nil
}

// figures draws every figure into w.out and writes the index there.
func (w *writer) figures(runs []*db.Run) ([]Figure, error) {
	for _, r := range runs {
		w.section = "Run " + r.Name
		if err := w.run(r); err != nil {
			return nil, err
		}
	}
	w.section = "Across runs"
	if len(runs) > 1 {
		from := make([]string, len(runs))
		names := make([]string, len(runs))
		for i, r := range runs {
			from[i], names[i] = parser.Quote(r.Name), r.Name
		}
		q := fmt.Sprintf("SELECT variance, nvar FROM %s GROUP BY run", strings.Join(from, ", "))
		res, err := w.eval(q)
		if err != nil {
			return nil, err
		}
		if err := w.draw(res, []string{"variance"}, "runs-variance.png", "Gradient variance of SG-B across runs",
			"Variance per coordinate of SG-B (B = each run's batch size) over training, one line a run, on each snapshot's examples. The paper finds that smaller learning rates coincide with higher variance.", "log", q); err != nil {
			return nil, err
		}
		if err := w.draw(res, []string{"nvar"}, "runs-nvar.png", "Normalized gradient variance of SG-B across runs",
			"Normalized variance (NGV) of SG-B over training, one line a run, on each snapshot's examples.", "linear", q); err != nil {
			return nil, err
		}
		ql := fmt.Sprintf("SELECT loss FROM %s GROUP BY run, window(10)", strings.Join(from, ", "))
		if res, err = w.eval(ql); err != nil {
			return nil, err
		}
		if err := w.draw(res, []string{"loss=training loss"}, "runs-loss.png", "Training loss across runs",
			"Training loss over training, one line a run, each point the mean over 10 steps; set it beside the NGV figure above (the Findings table measures how each tracks the loss decrease).", "log", ql); err != nil {
			return nil, err
		}
	}
	if err := w.perturbations(runs); err != nil {
		return nil, err
	}
	findings, err := Findings(w.ctx, w.d, runs, w.o.K, w.o.Cache)
	if err != nil {
		return nil, err
	}
	rows, err := runRows(w.d, runs)
	if err != nil {
		return nil, err
	}
	return w.figs, writeIndex(w.out, w.d.Dir(), rows, findings, w.figs)
}

// draw draws the given columns of res to file (a PNG, and an SVG beside
// it), titled with the heading; cols are "column=legend name" or
// "column".
func (w *writer) draw(res *query.Result, cols []string, file, heading, caption, scale string, queries ...string) error {
	var names []string
	rename := map[string]string{}
	for _, c := range cols {
		col, name, ok := strings.Cut(c, "=")
		names = append(names, col)
		if ok {
			rename[col] = name
		}
	}
	sub, err := res.Project(names...)
	if err != nil {
		return err
	}
	sub.Rename(rename)
	// The page sets the heading over the figure and the caption under
	// it: the figure itself carries a title only when --title gives one.
	o := w.o.Figure
	if o.Scale == "" {
		o.Scale = scale
	}
	o.ZerosExplained = strings.Contains(caption, svrgZerosNote)
	fig, warnings, err := plots.Lines(sub, o)
	if err == nil {
		err = w.save(fig, file, o)
	}
	if err != nil {
		return fmt.Errorf("report figure %s: %w", file, err)
	}
	// A warning of a query drawn in several figures is told once.
	for _, msg := range summarize(append(sub.Warnings, warnings...)) {
		if !w.warned[msg] {
			w.warned[msg] = true
			fmt.Fprintf(w.o.Log, "warning: %s: %s\n", file, msg)
		}
	}
	fmt.Fprintf(w.o.Log, "  %s\n", file)
	w.figs = append(w.figs, Figure{File: file, Section: w.section, Heading: heading, Caption: caption, Query: strings.Join(queries, ";\n")})
	return nil
}

// save writes fig as file (a PNG) and as an SVG beside it.
func (w *writer) save(fig *plots.Figure, file string, o plots.Options) error {
	if err := plots.Save(fig, filepath.Join(w.out, file), o); err != nil {
		return err
	}
	return plots.Save(fig, filepath.Join(w.out, svgName(file)), o)
}

// svgName is the SVG beside a PNG.
func svgName(png string) string { return strings.TrimSuffix(png, ".png") + ".svg" }

// perturbations names a run's data perturbations (gvdb train --duplicate,
// --corrupt-labels, --label-smoothing, --imbalance), "" for none.
func perturbations(r *db.Run) string {
	var out []string
	for _, k := range []string{"duplicate", "corrupt_labels", "label_smoothing", "imbalance"} {
		if v, ok := r.Params[k]; ok && v != "" {
			out = append(out, k+" "+v)
		}
	}
	return strings.Join(out, ", ")
}

// perturbations draws the paper's perturbation comparison when the
// runs include both perturbed data (duplicates, corrupted labels, label
// smoothing, imbalance) and clean data: GC's normalized variance over
// SG-B's, per run. Below 1 GC has the smaller variance; the paper expects
// duplicates to widen GC's gain.
func (w *writer) perturbations(runs []*db.Run) error {
	var perturbed, clean int
	allFull := true
	minSample, minBatch := 0, 0
	var from, desc []string
	byName := map[string]*db.Run{}
	for _, r := range runs {
		byName[r.Name] = r
		p := perturbations(r)
		if p == "" {
			clean++
			p = "clean data"
		} else {
			perturbed++
		}
		infos, err := w.d.SnapshotInfos(r, db.AllSteps)
		if err != nil {
			return err
		}
		full := false
		for _, in := range infos {
			if in.Population == db.Full {
				full = true
			} else if minSample == 0 || in.N < minSample {
				minSample = in.N
			}
		}
		allFull = allFull && full
		if minBatch == 0 || r.BatchSize < minBatch {
			minBatch = r.BatchSize
		}
		from = append(from, parser.Quote(r.Name))
		desc = append(desc, fmt.Sprintf("%s: %s", r.Name, p))
	}
	if perturbed == 0 || clean == 0 {
		return nil
	}
	k := min(w.o.K, max(minBatch, 1))
	where, pop := " WHERE population = 'full'", "on the whole training set at the full snapshots (the paper's population)"
	if !allFull {
		k = min(k, minSample/2)
		where, pop = "", "held out on each snapshot's examples (not every run has full snapshots)"
	}
	if k < 1 {
		return nil
	}
	q := fmt.Sprintf("SELECT gc_variance(%d) / variance AS gc_over_sg FROM %s%s GROUP BY run", k, strings.Join(from, ", "), where)
	res, err := w.eval(q)
	if err != nil {
		return err
	}
	for i, c := range res.Columns {
		if c == "gc_over_sg" && i < len(res.Kinds) {
			res.Kinds[i] = "GC variance / SG-B variance"
		}
	}
	// The legend names each run's perturbation.
	runCol := slices.Index(res.Columns, "run")
	for _, row := range res.Rows {
		if runCol >= 0 {
			if r, ok := byName[fmt.Sprint(row[runCol])]; ok {
				row[runCol] = fmt.Sprintf("%s (%s)", r.Name, cmp.Or(perturbations(r), "clean"))
			}
		}
	}
	w.section = "Perturbed data"
	return w.draw(res, []string{"gc_over_sg"}, "perturbations-gc-sg.png", "GC against SG-B: clean and perturbed data",
		fmt.Sprintf("Gradient variance of GC (K = %d, gvdb's exact fit) over that of SG-B (B = each run's batch), %s; below 1 GC has the smaller variance (the paper: duplicates widen GC's gain). Runs: %s.",
			k, pop, strings.Join(desc, "; ")), "log", q)
}

// run draws one run's figures: the four estimators' variance and
// normalized variance over training, NGV beside the loss, and the
// distortion-vs-K curve, each captioned with the population it uses.
func (w *writer) run(r *db.Run) error {
	infos, err := w.d.SnapshotInfos(r, db.AllSteps)
	if err != nil {
		return err
	}
	var full, sample, anchored, minSample int
	var lastFull, lastSample int64 = -1, -1
	var fulls []int64
	for _, in := range infos {
		if in.HasAnchor {
			anchored++
		}
		if in.Population == db.Full {
			full++
			lastFull = in.Step
			fulls = append(fulls, in.Step)
			continue
		}
		sample++
		lastSample = in.Step
		if minSample == 0 || in.N < minSample {
			minSample = in.N
		}
	}
	b := max(r.BatchSize, 1)
	q := parser.Quote(r.Name)
	safe := strings.NewReplacer("/", "_", " ", "_", "*", "_").Replace(r.Name)

	// SG-B, SG-2B and SVRG on every snapshot: moments of a sample
	// estimate those of the training set without bias.
	sgCols := []string{fmt.Sprintf("variance(%d)=SG-B", b), fmt.Sprintf("variance(%d)=SG-2B", 2*b)}
	items := fmt.Sprintf("variance(%d), variance(%d), nvar(%d), nvar(%d)", b, 2*b, b, 2*b)
	nvCols := []string{fmt.Sprintf("nvar(%d)=SG-B", b), fmt.Sprintf("nvar(%d)=SG-2B", 2*b)}
	if anchored > 0 {
		items += fmt.Sprintf(", svrg_variance(%d), svrg_nvar(%d)", b, b)
		sgCols = append(sgCols, fmt.Sprintf("svrg_variance(%d)=SVRG", b))
		nvCols = append(nvCols, fmt.Sprintf("svrg_nvar(%d)=SVRG", b))
	}
	qSG := fmt.Sprintf("SELECT %s FROM %s", items, q)
	sg, err := w.eval(qSG)
	if err != nil {
		return err
	}
	// GC on the full training set where the run has full snapshots
	// (in-sample: the paper's quantity), else held out on its samples.
	k := min(w.o.K, b)
	var qGC, gcPop string
	if full > 0 {
		t, _ := paperRefit(r, fulls, k)
		warm(w.ctx, w.d, w.o.Cache, r, k, t)
		qGC = fmt.Sprintf("SELECT gc_variance(%d, %d), gc_nvar(%d, %d) FROM %s WHERE population = 'full'", k, b, k, b, q)
		gcPop = "GC on the whole training set at the full snapshots (fitted and scored in-sample: the paper's population)"
	} else {
		k = min(k, minSample/2)
		qGC = fmt.Sprintf("SELECT gc_variance(%d, %d), gc_nvar(%d, %d) FROM %s", k, b, k, b, q)
		gcPop = fmt.Sprintf("GC held out on each sample (fitted on one half, scored on the other: the run has no full snapshots; %s for the paper's population)", query.FullSnapshotHint(r))
	}
	var gc *query.Result
	paperNote := ""
	if k >= 1 {
		if gc, err = w.eval(qGC); err != nil {
			return err
		}
		if gc, err = query.Join(sg, gc); err != nil {
			return err
		}
		exact := "GC"
		// The paper's curve: its rank-1 algorithm, refitted every T steps
		// and used in between (paperRefit), scored exactly on the full
		// snapshots and estimated on the samples; left out, with a note,
		// where the refit grid lacks full snapshots.
		if t, why := paperRefit(r, fulls, k); t > 0 {
			// On every snapshot where the samples can hold the clusters,
			// else (or when the samples cannot be scored) on the full
			// snapshots only.
			type try struct{ where, on string }
			var tries []try
			if sample > 0 && minSample >= k {
				tries = append(tries, try{"", "exact on full snapshots, estimated cluster by cluster on samples"})
			}
			tries = append(tries, try{" WHERE population = 'full'", "scored on the full snapshots"})
			var pr *query.Result
			var qp, on string
			for _, tr := range tries {
				qp, on = fmt.Sprintf("SELECT gc_variance(%d, %d, 'paper', %d), gc_nvar(%d, %d, 'paper', %d) FROM %s%s", k, b, t, k, b, t, q, tr.where), tr.on
				if pr, err = w.eval(qp); err == nil {
					break
				}
			}
			if err != nil {
				paperNote = fmt.Sprintf(" The paper's GC curve is left out: %v.", err)
			} else if gc, err = query.Join(gc, pr); err != nil {
				return err
			} else {
				exact = "GC exact"
				sgCols = append(sgCols, fmt.Sprintf("gc_variance(%d, %d, 'paper', %d)=GC paper", k, b, t))
				nvCols = append(nvCols, fmt.Sprintf("gc_nvar(%d, %d, 'paper', %d)=GC paper", k, b, t))
				qGC += ";\n" + qp
				for _, w := range pr.Warnings {
					if strings.Contains(w, stats.MissedClusters) {
						on += " (low on samples that miss some of its clusters)"
						break
					}
				}
				paperNote = fmt.Sprintf(" GC paper is the paper's curve: its algorithm refitted every %d steps (%s) and used in between, %s. GC exact is gvdb's optimum, fitted afresh at each full snapshot.", t, why, on)
			}
		} else if full > 0 {
			paperNote = fmt.Sprintf(" The paper's GC curve is left out: %s.", why)
		}
		sgCols = append(sgCols, fmt.Sprintf("gc_variance(%d, %d)=%s", k, b, exact))
		nvCols = append(nvCols, fmt.Sprintf("gc_nvar(%d, %d)=%s", k, b, exact))
	} else {
		gc, qGC = sg, ""
	}
	estimators := "SG-B, SG-2B"
	if anchored > 0 {
		estimators += ", SVRG"
	}
	estimators += ", GC"
	pop := fmt.Sprintf("SG-B (B = %d), SG-2B", b)
	if anchored > 0 && r.SVRGEvery > 0 {
		pop += fmt.Sprintf(" and SVRG (anchor refreshed every %d steps)", r.SVRGEvery)
	} else if anchored > 0 {
		pop += " and SVRG (the anchors captured with the snapshots)"
	}
	pop += fmt.Sprintf(" on each snapshot's examples (%d sampled, %d full); %s, K = %d", sample, full, gcPop, k)
	if anchored > 0 {
		pop += ". " + svrgZerosNote
	}
	if note := query.IgnoredNote(r); note != "" {
		pop += ". Not covered: " + note
	}
	queries := []string{qSG}
	if qGC != "" {
		queries = append(queries, qGC)
	}
	if err := w.draw(gc, sgCols, safe+"-variance.png", fmt.Sprintf("%s: gradient variance of %s", r.Name, estimators),
		fmt.Sprintf("Gradient variance per coordinate over training.%s %s.", paperNote, pop), "log", queries...); err != nil {
		return err
	}
	if err := w.draw(gc, nvCols, safe+"-nvar.png", fmt.Sprintf("%s: normalized gradient variance of %s", r.Name, estimators),
		fmt.Sprintf("Normalized gradient variance (NGV) over training.%s %s.", paperNote, pop), "linear", queries...); err != nil {
		return err
	}
	window := ""
	if r.SnapshotEvery > 0 {
		window = fmt.Sprintf(" GROUP BY window(%d)", r.SnapshotEvery)
	}
	ql := fmt.Sprintf("SELECT nvar(%d), loss FROM %s%s", b, q, window)
	res, err := w.eval(ql)
	if err != nil {
		return err
	}
	if err := w.draw(res, []string{fmt.Sprintf("nvar(%d)=NGV", b), "loss=training loss"}, safe+"-nvar-loss.png", fmt.Sprintf("%s: normalized variance and training loss", r.Name),
		"Normalized variance of SG-B (on each snapshot's examples, top) over the training loss (bottom), on one step axis; each point is the mean over a window of steps.", "linear", ql); err != nil {
		return err
	}
	last := lastFull
	if last < 0 {
		last = lastSample
	}
	file := safe + "-distortion.png"
	curve, err := query.DistortionCurve(w.d, r, last, nil, w.o.K, query.Options{Cache: w.o.Cache})
	heading := fmt.Sprintf("%s, step %d: GC distortion vs K", r.Name, last)
	if err == nil {
		o := w.o.Figure
		var fig *plots.Figure
		if fig, err = plots.Distortion(curve.Curve, o); err == nil {
			err = w.save(fig, file, o)
		}
	}
	if errors.Is(err, stats.ErrNonFinite) || errors.Is(err, plots.ErrNothingToPlot) {
		fmt.Fprintf(w.o.Log, "warning: %s left out: %v\n", file, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	fmt.Fprintf(w.o.Log, "  %s\n", file)
	w.figs = append(w.figs, Figure{File: file, Section: w.section, Heading: heading,
		Caption: fmt.Sprintf("GC's weighted distortion (gvdb's exact fit) against the number of clusters K at step %d, on the %s (%s path). Below D0/K GC beats SG-B; below D0/(2K) it beats SG-2B.",
			last, curve.PopulationLabel(), curve.Path),
		Query: fmt.Sprintf("gvdb plot --kind distortion --run %s --step %d --kmax %d", r.Name, last, w.o.K)})
	return nil
}

// svrgZerosNote is the caption's note on SVRG's zeros: a figure whose
// caption carries it leaves them out of a log scale without a warning.
const svrgZerosNote = "SVRG is 0 at its anchor's own steps, which a log axis cannot show"

// selectRuns returns the runs matching glob that have snapshots.
func selectRuns(d *db.DB, glob string) ([]*db.Run, error) {
	all, err := d.MatchRuns(glob)
	if err != nil {
		return nil, err
	}
	var runs []*db.Run
	for _, r := range all {
		steps, err := d.SnapshotInfos(r, db.AllSteps)
		if err != nil {
			return nil, err
		}
		if len(steps) > 0 {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("report: no run matching %q has snapshots", glob)
	}
	return runs, nil
}

// WriteFindings prints the Findings table of the runs matching glob
// (gvdb report --findings-only) to out in format (table, csv or json).
func WriteFindings(ctx context.Context, d *db.DB, glob string, k int, out io.Writer, format string) error {
	runs, err := selectRuns(d, cmp.Or(glob, "*"))
	if err != nil {
		return err
	}
	fs, err := Findings(ctx, d, runs, max(k, 1), nil)
	if err != nil {
		return err
	}
	return FindingsTable(fs).Write(out, format)
}

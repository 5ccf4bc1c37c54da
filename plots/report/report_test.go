package report

import (
	"bytes"
	"context"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gvdb/db"
	"gvdb/db/synth"
	"gvdb/ingest"
	"gvdb/query"
	"gvdb/query/parser"
)

// store builds two synthetic runs differing in lr ("a": 0.1 with SVRG
// anchors, "b": 0.01), an MLP 6-5-3 with batch 8: full snapshots of 32
// examples (ids 0-31) every 100 steps from 0 to 300, samples of 16 of
// them between, the loss and test accuracy every 10 steps.
func store(t *testing.T) *db.DB {
	t.Helper()
	d, err := db.Open(t.TempDir(), db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	layers := synth.MLP(6, 5, 3)
	for ri, name := range []string{"a", "b"} {
		r := &db.Run{Name: name, Status: db.StatusComplete, Config: db.Config{Model: "mlp", Dataset: "synthetic", BatchSize: 8, LR: 0.1 / math.Pow(10, float64(ri)),
			Steps: 300, SnapshotEvery: 50, FullSnapshotEvery: 100}}
		r.Layers = synth.Schema(layers)
		if err := d.CreateRun(r); err != nil {
			t.Fatal(err)
		}
		w, err := ingest.NewWriter(d, name, ingest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(ri+1), 3))
		for step := int64(0); step <= 300; step += 50 {
			s := &ingest.Snapshot{Step: step}
			n := 16
			if step%100 == 0 {
				n, s.Population = 32, db.Full
			}
			blocks := synth.Snapshot(rng, n, layers)
			// Samples are drawn from the 32 examples of the full ones.
			ids := rng.Perm(32)
			for _, b := range blocks {
				for i := range b.IDs {
					b.IDs[i] = uint64(i)
					if s.Population != db.Full {
						b.IDs[i] = uint64(ids[i])
					}
				}
			}
			for _, l := range layers {
				s.Blocks = append(s.Blocks, ingest.NamedBlock{Layer: l.Name, Block: blocks[l.Name]})
			}
			if name == "a" {
				s.AnchorStep = step - step%100
				anchor := blocks
				if s.AnchorStep != step {
					anchor = synth.Perturbed(rng, blocks, layers, 0.3)
				}
				for _, l := range layers {
					s.Anchor = append(s.Anchor, ingest.NamedBlock{Layer: l.Name, Block: anchor[l.Name]})
				}
			}
			if err := w.Write(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		var rows []db.ScalarRow
		for step := int64(0); step <= 300; step += 10 {
			rows = append(rows, db.ScalarRow{Step: step, Values: map[string]float64{
				"loss": 2 / (1 + float64(step)/(50*float64(ri+1))) * (1 + 0.1*math.Sin(float64(step))), "test_accuracy": float64(step) / 400}})
		}
		if err := d.PutScalars(name, rows); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// TestReportPage writes the report of two runs and reads its HTML: a
// title, a summary, a runs table, the Findings table, headings of at most
// MaxHeading characters, an SVG beside every PNG and inlined once per
// figure, each query in a <details> block, a glossary, and no external URL.
func TestReportPage(t *testing.T) {
	d := store(t)
	out := filepath.Join(t.TempDir(), "r")
	var log bytes.Buffer
	figs, err := Write(context.Background(), d, out, Options{K: 4, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	page := string(raw)
	for _, m := range regexp.MustCompile(`(?s)<h[1-3][^>]*>(.*?)</h[1-3]>`).FindAllStringSubmatch(page, -1) {
		if n := len([]rune(m[1])); n > MaxHeading {
			t.Errorf("heading of %d characters: %q", n, m[1])
		}
	}
	for _, want := range []string{"<title>gvdb report</title>", `<table class="runs">`, "<td>a</td><td>mlp</td><td>synthetic</td><td class=\"n\">0.1</td>",
		`<table class="findings">`, `<h2 id="glossary">`, "<dt>gc_variance(K, B)</dt>", "GC paper", "GC exact"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if n := strings.Count(page, "<svg"); n != len(figs) {
		t.Errorf("%d inline SVGs for %d figures", n, len(figs))
	}
	if n := strings.Count(page, "<details><summary>query</summary>"); n != len(figs) {
		t.Errorf("%d query blocks for %d figures", n, len(figs))
	}
	if ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(|@import|<img|<script|<link`).FindString(page); ext != "" {
		t.Errorf("the page makes an external request or loads a file: %q", ext)
	}
	entries, _ := os.ReadDir(out)
	pngs := 0
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".png"); ok {
			pngs++
			if _, err := os.Stat(filepath.Join(out, name+".svg")); err != nil {
				t.Errorf("%s has no SVG beside it", e.Name())
			}
		}
	}
	if pngs != len(figs) || pngs < 9 {
		t.Errorf("%d PNGs for %d figures", pngs, len(figs))
	}
	for _, f := range figs {
		if f.Heading == "" || f.Caption == "" || f.Query == "" || len([]rune(f.Heading)) > MaxHeading {
			t.Errorf("figure %s: heading %q, caption %q, query %q", f.File, f.Heading, f.Caption, f.Query)
		}
	}
}

// TestFindings computes each verdict's numbers apart from Findings, with
// queries of its own, and compares.
func TestFindings(t *testing.T) {
	d := store(t)
	ctx := context.Background()
	a, _ := d.Run("a")
	b, _ := d.Run("b")
	fs, err := Findings(ctx, d, []*db.Run{a, b}, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 6 {
		t.Fatalf("%d findings", len(fs))
	}
	eval := func(q string) [][]any {
		st, err := parser.ParseStatement(q)
		if err != nil {
			t.Fatal(err)
		}
		res, err := query.Eval(ctx, d, st, query.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Rows
	}
	col := func(rows [][]any, i int) []float64 {
		var out []float64
		for _, r := range rows {
			out = append(out, r[i].(float64))
		}
		return out
	}
	mean := func(x []float64) float64 {
		s := 0.0
		for _, v := range x {
			s += v
		}
		return s / float64(len(x))
	}
	verdict := func(ok bool) string {
		if ok {
			return Holds
		}
		return DoesNotHold
	}
	// 1. Trend: 7 snapshots, thirds of 2.
	rises, logs := 0, 0.0
	means := map[string]float64{}
	for _, r := range []string{"a", "b"} {
		v := col(eval("SELECT step, variance(8) FROM '"+r+"'"), 1)
		ratio := mean(v[len(v)-2:]) / mean(v[:2])
		if ratio > 1 {
			rises++
		}
		logs += math.Log(ratio)
		means[r] = mean(v)
	}
	if f := fs[0]; f.Verdict != verdict(rises == 2) || math.Abs(f.Value-math.Exp(logs/2)) > 1e-9*f.Value {
		t.Errorf("trend: %+v; want %s, %g", f, verdict(rises == 2), math.Exp(logs/2))
	}
	// 2. lr: b has the smaller lr; with two runs ρ is ±1.
	wantLR := -1.0
	if means["b"] < means["a"] {
		wantLR = 1
	}
	if f := fs[1]; f.Value != wantLR || f.Verdict != verdict(wantLR < 0) {
		t.Errorf("lr: %+v; want ρ = %g", f, wantLR)
	}
	// 3, 4. GC against SG-2B at the full snapshots.
	// The paper's T: 4 full snapshots 100 steps apart, so 200.
	for i, method := range []string{"'paper', 200", "'exact'"} {
		var ratios []float64
		below := 0
		for _, r := range []string{"a", "b"} {
			rows := eval("SELECT step, gc_variance(4, 8, " + method + ") / variance(16) FROM '" + r + "' WHERE population = 'full'")
			m := mean(col(rows, 1))
			ratios = append(ratios, m)
			if m < 1 {
				below++
			}
		}
		if f := fs[2+i]; f.Verdict != verdict(below == 2) || math.Abs(f.Value-mean(ratios)) > 1e-9 {
			t.Errorf("GC %s: %+v; want %s, %g", method, f, verdict(below == 2), mean(ratios))
		}
	}
	// 5. NGV against variance as a tracker of the loss decrease rate.
	var rate, nv, v []float64
	for _, r := range []string{"a", "b"} {
		snap := eval("SELECT step, nvar(8), variance(8) FROM '" + r + "'")
		loss := eval("SELECT step, loss FROM '" + r + "' GROUP BY window(50)")
		for i := 0; i+1 < len(loss); i++ {
			l0, l1 := loss[i][1].(float64), loss[i+1][1].(float64)
			rate = append(rate, (l0-l1)/50)
			nv, v = append(nv, snap[i][1].(float64)), append(v, snap[i][2].(float64))
		}
	}
	diff := math.Abs(Spearman(nv, rate)) - math.Abs(Spearman(v, rate))
	if f := fs[4]; math.Abs(f.Value-diff) > 1e-12 || f.Verdict != verdict(diff > 0) {
		t.Errorf("NGV: %+v; want %g over %d windows", f, diff, len(rate))
	}
	// 6. No perturbed runs.
	if f := fs[5]; f.Verdict != NotMeasurable || !strings.Contains(f.Why, "--duplicate") {
		t.Errorf("perturbations: %+v", f)
	}
	// The table, as --findings-only prints it.
	var csv bytes.Buffer
	if err := WriteFindings(ctx, d, "*", 4, &csv, "csv"); err != nil || !strings.HasPrefix(csv.String(), "claim,measured,value,verdict,why\n") || strings.Count(csv.String(), "\n") < 7 {
		t.Errorf("findings csv: %v\n%s", err, csv.String())
	}
}

func TestSpearman(t *testing.T) {
	if r := Spearman([]float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}); r != 1 {
		t.Errorf("monotone: %g", r)
	}
	if r := Spearman([]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}); r != -1 {
		t.Errorf("reversed: %g", r)
	}
	// Ties get average ranks: x ranks 1.5 1.5 3, y 1 2 3.
	if r := Spearman([]float64{1, 1, 2}, []float64{1, 2, 3}); math.Abs(r-math.Sqrt(3)/2) > 1e-12 {
		t.Errorf("ties: %g", r)
	}
}

// TestPaperCurve: the core figure's GC paper curve is the paper's
// algorithm refitted every T = 200 steps (twice the full-snapshot period
// of 100, the store having 4 full snapshots) on every snapshot: fresh at
// the refit steps, stale at the full snapshot between them and on the
// samples. A run whose refit grid lacks full snapshots gets the figure
// without the curve and a note saying why.
func TestPaperCurve(t *testing.T) {
	d := store(t)
	ctx := context.Background()
	figs, err := Write(ctx, d, filepath.Join(t.TempDir(), "r"), Options{K: 4})
	if err != nil {
		t.Fatal(err)
	}
	var core *Figure
	for i, f := range figs {
		if f.File == "a-variance.png" {
			core = &figs[i]
		}
	}
	if core == nil {
		t.Fatal("no core figure for run a")
	}
	const qp = "SELECT gc_variance(4, 8, 'paper', 200), gc_nvar(4, 8, 'paper', 200) FROM 'a'"
	if !strings.Contains(core.Query, qp+";") && !strings.HasSuffix(core.Query, qp) || !strings.Contains(core.Caption, "refitted every 200 steps (twice the full-snapshot period)") {
		t.Errorf("core figure: query %q, caption %q", core.Query, core.Caption)
	}
	eval := func(q string) *query.Result {
		st, err := parser.ParseStatement(q)
		if err != nil {
			t.Fatal(err)
		}
		res, err := query.Eval(ctx, d, st, query.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	stale := eval(qp)
	fresh := eval("SELECT gc_variance(4, 8, 'paper') FROM 'a' WHERE population = 'full'")
	freshAt := map[int64]float64{}
	for _, row := range fresh.Rows {
		freshAt[row[0].(int64)] = row[1].(float64)
	}
	if len(stale.Rows) != 7 {
		t.Fatalf("%d rows of the paper's curve, want all 7 snapshots", len(stale.Rows))
	}
	for _, row := range stale.Rows {
		step, v := row[0].(int64), row[1].(float64)
		f, full := freshAt[step]
		switch {
		case !(v > 0):
			t.Errorf("step %d: %g", step, v)
		case full && step%200 == 0 && v != f:
			t.Errorf("refit step %d: %g, fresh %g", step, v, f)
		case full && step%200 != 0 && v == f:
			t.Errorf("step %d, between refits: %g, the same as a fresh fit", step, v)
		}
	}

	// Full snapshots every 100 steps recorded as every 70: T = 140, and
	// step 140 has none.
	a, _ := d.Run("a")
	a.FullSnapshotEvery = 70
	if err := d.UpdateRun(a); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	figs, err = Write(ctx, d, filepath.Join(t.TempDir(), "r2"), Options{K: 4, Runs: "a", Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range figs {
		if f.File == "a-variance.png" && (!strings.Contains(f.Caption, "The paper's GC curve is left out: ") || !strings.Contains(f.Caption, "needs a full snapshot at step 140") || strings.Contains(f.Query, "'paper'")) {
			t.Errorf("left-out curve: caption %q, query %q", f.Caption, f.Query)
		}
	}
}

package plots

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"strings"
	"testing"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"gvdb/db/stats"
	"gvdb/query"
)

// svgText renders f as SVG and returns the document.
func svgText(t *testing.T, f *Figure) string {
	t.Helper()
	c := vgsvg.New(6*vg.Inch, 4*vg.Inch)
	f.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func distCurve() *stats.Curve {
	return &stats.Curve{K: []int{1, 2, 4, 8, 16, 32}, Distortion: []float64{1000, 420, 160, 50, 12, 1}, D0: 1000}
}

// varianceResult is the report's core comparison for one run: SG-B,
// SG-2B, SVRG (0 at its anchors, steps 0, 200 and 400) and GC (full snapshots
// only, at 0, 200, 400).
func varianceResult() *query.Result {
	res := &query.Result{Columns: []string{"step", "SG-B", "SG-2B", "SVRG", "GC paper", "GC exact"},
		Kinds: []string{"step", "variance", "variance", "svrg_variance", "gc_variance", "gc_variance"}}
	for s := int64(0); s <= 400; s += 50 {
		f := float64(s) / 400
		sg := 1e-4 * (1 - 0.6*f)
		svrg := 0.0
		if s%200 != 0 {
			svrg = 3e-5 * float64(s%200) / 100
		}
		gcp, gce := math.NaN(), math.NaN()
		if s%200 == 0 {
			gcp, gce = sg*0.45, sg*0.08
		}
		res.Rows = append(res.Rows, []any{s, sg, sg / 2, svrg, gcp, gce})
	}
	return res
}

func TestVarianceGolden(t *testing.T) {
	f, warn, err := Lines(varianceResult(), Options{Title: "lr-0.1: SG-B, SG-2B, SVRG and GC over training", Scale: "log", ZerosExplained: true})
	if err != nil || len(warn) != 0 {
		t.Fatalf("Lines: %v %v", err, warn)
	}
	p := f.Panel()
	// SVRG's zeros are rings on the bottom edge, named in the legend, and
	// no point sits on the frame.
	if !strings.Contains(svgText(t, f), "off the log axis") {
		t.Error("the legend does not explain the rings on the bottom edge")
	}
	if !(p.Y.Max > 1e-4) || !(p.Y.Min < 1e-4*0.4*0.08) || p.X.Min >= 0 || p.X.Max <= 400 {
		t.Errorf("ranges x [%g, %g], y [%g, %g] put points on the frame", p.X.Min, p.X.Max, p.Y.Min, p.Y.Max)
	}
	checkGolden(t, f, "variance.png")
	if _, warn, _ := Lines(varianceResult(), Options{Scale: "log"}); len(warn) != 1 || !strings.Contains(warn[0], "3 values <= 0") {
		t.Errorf("zeros unexplained: warnings %v", warn)
	}
}

// TestPanelsGolden: nvar and the loss, in different units, are two
// panels over one x axis.
func TestPanelsGolden(t *testing.T) {
	res := &query.Result{Columns: []string{"step", "NGV", "training loss"}, Kinds: []string{"step", "nvar", "loss"}}
	for s := int64(0); s <= 1000; s += 100 {
		res.Rows = append(res.Rows, []any{s, 0.5 + 0.3*float64(s)/1000, 2.3 * math.Exp(-float64(s)/300)})
	}
	f, _, err := Lines(res, Options{Title: "lr-0.1: normalized variance and training loss"})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Panels) != 2 || f.Panels[0][0].Y.Label.Text != "normalized variance" || f.Panels[1][0].Y.Label.Text != "loss" {
		t.Fatalf("want two panels, nvar over loss")
	}
	if f.Panels[0][0].X.Min != f.Panels[1][0].X.Min || f.Panels[0][0].X.Max != f.Panels[1][0].X.Max {
		t.Error("the panels do not share the x range")
	}
	checkGolden(t, f, "panels.png")
}

// TestSmallMultiplesGolden: 16 layers of one statistic are 16 panels in
// a 4 x 4 grid on one y range; beside a second unit, a colour map and a
// warning.
func TestSmallMultiplesGolden(t *testing.T) {
	res := multRes()
	one, err := res.Project("variance")
	if err != nil {
		t.Fatal(err)
	}
	f, warn, err := Lines(one, Options{Title: "variance per layer"})
	if err != nil || len(warn) != 0 {
		t.Fatalf("Lines: %v %v", err, warn)
	}
	if len(f.Panels) != 4 || len(f.Panels[0]) != 4 || f.Panels[3][3].Title.Text != "fc15.weight" {
		t.Fatalf("want a 4 x 4 grid, one layer a panel")
	}
	if f.Panels[0][0].Y.Min != f.Panels[3][3].Y.Min || f.Panels[0][0].Y.Max != f.Panels[3][3].Y.Max {
		t.Error("the panels do not share the y range")
	}
	checkGolden(t, f, "multiples.png")
	_, warn, err = Lines(res, Options{})
	if err != nil || len(warn) != 2 || !strings.Contains(warn[0], "colour map") {
		t.Errorf("16 series beside another unit: %v %v", err, warn)
	}
}

// multRes is variance and nvar of 16 layers over 5 steps.
func multRes() *query.Result {
	res := &query.Result{Columns: []string{"layer", "step", "variance", "nvar"}, Kinds: []string{"layer", "step", "variance", "nvar"}, Keys: 2}
	for l := range 16 {
		for s := int64(0); s <= 400; s += 100 {
			v := 1e-5 * float64(l+1) * (1 + float64(s)/400)
			res.Rows = append(res.Rows, []any{fmt.Sprintf("fc%d.weight", l), s, v, 0.5 + float64(l)/40})
		}
	}
	return res
}

// TestStyle: fonts of at least 9 points at one column's width, more on
// wider figures; the --style paper preset; a palette of distinct colours;
// titles wrapped inside the canvas.
func TestStyle(t *testing.T) {
	if fontSize(PaperWidth) != vg.Points(9) || fontSize(7*vg.Inch) != vg.Points(18) {
		t.Errorf("font sizes %v at 3.5 in, %v at 7 in", fontSize(PaperWidth), fontSize(7*vg.Inch))
	}
	if w, h, dpi := (Options{Style: "paper"}).size(); w != PaperWidth || h != PaperHeight || dpi != PaperDPI {
		t.Errorf("paper style: %v x %v at %d", w, h, dpi)
	}
	seen := map[color.Color]bool{}
	for i := range MaxSeries {
		seen[Color(i)] = true
	}
	if len(seen) != MaxSeries {
		t.Errorf("%d distinct colours for %d series", len(seen), MaxSeries)
	}
	long := "demo-lr-0.1, step 1000: GC distortion vs K (full training set, N = 10000, in-sample) and a long tail of words"
	f, err := Distortion(distCurve(), Options{Title: long, Style: "paper"})
	if err != nil {
		t.Fatal(err)
	}
	c := draw.New(vgimg.New(PaperWidth, PaperHeight))
	l := f.layout(c)
	sty := f.titleStyle()
	for _, line := range strings.Split(l.title, "\n") {
		if w := sty.Width(line); l.titleAt.X-w/2 < c.Min.X || l.titleAt.X+w/2 > c.Max.X {
			t.Errorf("title line %q (%v wide) leaves the canvas", line, w)
		}
	}
}

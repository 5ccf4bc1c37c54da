package plots

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/cmpimg"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"gvdb/db/stats"
	"gvdb/query"
)

// regen is cmpimg's -regen flag: go test ./plots -regen rewrites the goldens.
var regen = cmpimg.GenerateTestData

// checkGolden saves p as PNG and compares it with testdata/name, allowing
// small differences (font rasterization).
func checkGolden(t *testing.T, p *Figure, name string) {
	t.Helper()
	got := filepath.Join(t.TempDir(), name)
	if err := Save(p, got, Options{DPI: 60}); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", name)
	raw, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if *regen {
		if err := os.WriteFile(golden, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./plots -regen to create it)", err)
	}
	ok, err := cmpimg.EqualApprox("png", raw, want, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		keep := filepath.Join(os.TempDir(), "gvdb-"+name)
		_ = os.WriteFile(keep, raw, 0o644)
		t.Errorf("%s differs from its golden image (got written to %s; -regen rewrites)", name, keep)
	}
}

func result() *query.Result {
	res := &query.Result{Columns: []string{"run", "step", "nvar", "variance"}, Labels: []string{"run", "step", "nvar(128)", "variance(128)"}}
	for _, run := range []string{"lr-0.1", "lr-0.01"} {
		for s := int64(0); s <= 1000; s += 100 {
			f := float64(s) / 1000
			scale := 1.0
			if run == "lr-0.01" {
				scale = 2
			}
			nv := 0.3 + 0.4*f*scale/2
			if s == 500 && run == "lr-0.1" {
				nv = math.NaN() // a gap, not a broken line
			}
			res.Rows = append(res.Rows, []any{run, s, nv, 1e-6 * scale * (1 + 3*f)})
		}
	}
	return res
}

func TestLinesGolden(t *testing.T) {
	p, warn, err := Lines(result(), Options{Title: "SELECT nvar, variance FROM 'lr-*' GROUP BY run"})
	if err != nil || len(warn) != 0 {
		t.Fatalf("Lines: %v %v", err, warn)
	}
	checkGolden(t, p, "lines.png")
}

func TestDistortionGolden(t *testing.T) {
	c := &stats.Curve{K: []int{1, 2, 4, 8, 16, 32}, Distortion: []float64{1000, 420, 160, 50, 12, 1}, D0: 1000}
	p, err := Distortion(c, Options{Title: "distortion"})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, p, "distortion.png")
}

func TestHistogramGolden(t *testing.T) {
	var a, b []float64
	for i := range 200 {
		a = append(a, 1+math.Sin(float64(i))*0.5)
		b = append(b, 2+math.Cos(float64(i)*1.3))
	}
	p, err := Histogram([]Sample{{"step 0", a}, {"step 1000", b}}, Options{Title: "norms"})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, p, "histogram.png")
}

func TestClusterSizesGolden(t *testing.T) {
	p, err := ClusterSizes([]int64{0, 100, 200}, [][]int{{50, 20, 10, 2, 1}, {40, 30, 10, 5, 2}, {30, 30, 20, 5, 2}}, Options{Title: "sizes"})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, p, "clusters.png")
}

func TestNothingToPlot(t *testing.T) {
	empty := &query.Result{Columns: []string{"step", "nvar"}}
	if _, _, err := Lines(empty, Options{}); !errors.Is(err, ErrNothingToPlot) {
		t.Errorf("empty result: %v", err)
	}
	nan := &query.Result{Columns: []string{"step", "nvar"}, Rows: [][]any{{int64(0), math.NaN()}, {int64(1), math.NaN()}}}
	if _, _, err := Lines(nan, Options{}); !errors.Is(err, ErrNothingToPlot) {
		t.Errorf("all-NaN result: %v", err)
	}
	neg := &query.Result{Columns: []string{"step", "variance"}, Rows: [][]any{{int64(0), -1.0}, {int64(1), 2.0}}}
	if _, warn, err := Lines(neg, Options{}); err != nil || len(warn) != 1 {
		t.Errorf("non-positive values on a log axis: %v, %v", warn, err)
	}
	if _, err := Distortion(&stats.Curve{K: []int{1}, Distortion: []float64{0}}, Options{}); !errors.Is(err, ErrNothingToPlot) {
		t.Errorf("zero distortion: %v", err)
	}
	if _, err := Histogram(nil, Options{}); !errors.Is(err, ErrNothingToPlot) {
		t.Errorf("no norms: %v", err)
	}
	p, _, _ := Lines(result(), Options{})
	if err := Save(p, filepath.Join(t.TempDir(), "x.gif"), Options{}); err == nil {
		t.Error(".gif accepted")
	}
	for _, ext := range []string{"svg", "pdf"} {
		f := filepath.Join(t.TempDir(), "x."+ext)
		if err := Save(p, f, Options{}); err != nil {
			t.Errorf("%s: %v", ext, err)
		}
	}
}

func TestLogTicks(t *testing.T) {
	labels := func(lo, hi float64) []string {
		var out []string
		for _, tk := range (logTicks{}).Ticks(lo, hi) {
			if tk.Label != "" {
				out = append(out, tk.Label)
			}
		}
		return out
	}
	if got := labels(1e-8, 1e-3); len(got) != 6 || got[0] != "1e-08" || got[5] != "0.001" {
		t.Errorf("wide range: %v", got)
	}
	if got := labels(4e-6, 1.1e-5); len(got) < 3 {
		t.Errorf("narrow range has %d labels: %v", len(got), got)
	}
	if got := (logTicks{}).Ticks(-1, 5); got != nil {
		t.Errorf("non-positive range: %v", got)
	}
}

// TestLegendOutsideData lays a two-panel figure out the way Save does
// and checks that each legend's box lies right of every data area (so no
// entry can cover a point) and inside the canvas, that the y axes name
// the statistics, one unit a panel, and that the title is the one given.
func TestLegendOutsideData(t *testing.T) {
	res := result()
	res.Kinds = []string{"run", "step", "nvar", "variance"}
	f, _, err := Lines(res, Options{Title: "nvar: lr-0.1, lr-0.01"})
	if err != nil {
		t.Fatal(err)
	}
	c := draw.New(vgimg.New(6*vg.Inch, 4*vg.Inch))
	l := f.layout(c)
	if len(f.Panels) != 2 || len(l.legends) != 2 {
		t.Fatalf("%d panels, %d legends; want 2 and 2 (nvar and variance apart)", len(f.Panels), len(l.legends))
	}
	for j, row := range f.Panels {
		p := row[0]
		data := p.DataCanvas(l.panels[j][0])
		legend := l.legends[p]
		if legend.Min.X < data.Max.X || legend.Max.X > c.Max.X || legend.Max.Y > c.Max.Y || legend.Size().Y <= 0 {
			t.Errorf("panel %d: legend box %v overlaps the data area %v or leaves the canvas", j, legend, data.Rectangle)
		}
	}
	y0, y1 := strings.ReplaceAll(f.Panels[0][0].Y.Label.Text, "\n", " "), strings.ReplaceAll(f.Panels[1][0].Y.Label.Text, "\n", " ")
	if y0 != "normalized variance" || y1 != "variance per coordinate" || f.Title != "nvar: lr-0.1, lr-0.01" {
		t.Errorf("y labels %q, %q, title %q", f.Panels[0][0].Y.Label.Text, f.Panels[1][0].Y.Label.Text, f.Title)
	}
	if got := yLabel([]string{"variance", "gc_variance", "svrg_variance"}); got != "variance per coordinate" {
		t.Errorf("yLabel = %q", got)
	}
}

// TestSaveGuards checks that a figure never replaces a non-figure, never
// writes through a symbolic link, never creates a directory, and does
// replace an earlier figure.
func TestSaveGuards(t *testing.T) {
	p, _, err := Lines(result(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fig := filepath.Join(dir, "f.png")
	if err := Save(p, fig, Options{DPI: 30}); err != nil {
		t.Fatal(err)
	}
	if err := Save(p, fig, Options{DPI: 30}); err != nil {
		t.Fatalf("replacing a figure: %v", err)
	}
	victim := filepath.Join(dir, "victim.txt")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.png")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	notFig := filepath.Join(dir, "notes.png")
	if err := os.WriteFile(notFig, []byte("my notes"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{link, notFig, filepath.Join(dir, "new", "f.png")} {
		if err := Save(p, path, Options{DPI: 30}); !errors.Is(err, ErrUnsafeWrite) {
			t.Errorf("%s: %v, want ErrUnsafeWrite", path, err)
		}
	}
	if raw, _ := os.ReadFile(victim); string(raw) != "keep me" {
		t.Error("the symlink's target was overwritten")
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Error("a directory was created")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".gvdb-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// bandResult is an aggregate over runs (mean and stddev of nvar per
// config.lr) beside a bootstrap interval of variance per run.
func bandResult() *query.Result {
	res := &query.Result{
		Columns: []string{"config.lr", "step", "mean(nvar)", "stddev(nvar)"},
		Kinds:   []string{"config.lr", "step", "mean:nvar", "stddev:nvar"},
		Keys:    2,
	}
	for _, lr := range []float64{0.1, 0.01} {
		for s := int64(0); s <= 1000; s += 100 {
			f := float64(s) / 1000
			res.Rows = append(res.Rows, []any{lr, s, 0.3 + 0.4*f*lr*10, 0.05 + 0.05*f})
		}
	}
	return res
}

// TestBands checks how value columns pair into bands (mean with stddev,
// ci bounds with their statistic), draws both kinds against a golden
// image, and warns when a log axis cannot show a band.
func TestBands(t *testing.T) {
	kinds := map[string]string{"mean(nvar)": "mean:nvar", "stddev(nvar)": "stddev:nvar", "count(run)": "count",
		"variance": "variance", "variance_lo": "ci_lo:variance:0.9", "variance_hi": "ci_hi:variance:0.9", "gns_lo": "ci_lo:gns:0.95", "gns_hi": "ci_hi:gns:0.95"}
	for _, c := range []struct {
		cols []string
		want string // line/lo/hi/sd column names per trace
	}{
		{[]string{"mean(nvar)", "stddev(nvar)", "count(run)"}, "mean(nvar)/-/-/stddev(nvar) [±1 sd over runs]; count(run)/-/-/- []"},
		{[]string{"variance", "variance_lo", "variance_hi"}, "variance/variance_lo/variance_hi/- [90% CI]"},
		{[]string{"variance_lo", "variance_hi", "variance"}, "variance/variance_lo/variance_hi/- [90% CI]"},
		{[]string{"gns_lo", "gns_hi"}, "-/gns_lo/gns_hi/- [95% CI]"},
		{[]string{"stddev(nvar)"}, "stddev(nvar)/-/-/- []"},
	} {
		var values []int
		for i := range c.cols {
			values = append(values, i)
		}
		name := func(i int) string {
			if i < 0 {
				return "-"
			}
			return c.cols[i]
		}
		var got []string
		for _, tr := range traces(c.cols, values, func(i int) string { return kinds[c.cols[i]] }) {
			got = append(got, name(tr.line)+"/"+name(tr.lo)+"/"+name(tr.hi)+"/"+name(tr.sd)+" ["+tr.note+"]")
		}
		if g := strings.Join(got, "; "); g != c.want {
			t.Errorf("%v:\n got %s\nwant %s", c.cols, g, c.want)
		}
	}

	res := bandResult()
	p, warnings, err := Lines(res, Options{Scale: "linear", Title: "mean nvar over seeds"})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %v", warnings)
	}
	checkGolden(t, p, "bands.png")

	// Log scale: bands reaching 0 are cut, with a warning.
	for _, row := range res.Rows {
		row[3] = 0.9 // stddev above the mean
	}
	_, warnings, err = Lines(res, Options{Scale: "log"})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "band is cut at 22 points") {
		t.Errorf("warnings: %v", warnings)
	}
}

package plots

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgpdf"
	"gonum.org/v1/plot/vg/vgsvg"

	"gvdb/db/stats"
	"gvdb/query"
	"gvdb/query/outfile"
)

// Options size a figure. Zero values pick 6 x 4 inches at 150 DPI.
type Options struct {
	Width, Height vg.Length
	DPI           int
	Title         string
	// Scale is "log", "linear", or "" for the figure's default (log for
	// variances, distortions and noise scales; for histograms, the x axis).
	Scale string
	// YLabel names the y axis (default: from the statistics plotted).
	YLabel string
	// InQuery says the figure's path was written in query text (PLOT ...
	// TO 'file'): Save resolves it beneath the working directory without
	// following symbolic links.
	InQuery bool
	// Style "paper" is a single-column figure (PaperWidth x PaperHeight
	// at PaperDPI) where Width, Height or DPI are not set.
	Style string
	// ZerosExplained says the figure's caption explains its values <= 0
	// (SVRG's variance at its anchor's own step): a log scale leaves them
	// out without a warning.
	ZerosExplained bool
}

func (o Options) size() (vg.Length, vg.Length, int) {
	w, h, dpi := o.Width, o.Height, o.DPI
	if o.Style == "paper" {
		w, h, dpi = cmpOr(w, PaperWidth), cmpOr(h, PaperHeight), int(cmpOr(vg.Length(dpi), PaperDPI))
	}
	if w <= 0 {
		w = 6 * vg.Inch
	}
	if h <= 0 {
		h = 4 * vg.Inch
	}
	if dpi <= 0 {
		dpi = 150
	}
	return w, h, dpi
}

func cmpOr(v, def vg.Length) vg.Length {
	if v > 0 {
		return v
	}
	return def
}

// ErrNothingToPlot says a figure would have no data.
var ErrNothingToPlot = errors.New("nothing to plot")

// ErrUnsafeWrite is returned when writing a figure would replace
// something that is not a figure, follow a symbolic link, create a
// directory or, for a path written in a query, leave the working
// directory (outfile.ErrUnsafe).
var ErrUnsafeWrite = outfile.ErrUnsafe

// Save writes f to path; the extension (.png, .svg, .pdf) picks the format.
// The figure goes to a temporary file in path's directory, renamed into
// place: never written through a symbolic link, never left partial. Save
// never creates directories and never replaces a file that is not a
// figure. A path the user typed may be absolute; with o.InQuery (the path
// was written in query text: PLOT ... TO) it must be relative, without
// '..', and is resolved beneath the working directory without following
// symbolic links (outfile.Beneath).
func Save(f *Figure, path string, o Options) error {
	w, h, dpi := o.size()
	h = max(h, f.Height)
	var c vg.CanvasWriterTo
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(dpi))}
	case ".svg":
		c = vgsvg.New(w, h)
	case ".pdf":
		c = vgpdf.New(w, h)
	default:
		return fmt.Errorf("save figure %s: unknown extension %q (want .png, .svg or .pdf)", path, filepath.Ext(path))
	}
	open := outfile.Flag
	if o.InQuery {
		open = outfile.Beneath
	}
	t, err := open(path)
	if err != nil {
		return err
	}
	defer t.Close()
	if err := checkFigure(t); err != nil {
		return err
	}
	f.Draw(draw.New(c))
	return t.Write(func(w io.Writer) error {
		_, err := c.WriteTo(w)
		return err
	})
}

// checkFigure refuses to replace a file that is not a figure.
func checkFigure(t *outfile.Target) error {
	f, err := t.Existing()
	if f == nil || err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	if n > 0 && !isFigure(head[:n]) {
		return fmt.Errorf("%w %s: it exists and is not a PNG, SVG or PDF figure", ErrUnsafeWrite, t.Path)
	}
	return nil
}

// isFigure reports whether a file starts like a PNG, SVG or PDF.
func isFigure(head []byte) bool {
	s := string(head)
	return strings.HasPrefix(s, "\x89PNG") || strings.HasPrefix(s, "%PDF") ||
		strings.HasPrefix(strings.TrimSpace(s), "<?xml") || strings.HasPrefix(strings.TrimSpace(s), "<svg")
}

// grid adds light grid lines behind the data.
func grid(p *plot.Plot) {
	g := plotter.NewGrid()
	g.Vertical.Color = color.Gray{Y: 225}
	g.Horizontal.Color = color.Gray{Y: 225}
	g.Vertical.Width, g.Horizontal.Width = vg.Points(0.5), vg.Points(0.5)
	p.Add(g)
}

// yLabel names a y axis after the statistics kinds plotted on it.
func yLabel(kinds []string) string {
	names := map[string]string{
		"variance": "variance per coordinate", "svrg_variance": "variance per coordinate",
		"gc_variance": "variance per coordinate", "gc_variance_insample": "variance per coordinate",
		"nvar": "normalized variance", "svrg_nvar": "normalized variance", "gc_nvar": "normalized variance",
		"gc_nvar_insample": "normalized variance", "gns": "gradient noise scale B_simple", "snr": "signal-to-noise ratio (nats)",
		"norm": "mean gradient norm |μ|", "example_norm": "mean per-example gradient norm", "gc_distortion": "weighted distortion",
		"gc_distortion_insample": "weighted distortion", "examples": "examples", "params": "parameters",
	}
	var out []string
	seen := map[string]bool{}
	for _, k := range kinds {
		l := names[k]
		if l == "" {
			l = strings.ReplaceAll(k, "_", " ")
		}
		if l != "" && !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return strings.Join(out, ", ")
}

// logByDefault reports whether a statistic reads best on a log axis.
func logByDefault(label string) bool {
	for _, s := range []string{"variance", "gns", "distortion", "norm_test"} {
		if strings.Contains(label, s) {
			return true
		}
	}
	return false
}

// trace is one value drawn per series: a line (column, or -1), and a band
// between two bounds (lo, hi columns, or -1) or of ±1 sd around the line
// (sd column).
type trace struct {
	line, lo, hi, sd int
	note             string // what the band is, for the legend
}

// label names a trace in the legend.
func (t trace) label(labels []string) string {
	name := ""
	switch {
	case t.line >= 0:
		name = labels[t.line]
	case t.lo >= 0:
		name = strings.TrimSuffix(labels[t.lo], "_lo")
	}
	if t.note != "" {
		name += " " + t.note
	}
	return name
}

// traces pairs the value columns into what is drawn: mean(x) with
// stddev(x) (a ±1 sd band), x_lo and x_hi of ci(x) with the column x when
// present; every other column is a line.
func traces(cols []string, values []int, kind func(int) string) []trace {
	byName := map[string]int{}
	for _, v := range values {
		byName[cols[v]] = v
	}
	used := map[int]bool{}
	var out []trace
	for _, v := range values {
		k := kind(v)
		switch {
		case strings.HasPrefix(k, "mean:") && strings.HasPrefix(cols[v], "mean("):
			if sd, ok := byName["stddev("+strings.TrimPrefix(cols[v], "mean(")]; ok {
				used[sd] = true
				out = append(out, trace{line: v, lo: -1, hi: -1, sd: sd, note: "±1 sd over runs"})
				continue
			}
		case strings.HasPrefix(k, "ci_lo:") && strings.HasSuffix(cols[v], "_lo"):
			base := strings.TrimSuffix(cols[v], "_lo")
			hi, ok := byName[base+"_hi"]
			if !ok {
				break
			}
			used[hi] = true
			lvl, _ := strconv.ParseFloat(k[strings.LastIndex(k, ":")+1:], 64)
			t := trace{line: -1, lo: v, hi: hi, sd: -1, note: fmt.Sprintf("%g%% CI", 100*lvl)}
			if c, ok := byName[base]; ok {
				// The band goes with the line of its statistic.
				for i := range out {
					if out[i].line == c && out[i].lo < 0 && out[i].sd < 0 {
						out[i].lo, out[i].hi, out[i].note = t.lo, t.hi, t.note
						used[v] = true
					}
				}
				if used[v] {
					continue
				}
				used[c], t.line = true, c
			}
			used[v] = true
			out = append(out, t)
			continue
		}
		if used[v] {
			continue
		}
		out = append(out, trace{line: v, lo: -1, hi: -1, sd: -1})
	}
	// A statistic whose ci came before it: drop its plain line (drawn with
	// the band).
	var kept []trace
	for _, t := range out {
		if t.lo < 0 && t.sd < 0 && used[t.line] && !bandLine(out, t.line) {
			continue
		}
		kept = append(kept, t)
	}
	return kept
}

// bandLine reports whether column c is drawn as a band's line.
func bandLine(ts []trace, c int) bool {
	for _, t := range ts {
		if t.line == c && (t.lo >= 0 || t.sd >= 0) {
			return true
		}
	}
	return false
}

// band returns the shaded polygons of one series' trace, one per run of
// consecutive rows where both bounds can be drawn, and the points drawn.
func band(res *query.Result, rows []int, stepCol int, t trace, logY bool, cut *int, value func(r, c int) (float64, bool)) ([]*plotter.Polygon, int) {
	var out []*plotter.Polygon
	var lower, upper plotter.XYs
	flush := func() {
		if len(lower) > 1 {
			ring := append(plotter.XYs(nil), lower...)
			for i := len(upper) - 1; i >= 0; i-- {
				ring = append(ring, upper[i])
			}
			if poly, err := plotter.NewPolygon(ring); err == nil {
				out = append(out, poly)
			}
		}
		lower, upper = nil, nil
	}
	n := 0
	for _, r := range rows {
		var lo, hi float64
		ok1, ok2 := false, false
		if t.sd >= 0 {
			m, okm := value(r, t.line)
			sd := toFloat(res.Rows[r][t.sd])
			if okm && !math.IsNaN(sd) && !math.IsInf(sd, 0) {
				lo, hi = m-sd, m+sd
				ok1, ok2 = true, true
				if logY && lo <= 0 {
					// A log axis cannot show a band reaching 0.
					ok1 = false
					*cut++
				}
			}
		} else {
			lo, ok1 = value(r, t.lo)
			hi, ok2 = value(r, t.hi)
		}
		if !ok1 || !ok2 {
			flush()
			continue
		}
		x := toFloat(res.Rows[r][stepCol])
		lower, upper = append(lower, plotter.XY{X: x, Y: lo}), append(upper, plotter.XY{X: x, Y: hi})
		n += 2
	}
	flush()
	return out, n
}

// fade returns c, translucent, for a band.
func fade(c color.Color) color.Color {
	r, g, b, _ := c.RGBA()
	return color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: 56}
}

// baseKind strips the aggregate or interval prefix off a column's kind
// ("mean:nvar" -> nvar, "ci_lo:variance:0.95" -> variance).
func baseKind(k string) string {
	for _, p := range []string{"mean:", "stddev:", "ci_lo:", "ci_hi:"} {
		if rest, ok := strings.CutPrefix(k, p); ok {
			if p == "ci_lo:" || p == "ci_hi:" {
				rest, _, _ = strings.Cut(rest, ":")
			}
			return rest
		}
	}
	return k
}

// logTicks labels a log axis at powers of ten, or at 1-2-5 (or every
// digit) times powers of ten when the data spans too few decades for at
// least three labels; unlabelled minor ticks mark every digit.
type logTicks struct{}

// Ticks returns the ticks of [lo, hi].
func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(lo > 0) || !(hi >= lo) {
		return nil
	}
	first, last := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	in := func(v float64) bool { return v >= lo*(1-1e-9) && v <= hi*(1+1e-9) }
	var ticks []plot.Tick
	for _, labelled := range [][]float64{{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}} {
		ticks = ticks[:0]
		n := 0
		for e := first; e <= last; e++ {
			for d := 1.0; d <= 9; d++ {
				v := d * math.Pow(10, e)
				if !in(v) {
					continue
				}
				t := plot.Tick{Value: v}
				for _, l := range labelled {
					if d == l {
						t.Label = strconv.FormatFloat(v, 'g', 3, 64)
						n++
					}
				}
				ticks = append(ticks, t)
			}
		}
		if n >= 3 {
			break
		}
	}
	return ticks
}

// newPlot starts a panel in the figure style at body font size font.
func newPlot(font vg.Length) *plot.Plot {
	p := plot.New()
	styleAxes(p, font)
	return p
}

// newFigure makes a one-panel figure of p, titled by o.
func newFigure(p *plot.Plot, o Options) *Figure {
	w, _, _ := o.size()
	f := &Figure{Title: o.Title, Font: fontSize(w), Panels: [][]*plot.Plot{{p}}}
	padRange(&p.X, isLog(p.X), 0.03)
	padRange(&p.Y, isLog(p.Y), 0.06)
	return f
}

func isLog(a plot.Axis) bool {
	_, ok := a.Scale.(plot.LogScale)
	return ok
}

// figFont is the body font of a figure sized by o.
func figFont(o Options) vg.Length {
	w, _, _ := o.size()
	return fontSize(w)
}

// wrap breaks s at spaces into lines of at most n characters.
func wrap(s string, n int) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > n {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), "\n")
}

func labelIf(ok bool, s string) string {
	if ok {
		return s
	}
	return ""
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	case int:
		return float64(x)
	}
	return math.NaN()
}

// Distortion plots the GC weighted distortion against the number of
// clusters K on log-log axes, with the levels D0/K (below it GC beats
// SG-B) and D0/(2K) (below it GC beats SG-2B).
func Distortion(c *stats.Curve, o Options) (*Figure, error) {
	if c == nil || len(c.K) == 0 || !(c.D0 > 0) {
		return nil, fmt.Errorf("%w: no distortion curve (D0 = 0: all gradients equal?)", ErrNothingToPlot)
	}
	p := newPlot(figFont(o))
	grid(p)
	p.X.Label.Text = "clusters K"
	p.Y.Label.Text = "weighted distortion"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = logTicks{}, logTicks{}
	var gc, sgb, sg2b plotter.XYs
	for i, k := range c.K {
		if d := c.Distortion[i]; d > 0 {
			gc = append(gc, plotter.XY{X: float64(k), Y: d})
		}
		sgb = append(sgb, plotter.XY{X: float64(k), Y: c.D0 / float64(k)})
		sg2b = append(sg2b, plotter.XY{X: float64(k), Y: c.D0 / float64(2*k)})
	}
	if len(gc) == 0 {
		return nil, fmt.Errorf("%w: every distortion is 0", ErrNothingToPlot)
	}
	add := func(name string, xys plotter.XYs, c color.Color, style int) error {
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color = c
		l.Width = figFont(o) / 9 * 1.2
		l.Dashes = Dashes(style)
		p.Add(l)
		p.Legend.Add(name, l)
		return nil
	}
	if err := add("GC distortion", gc, Color(0), 0); err != nil {
		return nil, err
	}
	if err := add("D0/K (= SG-B)", sgb, Color(1), 1); err != nil {
		return nil, err
	}
	if err := add("D0/(2K) (= SG-2B)", sg2b, Color(2), 3); err != nil {
		return nil, err
	}
	return newFigure(p, o), nil
}

// Sample is a labelled set of values (the gradient norms of one step).
type Sample struct {
	Label  string
	Values []float64
}

// Histogram plots the distribution of per-example gradient norms, one
// outlined histogram per sample (e.g. per step), with shared bins.
func Histogram(samples []Sample, o Options) (*Figure, error) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range samples {
		for _, x := range s.Values {
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				lo, hi = min(lo, x), max(hi, x)
			}
		}
	}
	if len(samples) == 0 || lo > hi {
		return nil, fmt.Errorf("%w: no finite gradient norms", ErrNothingToPlot)
	}
	p := newPlot(figFont(o))
	grid(p)
	p.X.Label.Text = "per-example gradient norm |g_i|"
	p.Y.Label.Text = "examples"
	const bins = 30
	// Norms span decades: log-spaced bins on a log axis unless the scale
	// is linear (or some norm is 0).
	logX := o.Scale != "linear" && lo > 0 && hi > lo
	edge := func(b int) float64 { return lo + float64(b)*(hi-lo)/bins }
	bin := func(x float64) int { return min(int((x-lo)/(hi-lo)*bins), bins-1) }
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = logTicks{}
		ll, lh := math.Log(lo), math.Log(hi)
		edge = func(b int) float64 { return math.Exp(ll + float64(b)*(lh-ll)/bins) }
		bin = func(x float64) int { return min(int((math.Log(x)-ll)/(lh-ll)*bins), bins-1) }
	}
	if hi == lo {
		edge = func(b int) float64 { return lo + float64(b) - bins/2 }
		bin = func(float64) int { return bins / 2 }
	}
	for i, smp := range samples {
		var vals plotter.Values
		for _, x := range smp.Values {
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				vals = append(vals, x)
			}
		}
		h, err := plotter.NewHist(vals, bins)
		if err != nil {
			return nil, err
		}
		// Shared bins across histograms, so that they overlay.
		for b := range h.Bins {
			h.Bins[b].Min, h.Bins[b].Max, h.Bins[b].Weight = edge(b), edge(b+1), 0
		}
		for _, x := range vals {
			h.Bins[bin(x)].Weight++
		}
		h.FillColor = nil
		h.LineStyle.Color = Color(i)
		h.LineStyle.Width = figFont(o) / 9 * 1.2
		h.LineStyle.Dashes = Dashes(i)
		p.Add(h)
		p.Legend.Add(smp.Label, h)
	}
	return newFigure(p, o), nil
}

// ClusterSizes plots, for each step, the sizes of the clusters sorted
// from largest to smallest: one line per rank quantile (largest, 90th,
// median, 10th percentile, smallest).
func ClusterSizes(steps []int64, sizes [][]int, o Options) (*Figure, error) {
	if len(steps) == 0 || len(steps) != len(sizes) {
		return nil, fmt.Errorf("%w: no clusterings", ErrNothingToPlot)
	}
	p := newPlot(figFont(o))
	grid(p)
	p.X.Label.Text = "step"
	p.Y.Label.Text = "cluster size (examples)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	for i, q := range []struct {
		name string
		f    float64
	}{{"largest", 0}, {"90th percentile", 0.1}, {"median", 0.5}, {"10th percentile", 0.9}, {"smallest", 1}} {
		var xys plotter.XYs
		for s, sz := range sizes {
			if len(sz) == 0 {
				continue
			}
			v := sz[int(math.Round(q.f*float64(len(sz)-1)))]
			if v > 0 {
				xys = append(xys, plotter.XY{X: float64(steps[s]), Y: float64(v)})
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		styleLine(l, pts, Color(i), i, figFont(o))
		p.Add(l, pts)
		p.Legend.Add(q.name, l, pts)
	}
	return newFigure(p, o), nil
}

// DrawLines draws a query result over steps to file and returns the
// figure's warnings.
func DrawLines(res *query.Result, file string, o Options) ([]string, error) {
	p, warnings, err := Lines(res, o)
	if err != nil {
		return nil, err
	}
	return warnings, Save(p, file, o)
}

// DrawDistortion draws a GC distortion-vs-K curve (query.DistortionCurve)
// of run's snapshot at step to file, titled unless o has a title.
func DrawDistortion(c *query.Curve, run string, step int64, file string, o Options) error {
	if o.Title == "" {
		o.Title = fmt.Sprintf("%s, step %d: GC distortion vs K (%s)", run, step, c.PopulationLabel())
	}
	p, err := Distortion(c.Curve, o)
	if err != nil {
		return fmt.Errorf("%s distortion: %w", run, err)
	}
	return Save(p, file, o)
}

package plots

import (
	"fmt"
	"image/color"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// One figure style serves gvdb plot, PLOT in queries and the report:
// the Okabe–Ito palette (distinguishable with the common colour-vision
// deficiencies), a line style and a marker shape per series as second
// cues, and fonts sized so that they read at 9 points or more once the
// figure is shrunk to a single column (3.5 inches wide).

// Okabe–Ito's eight colours, ordered for contrast on white (its yellow
// last).
var palette = []color.Color{
	color.NRGBA{0x00, 0x72, 0xB2, 0xff}, // blue
	color.NRGBA{0xD5, 0x5E, 0x00, 0xff}, // vermillion
	color.NRGBA{0x00, 0x9E, 0x73, 0xff}, // bluish green
	color.NRGBA{0xCC, 0x79, 0xA7, 0xff}, // reddish purple
	color.NRGBA{0xE6, 0x9F, 0x00, 0xff}, // orange
	color.NRGBA{0x56, 0xB4, 0xE9, 0xff}, // sky blue
	color.NRGBA{0x00, 0x00, 0x00, 0xff}, // black
	color.NRGBA{0xF0, 0xE4, 0x42, 0xff}, // yellow
}

// MaxSeries is the most series one axis carries; more are drawn as small
// multiples (or, where panels already split units, with a colour map and
// a warning).
const MaxSeries = 8

// Color is series i's colour.
func Color(i int) color.Color { return palette[i%len(palette)] }

// Dashes is series i's line style: solid, dashed, dotted, dash-dot.
func Dashes(i int) []vg.Length {
	switch i % 4 {
	case 1:
		return []vg.Length{vg.Points(5), vg.Points(2.5)}
	case 2:
		return []vg.Length{vg.Points(1.2), vg.Points(2)}
	case 3:
		return []vg.Length{vg.Points(6), vg.Points(2), vg.Points(1.2), vg.Points(2)}
	}
	return nil
}

// Shape is series i's marker.
func Shape(i int) draw.GlyphDrawer {
	switch i % 6 {
	case 1:
		return draw.BoxGlyph{}
	case 2:
		return draw.TriangleGlyph{}
	case 3:
		return draw.PyramidGlyph{}
	case 4:
		return draw.CrossGlyph{}
	case 5:
		return draw.PlusGlyph{}
	}
	return draw.CircleGlyph{}
}

// colorMap is a sequential map (viridis, sampled) for more than
// MaxSeries series on one axis.
func colorMap(f float64) color.Color {
	stops := [][3]float64{{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}}
	f = math.Max(0, math.Min(1, f)) * float64(len(stops)-1)
	i := min(int(f), len(stops)-2)
	t := f - float64(i)
	var c [3]uint8
	for k := range c {
		c[k] = uint8(stops[i][k]*(1-t) + stops[i+1][k]*t)
	}
	return color.NRGBA{c[0], c[1], c[2], 0xff}
}

// Paper is the --style paper preset: a single-column figure.
const (
	PaperWidth  = 3.5 * vg.Inch
	PaperHeight = 2.6 * vg.Inch
	PaperDPI    = 300
)

// fontSize is the body font of a figure width w inches wide: 9 points at
// 3.5 inches and proportionally more above, so that every label is 9
// points or more when the figure is shrunk to one column.
func fontSize(w vg.Length) vg.Length {
	return vg.Points(9 * math.Max(1, float64(w/PaperWidth)))
}

// styleLine gives a line and its points series i's style.
func styleLine(line *plotter.Line, pts *plotter.Scatter, c color.Color, i int, font vg.Length) {
	line.Color, pts.Color = c, c
	line.Width = font / 9 * 1.2
	line.Dashes = Dashes(i)
	pts.Shape = Shape(i)
	pts.Radius = font / 9 * 2.2
}

// styleAxes sizes a panel's fonts.
func styleAxes(p *plot.Plot, font vg.Length) {
	p.Title.TextStyle.Font.Size = font
	p.Legend.TextStyle.Font.Size = font
	p.Legend.ThumbnailWidth = font * 2.5
	p.X.Label.TextStyle.Font.Size = font
	p.Y.Label.TextStyle.Font.Size = font
	p.X.Tick.Label.Font.Size = font
	p.Y.Tick.Label.Font.Size = font
	p.X.Width, p.Y.Width = font/9*0.8, font/9*0.8
	p.X.Tick.Length, p.Y.Tick.Length = font/9*6, font/9*6
}

// wrapText breaks s into lines no wider than width in style sty.
func wrapText(s string, sty text.Style, width vg.Length) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		next := w
		if line != "" {
			next = line + " " + w
		}
		if line != "" && sty.Width(next) > width {
			lines = append(lines, line)
			line = w
			continue
		}
		line = next
	}
	return strings.Join(append(lines, line), "\n")
}

// padRange widens an axis range by frac of its span on each side (of
// its logarithm on a log axis), so that no point sits on the frame.
func padRange(a *plot.Axis, log bool, frac float64) {
	lo, hi := a.Min, a.Max
	if math.IsInf(lo, 0) || math.IsInf(hi, 0) || math.IsNaN(lo) || math.IsNaN(hi) {
		return
	}
	if log {
		if lo <= 0 {
			return
		}
		f := math.Pow(hi/lo, frac)
		if hi == lo {
			f = 1.5
		}
		a.Min, a.Max = lo/f, hi*f
		return
	}
	d := (hi - lo) * frac
	if d == 0 {
		d = math.Max(math.Abs(lo)*0.1, 1e-12)
	}
	a.Min, a.Max = lo-d, hi+d
}

// WithStyle applies a style preset to o: "" (the default) or "paper" (a
// single-column figure, PaperWidth x PaperHeight at PaperDPI, fonts at 9
// points). explicit says which of "width", "height" and "dpi" the user
// set; those keep their values.
func (o Options) WithStyle(style string, explicit func(flag string) bool) (Options, error) {
	switch style {
	case "":
		return o, nil
	case "paper":
		o.Style = style
		if !explicit("width") {
			o.Width = PaperWidth
		}
		if !explicit("height") {
			o.Height = PaperHeight
		}
		if !explicit("dpi") {
			o.DPI = PaperDPI
		}
		return o, nil
	}
	return o, fmt.Errorf("unknown --style %q (want paper, or none for the default)", style)
}

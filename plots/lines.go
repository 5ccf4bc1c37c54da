package plots

import (
	"fmt"
	"image/color"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"gvdb/query"
)

// entry is one drawn series: a trace of one group of the result.
type entry struct {
	key  string // the group
	name string // legend name
	// series names the series' points (PointMarker): its group and its
	// column's label, even where the legend leaves them out.
	series string
	t      trace
	unit   string // the y axis it belongs on
}

// Lines plots a query result over steps: one series per value column and
// per combination of the other keys (run, layer, config.x groups, an
// example attribute group). Quantities in different units (variance and
// normalized variance, a statistic and the loss) go on separate panels
// stacked over one x axis; more than MaxSeries series of one unit become
// small multiples, one group a panel on a shared y range (or, beside
// other units, a colour map with a warning). Bands are shaded: mean(x)
// beside stddev(x) (aggregates over runs) draws the mean with a ±1 sd
// band, and a ci(stat) item draws its bootstrap interval around stat (or
// alone); the legend says what each band is. NaN points are skipped (the line joins its neighbours); values a log axis cannot show (≤ 0) are open rings on the panel's
// bottom edge, named in the legend, never joined to their neighbours. It
// returns warnings beside the figure.
func Lines(res *query.Result, o Options) (*Figure, []string, error) {
	if len(res.Rows) == 0 {
		return nil, nil, fmt.Errorf("%w: the query returned no rows", ErrNothingToPlot)
	}
	col := map[string]int{}
	for i, c := range res.Columns {
		col[c] = i
	}
	stepCol, ok := col["step"]
	if !ok {
		return nil, nil, fmt.Errorf("%w: the result has no step column to plot against", ErrNothingToPlot)
	}
	if _, ok := col["example_id"]; ok {
		return nil, nil, fmt.Errorf("%w: per-example rows have no line over steps (select statistics, or export the rows with --format csv)", ErrNothingToPlot)
	}
	isKey := map[int]bool{}
	var seriesKeys, values []int
	for _, i := range res.KeyColumns() {
		isKey[i] = true
		if i != stepCol {
			seriesKeys = append(seriesKeys, i)
		}
	}
	for i := range res.Columns {
		if !isKey[i] {
			values = append(values, i)
		}
	}
	labels := res.Labels
	if len(labels) != len(res.Columns) {
		labels = res.Columns
	}
	kind := func(i int) string {
		if i < len(res.Kinds) && res.Kinds[i] != "" {
			return res.Kinds[i]
		}
		return labels[i]
	}
	tr := traces(res.Columns, values, kind)

	series := map[string][]int{}
	names := map[string]string{}
	var order []string
	for r, row := range res.Rows {
		var parts []string
		for _, i := range seriesKeys {
			c := res.Columns[i]
			if c == "run" || c == "layer" {
				parts = append(parts, fmt.Sprint(row[i]))
			} else {
				v := fmt.Sprint(row[i])
				if v == "" {
					v = "none" // a run without this config key
				}
				parts = append(parts, fmt.Sprintf("%s=%s", strings.TrimPrefix(c, "config."), v))
			}
		}
		k := strings.Join(parts, "\x00")
		if _, ok := series[k]; !ok {
			order = append(order, k)
			names[k] = strings.Join(parts, " ")
		}
		series[k] = append(series[k], r)
	}

	// One unit a panel, in the order of the columns.
	var units []string
	unitOf := map[string]bool{}
	var entries []entry
	for _, t := range tr {
		c := t.line
		if c < 0 {
			c = t.lo
		}
		u := yLabel([]string{baseKind(kind(c))})
		if o.YLabel != "" {
			u = o.YLabel
		}
		if !unitOf[u] {
			unitOf[u] = true
			units = append(units, u)
		}
		for _, k := range order {
			name := strings.TrimSpace(strings.Join(nonEmpty(names[k], labelIf(len(tr) > 1 || t.note != "", t.label(labels))), " "))
			series := strings.TrimSpace(strings.Join(nonEmpty(names[k], t.label(labels)), " "))
			entries = append(entries, entry{key: k, name: name, series: series, t: t, unit: u})
		}
	}
	// Entries ordered group by group within a unit, as before: a group's
	// traces stay together in the legend.
	byUnit := map[string][]entry{}
	for _, k := range order {
		for _, e := range entries {
			if e.key == k {
				byUnit[e.unit] = append(byUnit[e.unit], e)
			}
		}
	}

	w, _, _ := o.size()
	font := fontSize(w)
	f := &Figure{Title: o.Title, Font: font}
	d := &drawer{res: res, stepCol: stepCol, font: font}
	var warnings []string
	points := 0
	for ui, u := range units {
		es := byUnit[u]
		logY := o.Scale == "log"
		if o.Scale == "" {
			logY = true
			for _, e := range es {
				logY = logY && logByDefault(labels[max(e.t.line, e.t.lo)])
			}
		}
		if len(units) == 1 && len(es) > MaxSeries && len(order) > 1 {
			// Small multiples: one group a panel, a shared y range.
			panels, n := d.multiples(es, order, names, series, logY, u)
			points += n
			f.Panels = panels
			// Panels about 4:3, the figure as tall as they need.
			w, h, _ := o.size()
			f.Height = max(h, vg.Length(len(panels))*w/vg.Length(len(panels[0]))*3/4+2*font)
			continue
		}
		p := d.panel(u, logY)
		cmap := len(es) > MaxSeries
		if cmap {
			warnings = append(warnings, fmt.Sprintf("%d series on the %s axis: drawn with a colour map, so colours are hard to tell apart (plot fewer groups, or one statistic a figure for small multiples)", len(es), u))
		}
		for i, e := range es {
			c := Color(i)
			if cmap {
				c = colorMap(float64(i) / float64(len(es)-1))
			}
			points += d.add(p, e, series[e.key], i, c, logY, true)
		}
		d.finish(p, logY)
		if ui < len(units)-1 {
			sharedX(p)
		}
		f.Panels = append(f.Panels, []*plot.Plot{p})
	}
	if points == 0 {
		return nil, nil, fmt.Errorf("%w: every value is NaN or missing (see the query's warnings)", ErrNothingToPlot)
	}
	alignX(f)
	if d.zeros > 0 && !o.ZerosExplained {
		warnings = append(warnings, fmt.Sprintf("%d values <= 0 cannot be drawn on a log axis: open rings on the bottom edge mark them (use SCALE LINEAR to see them)", d.zeros))
	}
	if d.cut > 0 {
		warnings = append(warnings, fmt.Sprintf("the ±1 sd band is cut at %d points where mean − sd <= 0, which a log scale cannot show (use SCALE LINEAR)", d.cut))
	}
	return f, warnings, nil
}

// drawer adds series to panels.
type drawer struct {
	res        *query.Result
	stepCol    int
	font       vg.Length
	zeros, cut int
	// zeroes holds, per panel, the points a log axis cannot show, drawn
	// on the bottom edge once the range is known.
	pending map[*plot.Plot][]zero
}

type zero struct {
	x, y   float64
	c      color.Color
	series string
}

// panel starts an empty panel for unit u.
func (d *drawer) panel(u string, logY bool) *plot.Plot {
	p := newPlot(d.font)
	grid(p)
	p.X.Label.Text = "step"
	p.Y.Label.Text = u
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
	}
	return p
}

// value reads a drawable y, counting what a log axis cannot show.
func (d *drawer) value(r, c int, logY bool) (y float64, ok, zero bool) {
	y = toFloat(d.res.Rows[r][c])
	if math.IsNaN(y) || math.IsInf(y, 0) {
		return 0, false, false
	}
	if logY && y <= 0 {
		return 0, false, true
	}
	return y, true, false
}

// add draws entry e's rows on p in style i and colour c: the band, then
// the line in segments broken at every missing or undrawable point, and
// its markers. It returns the points drawn.
func (d *drawer) add(p *plot.Plot, e entry, rows []int, i int, c color.Color, logY, legend bool) int {
	var things []plot.Thumbnailer
	n := 0
	t := e.t
	if t.lo >= 0 || t.sd >= 0 {
		value := func(r, col int) (float64, bool) {
			y, ok, _ := d.value(r, col, logY)
			return y, ok
		}
		bands, m := band(d.res, rows, d.stepCol, t, logY, &d.cut, value)
		for _, b := range bands {
			b.Color = fade(c)
			b.LineStyle.Width = 0
			p.Add(b)
		}
		if len(bands) > 0 {
			things = append(things, bands[0])
		}
		n += m
	}
	if t.line >= 0 {
		var all, seg plotter.XYs
		flush := func() {
			if len(seg) > 1 {
				l, _ := plotter.NewLine(seg)
				l.Color, l.Width, l.Dashes = c, d.font/9*1.2, Dashes(i)
				p.Add(l)
			}
			seg = nil
		}
		for _, r := range rows {
			x := toFloat(d.res.Rows[r][d.stepCol])
			y, ok, z := d.value(r, t.line, logY)
			if !ok {
				// A missing value (NaN: a statistic a snapshot lacks,
				// such as GC on a sample) is skipped; a value the log
				// axis cannot show breaks the line.
				if z {
					flush()
					d.zeros++
					if d.pending == nil {
						d.pending = map[*plot.Plot][]zero{}
					}
					d.pending[p] = append(d.pending[p], zero{x, toFloat(d.res.Rows[r][t.line]), c, e.series})
				}
				continue
			}
			seg = append(seg, plotter.XY{X: x, Y: y})
			all = append(all, plotter.XY{X: x, Y: y})
		}
		flush()
		if len(all) > 0 {
			n += len(all)
			line, pts, err := plotter.NewLinePoints(all)
			if err == nil {
				styleLine(line, pts, c, i, d.font)
				p.Add(markers{Scatter: pts, series: e.series})
				things = append(things, line, pts)
			}
		}
	}
	if legend && len(things) > 0 && e.name != "" {
		// Long names wrap: the legend strip is at most 2/5 of the
		// figure's width.
		p.Legend.Add(wrap(e.name, 22), things...)
	}
	return n
}

// finish pads p's ranges so that no point sits on the frame, then marks
// the values its log axis cannot show on the bottom edge.
func (d *drawer) finish(p *plot.Plot, logY bool) {
	padRange(&p.X, false, 0.03)
	padRange(&p.Y, logY, 0.06)
	zs := d.pending[p]
	if len(zs) == 0 {
		return
	}
	ring := draw.GlyphStyle{Shape: draw.RingGlyph{}, Radius: d.font / 9 * 3.2}
	for _, z := range zs {
		s, _ := plotter.NewScatter(plotter.XYs{{X: z.x, Y: p.Y.Min}})
		s.GlyphStyle = ring
		s.Color = z.c
		p.Add(markers{Scatter: s, series: z.series, values: []float64{z.y}})
	}
	key, _ := plotter.NewScatter(plotter.XYs{{}})
	key.GlyphStyle = ring
	key.Color = color.Gray{Y: 90}
	p.Legend.Add("≤ 0: off the log axis", key)
}

// multiples draws each group of es on its own panel, titled with the
// group, in a grid of about square shape on a shared y range.
func (d *drawer) multiples(es []entry, order []string, names map[string]string, series map[string][]int, logY bool, u string) ([][]*plot.Plot, int) {
	cols := int(math.Ceil(math.Sqrt(float64(len(order)))))
	var grid [][]*plot.Plot
	var all []*plot.Plot
	n := 0
	font := d.font
	d.font = font * 3 / 4
	defer func() { d.font = font }()
	for gi, k := range order {
		p := d.panel(u, logY)
		p.Title.Text = names[k]
		i := 0
		for _, e := range es {
			if e.key != k {
				continue
			}
			// The same trace keeps its style in every panel; its legend
			// (without the group) only on the first.
			e.name = strings.TrimSpace(strings.TrimPrefix(e.name, names[k]))
			n += d.add(p, e, series[k], i, Color(i), logY, gi == 0)
			i++
		}
		if gi%cols == 0 {
			grid = append(grid, nil)
		}
		grid[len(grid)-1] = append(grid[len(grid)-1], p)
		all = append(all, p)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range all {
		lo, hi = math.Min(lo, p.Y.Min), math.Max(hi, p.Y.Max)
	}
	for gi, p := range all {
		p.Y.Min, p.Y.Max = lo, hi
		d.finish(p, logY)
		if gi < len(all)-cols {
			sharedX(p)
		}
		if gi%cols != 0 {
			p.Y.Label.Text = ""
			p.Y.Tick.Marker = unlabelled{p.Y.Tick.Marker}
		}
	}
	return grid, n
}

// sharedX hides a stacked panel's x labels: the panel below has them.
func sharedX(p *plot.Plot) {
	p.X.Label.Text = ""
	p.X.Tick.Marker = unlabelled{p.X.Tick.Marker}
}

// alignX gives every panel of f the same x range.
func alignX(f *Figure) {
	lo, hi := math.Inf(1), math.Inf(-1)
	f.each(func(_, _ int, p *plot.Plot) { lo, hi = math.Min(lo, p.X.Min), math.Max(hi, p.X.Max) })
	f.each(func(_, _ int, p *plot.Plot) { p.X.Min, p.X.Max = lo, hi })
}

// unlabelled keeps a tick marker's ticks without their labels.
type unlabelled struct{ plot.Ticker }

// Ticks returns the ticks of [lo, hi] without labels.
func (u unlabelled) Ticks(lo, hi float64) []plot.Tick {
	ts := u.Ticker.Ticks(lo, hi)
	for i := range ts {
		ts[i].Label = ""
	}
	return ts
}

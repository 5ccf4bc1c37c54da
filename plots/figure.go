package plots

import (
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Figure is one figure of one or more panels in a grid: stacked panels
// sharing the x axis (two quantities with different units never share an
// axis) or small multiples (one series a panel). Its title spans the
// figure, wrapped to its width, and each panel's legend stands in a strip
// at the right, beside the panel's data area, never over a point.
type Figure struct {
	Title  string
	Panels [][]*plot.Plot
	// Font is the body font size (fontSize of the figure's width).
	Font vg.Length
	// Height, when set, is the height the figure needs (small multiples
	// grow the figure downwards); Save uses it over a smaller one.
	Height vg.Length
}

// Panel returns the figure's first panel.
func (f *Figure) Panel() *plot.Plot { return f.Panels[0][0] }

// each calls fn on every panel.
func (f *Figure) each(fn func(j, i int, p *plot.Plot)) {
	for j, row := range f.Panels {
		for i, p := range row {
			if p != nil {
				fn(j, i, p)
			}
		}
	}
}

// titleStyle is the figure title's text style.
func (f *Figure) titleStyle() text.Style {
	sty := plot.New().Title.TextStyle
	sty.Font.Size = f.Font * 1.1
	sty.XAlign, sty.YAlign = draw.XCenter, draw.YTop
	return sty
}

// Draw draws the figure on c.
func (f *Figure) Draw(c draw.Canvas) {
	l := f.layout(c)
	if l.title != "" {
		c.FillText(f.titleStyle(), l.titleAt, l.title)
	}
	for j, row := range f.Panels {
		for i, p := range row {
			if p == nil {
				continue
			}
			leg := p.Legend
			empty := plot.NewLegend()
			empty.TextStyle = leg.TextStyle
			p.Legend = empty
			p.Draw(l.panels[j][i])
			p.Legend = leg
			if box, ok := l.legends[p]; ok {
				leg.Left, leg.Top, leg.XOffs, leg.YOffs = true, true, 0, 0
				leg.Draw(draw.Canvas{Canvas: c.Canvas, Rectangle: box})
			}
		}
	}
}

// layout is where a figure's parts go on a canvas.
type layout struct {
	title   string
	titleAt vg.Point
	panels  [][]draw.Canvas
	legends map[*plot.Plot]vg.Rectangle
}

// layout places the title (wrapped to the width), the panels (aligned in
// their grid) and each panel's legend (right of all data areas, aligned
// with its panel's top).
func (f *Figure) layout(c draw.Canvas) layout {
	var l layout
	pad := f.Font / 2
	c = draw.Crop(c, pad/2, -pad, pad/2, -pad/2)
	if f.Title != "" {
		sty := f.titleStyle()
		l.title = wrapText(f.Title, sty, c.Max.X-c.Min.X)
		l.titleAt = vg.Point{X: (c.Min.X + c.Max.X) / 2, Y: c.Max.Y}
		c = draw.Crop(c, 0, 0, 0, -(sty.Height(l.title) + pad))
	}
	var strip vg.Length
	f.each(func(_, _ int, p *plot.Plot) {
		strip = max(strip, p.Legend.Rectangle(c).Size().X)
	})
	area := c
	if strip > 0 {
		strip = min(strip+pad, (c.Max.X-c.Min.X)*2/5)
		area = draw.Crop(c, 0, -strip, 0, 0)
	}
	rows, cols := len(f.Panels), 0
	for _, r := range f.Panels {
		cols = max(cols, len(r))
	}
	grid := make([][]*plot.Plot, rows)
	saved := map[*plot.Plot]plot.Legend{}
	for j := range grid {
		grid[j] = make([]*plot.Plot, cols)
		copy(grid[j], f.Panels[j])
	}
	f.each(func(_, _ int, p *plot.Plot) {
		saved[p] = p.Legend
		empty := plot.NewLegend()
		empty.TextStyle = p.Legend.TextStyle
		p.Legend = empty
	})
	// A y label never runs past its panel's height (gonum would shrink
	// the data area to fit it): it wraps.
	f.each(func(_, _ int, p *plot.Plot) {
		if p.Y.Label.Text != "" {
			sty := p.Y.Label.TextStyle
			sty.Rotation = 0 // measured along the text
			p.Y.Label.Text = wrapText(p.Y.Label.Text, sty, (area.Max.Y-area.Min.Y)/vg.Length(rows)*0.5)
		}
	})
	l.panels = align(grid, area, pad)
	l.legends = map[*plot.Plot]vg.Rectangle{}
	f.each(func(j, i int, p *plot.Plot) {
		p.Legend = saved[p]
		r := p.Legend.Rectangle(c)
		if r.Size().X <= 0 {
			return
		}
		top := p.DataCanvas(l.panels[j][i]).Max.Y
		l.legends[p] = vg.Rectangle{Min: vg.Point{X: area.Max.X + pad, Y: top - r.Size().Y}, Max: vg.Point{X: c.Max.X, Y: top}}
	})
	return l
}

// align places a grid of panels on c so that their data areas line up by
// row and column and share one size: each column as wide as its widest
// axes need, each row as tall (gonum's plot.Align misplaces rows of
// panels whose axes differ).
func align(grid [][]*plot.Plot, c draw.Canvas, pad vg.Length) [][]draw.Canvas {
	rows, cols := len(grid), len(grid[0])
	// Margins measured on a canvas of the whole area: gonum's padding
	// misjudges one too small for its labels.
	tile := draw.Canvas{Canvas: c.Canvas, Rectangle: vg.Rectangle{Max: vg.Point{X: c.Max.X - c.Min.X, Y: c.Max.Y - c.Min.Y}}}
	type margins struct{ left, right, top, bottom vg.Length }
	own := make([][]margins, rows)
	colL, colR := make([]vg.Length, cols), make([]vg.Length, cols)
	rowT, rowB := make([]vg.Length, rows), make([]vg.Length, rows)
	for j, row := range grid {
		own[j] = make([]margins, cols)
		for i, p := range row {
			if p == nil {
				continue
			}
			d := p.DataCanvas(tile)
			m := margins{d.Min.X - tile.Min.X, tile.Max.X - d.Max.X, tile.Max.Y - d.Max.Y, d.Min.Y - tile.Min.Y}
			own[j][i] = m
			colL[i], colR[i] = max(colL[i], m.left), max(colR[i], m.right)
			rowT[j], rowB[j] = max(rowT[j], m.top), max(rowB[j], m.bottom)
		}
	}
	dw, dh := c.Max.X-c.Min.X-pad*vg.Length(cols-1), c.Max.Y-c.Min.Y-pad*vg.Length(rows-1)
	for i := range cols {
		dw -= colL[i] + colR[i]
	}
	for j := range rows {
		dh -= rowT[j] + rowB[j]
	}
	dw, dh = max(dw/vg.Length(cols), 1), max(dh/vg.Length(rows), 1)
	out := make([][]draw.Canvas, rows)
	y := c.Max.Y
	for j := range rows {
		out[j] = make([]draw.Canvas, cols)
		x := c.Min.X
		for i := range cols {
			m := own[j][i]
			dataMin := vg.Point{X: x + colL[i], Y: y - rowT[j] - dh}
			out[j][i] = draw.Canvas{Canvas: c.Canvas, Rectangle: vg.Rectangle{
				Min: vg.Point{X: dataMin.X - m.left, Y: dataMin.Y - m.bottom},
				Max: vg.Point{X: dataMin.X + dw + m.right, Y: dataMin.Y + dh + m.top}}}
			x += colL[i] + dw + colR[i] + pad
		}
		y -= rowT[j] + dh + rowB[j] + pad
	}
	return out
}

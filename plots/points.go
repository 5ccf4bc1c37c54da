package plots

import (
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// PointMarker is a canvas that keeps each data point's marker apart
// (plots/live wraps each in an SVG group of its own, so that a page or a
// test can count and label them): a figure drawn on it calls BeginPoint
// before the glyph of one point of a series and EndPoint after it. Legend
// keys are not points. Other canvases draw the same figure unchanged.
type PointMarker interface {
	BeginPoint(series string, x, y float64)
	EndPoint()
}

// markers are a series' markers: a scatter whose every drawn point is told
// to a PointMarker canvas. Its legend key is the scatter's own.
type markers struct {
	*plotter.Scatter
	series string
	// values, when set, are the points' values where they are drawn
	// elsewhere (a value <= 0 on the bottom edge of a log axis).
	values []float64
}

// Plot draws the markers as Scatter.Plot does, each between BeginPoint
// and EndPoint on a PointMarker canvas; a point off the canvas is not
// drawn, nor told.
func (s markers) Plot(c draw.Canvas, p *plot.Plot) {
	m, ok := pointMarker(c.Canvas)
	if !ok {
		s.Scatter.Plot(c, p)
		return
	}
	trX, trY := p.Transforms(&c)
	for i, xy := range s.XYs {
		sty := s.GlyphStyle
		if s.GlyphStyleFunc != nil {
			sty = s.GlyphStyleFunc(i)
		}
		pt := vg.Point{X: trX(xy.X), Y: trY(xy.Y)}
		if sty.Shape == nil || !c.Contains(pt) {
			continue
		}
		y := xy.Y
		if i < len(s.values) {
			y = s.values[i]
		}
		m.BeginPoint(s.series, xy.X, y)
		c.DrawGlyph(sty, pt)
		m.EndPoint()
	}
}

// pointMarker finds a PointMarker beneath c: gonum's plots wrap the
// canvas they are given in draw.Canvas values.
func pointMarker(c vg.Canvas) (PointMarker, bool) {
	for {
		switch x := c.(type) {
		case PointMarker:
			return x, true
		case draw.Canvas:
			c = x.Canvas
		case *draw.Canvas:
			c = x.Canvas
		default:
			return nil, false
		}
	}
}

package live

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strconv"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"gvdb/plots"
)

// PointClass is the class of the SVG group that holds one data point's
// marker in the server's figures (one per snapshot of a series; legend
// keys are not points). Each carries data-series, data-step and
// data-value, and a <title> a browser shows on hover.
const PointClass = "gvdb-point"

// pointCanvas is an SVG canvas on which each data point's marker is drawn
// in a group of its own (plots.PointMarker). gonum's SVG canvas has no
// way to name a group, so the group opens with a full turn (a rotation
// that moves nothing), which svgSentinel finds in the output and
// replaces with the point's class and data.
type pointCanvas struct {
	*vgsvg.Canvas
	points []point
}

type point struct {
	series string
	x, y   float64
}

var _ plots.PointMarker = (*pointCanvas)(nil)

func (c *pointCanvas) BeginPoint(series string, x, y float64) {
	c.Push()
	c.Rotate(2 * math.Pi)
	c.points = append(c.points, point{series, x, y})
}

func (c *pointCanvas) EndPoint() { c.Pop() }

// svgSentinel is the tag that a full turn opens on gonum's SVG canvas.
var svgSentinel = func() []byte {
	c := vgsvg.New(1, 1)
	c.Push()
	c.Rotate(2 * math.Pi)
	c.Pop()
	var b bytes.Buffer
	c.WriteTo(&b)
	for _, line := range bytes.Split(b.Bytes(), []byte("\n")) {
		if bytes.Contains(line, []byte("rotate(")) {
			return bytes.TrimSpace(line)
		}
	}
	panic("gonum's SVG canvas draws no rotation")
}()

// renderSVG draws fig as SVG with one PointClass group per data point.
func renderSVG(fig interface{ Draw(draw.Canvas) }, width, height vg.Length) ([]byte, error) {
	c := &pointCanvas{Canvas: vgsvg.New(width, height)}
	fig.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return nil, err
	}
	raw := b.Bytes()
	if n := bytes.Count(raw, svgSentinel); n != len(c.points) {
		return nil, fmt.Errorf("figure: %d point groups for %d points (gonum's SVG output changed?)", n, len(c.points))
	}
	out := bytes.NewBuffer(make([]byte, 0, len(raw)+len(c.points)*160))
	for _, p := range c.points {
		i := bytes.Index(raw, svgSentinel)
		out.Write(raw[:i])
		step := strconv.FormatFloat(p.x, 'f', -1, 64)
		value := strconv.FormatFloat(p.y, 'g', 6, 64)
		fmt.Fprintf(out, `<g class="%s" data-series="%s" data-step="%s" data-value="%s"><title>%s, step %s: %s</title>`,
			PointClass, html.EscapeString(p.series), step, value, html.EscapeString(p.series), step, value)
		raw = raw[i+len(svgSentinel):]
	}
	out.Write(raw)
	return out.Bytes(), nil
}

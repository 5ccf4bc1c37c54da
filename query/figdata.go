package query

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"gvdb/db"
	"gvdb/query/stats"
)

// loadLayers decodes the blocks of run's snapshot at step (nil layers: all).
func loadLayers(d *db.DB, run string, step int64, layers []string) ([]stats.Layer, error) {
	s, err := d.Snapshot(run, step, layers)
	if err != nil {
		return nil, err
	}
	blocks, err := decodeAll(s)
	if err != nil {
		return nil, fmt.Errorf("run %q step %d: %w", run, step, err)
	}
	var out []stats.Layer
	for _, b := range s.Blocks {
		out = append(out, stats.Layer{Name: b.Layer, Block: blocks[b.Layer]})
	}
	return out, nil
}

// ExampleNorms returns |g_i| for each example of run's snapshot at step,
// over the given layers (nil: all).
func ExampleNorms(d *db.DB, run string, step int64, layers []string) ([]float64, error) {
	ls, err := loadLayers(d, run, step, layers)
	if err != nil {
		return nil, err
	}
	m, err := stats.Compute(ls, step, stats.Need{})
	if err != nil {
		return nil, err
	}
	if m.NonFinite {
		return nil, fmt.Errorf("run %q step %d: %s", run, step, strings.Join(m.Warnings, "; "))
	}
	out := make([]float64, len(m.SqNorms))
	for i, v := range m.SqNorms {
		out[i] = math.Sqrt(v)
	}
	return out, nil
}

// DistortionCurve clusters run's snapshot at step with K = 1, 2, 4, ... N
// and returns the weighted distortion of each, with D0.
func DistortionCurve(d *db.DB, run string, step int64, layers []string, opts Options) (*stats.Curve, error) {
	ls, err := loadLayers(d, run, step, layers)
	if err != nil {
		return nil, err
	}
	g, err := stats.NewGram(ls)
	if err != nil {
		return nil, err
	}
	return stats.DistortionCurve(g, ls[0].Block.IDs, stats.GCOptions{Seed: max(opts.GCSeed, 1), Rounds: opts.GCRounds})
}

// ClusterSizes clusters every snapshot of run into k clusters and returns
// each step's cluster sizes, largest first.
func ClusterSizes(d *db.DB, run string, k int, layers []string, opts Options) ([]int64, [][]int, error) {
	steps, err := d.Steps(run)
	if err != nil {
		return nil, nil, err
	}
	var sizes [][]int
	for _, step := range steps {
		ls, err := loadLayers(d, run, step, layers)
		if err != nil {
			return nil, nil, err
		}
		g, err := stats.NewGram(ls)
		if err != nil {
			return nil, nil, err
		}
		c, err := stats.Cluster(g, ls[0].Block.IDs, k, stats.GCOptions{Seed: max(opts.GCSeed, 1), Rounds: opts.GCRounds})
		if err != nil {
			return nil, nil, fmt.Errorf("run %q step %d: %w", run, step, err)
		}
		s := append([]int(nil), c.Sizes...)
		sort.Sort(sort.Reverse(sort.IntSlice(s)))
		sizes = append(sizes, s)
	}
	return steps, sizes, nil
}

// label prints an expression with the statistics' default arguments
// filled in for batch size batch (0: leave them out).
func label(e *Expr, batch int) string {
	return e.render(func(o Operand) string {
		switch x := o.(type) {
		case *Paren:
			return "(" + label(x.Expr, batch) + ")"
		case *Name:
			if isStat(string(x.Name)) && batch > 0 {
				return refText(statRef{name: string(x.Name)}.resolve(batch))
			}
		case *Call:
			n := string(x.Name)
			if n == "pooled" {
				return "pooled(" + label(x.Args[0], batch) + ")"
			}
			if isStat(n) && batch > 0 {
				ref := statRef{name: n}
				for _, a := range x.Args {
					v, _ := constant(a)
					ref.args = append(ref.args, v)
				}
				return refText(ref.resolve(batch))
			}
		}
		return o.String()
	})
}

func refText(r statRef) string {
	if len(r.args) == 0 {
		return r.name
	}
	parts := make([]string, len(r.args))
	for i, a := range r.args {
		parts[i] = strconv.FormatFloat(a, 'g', -1, 64)
	}
	return r.name + "(" + strings.Join(parts, ", ") + ")"
}

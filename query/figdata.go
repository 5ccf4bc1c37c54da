package query

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/alecthomas/participle/v2/lexer"

	"gvdb/db"
	"gvdb/db/stats"
	"gvdb/query/parser"
)

// loadLayers decodes the blocks of run r's snapshot at step (nil layers:
// all) and returns them with the snapshot's manifest fields.
func loadLayers(d *db.DB, r *db.Run, step int64, layers []string) ([]stats.Layer, *db.Snapshot, error) {
	s, err := d.Snapshot(r, step, db.Select{Layers: layers})
	if err != nil {
		return nil, nil, err
	}
	blocks, err := decodeAll(s.Blocks)
	if err != nil {
		return nil, nil, fmt.Errorf("run %q step %d: %w", r.Name, step, err)
	}
	var out []stats.Layer
	for _, b := range s.Blocks {
		out = append(out, stats.Layer{Name: b.Layer, Block: blocks[b.Layer], Weight: isWeight(r, b.Layer)})
	}
	return out, s, nil
}

// ExampleNorms returns |g_i| for each example of run r's snapshot at
// step, over the given layers (nil: all).
func ExampleNorms(d *db.DB, r *db.Run, step int64, layers []string) ([]float64, error) {
	ls, _, err := loadLayers(d, r, step, layers)
	if err != nil {
		return nil, err
	}
	m, err := stats.Compute(ls, step, stats.Need{})
	if err != nil {
		return nil, err
	}
	if m.NonFinite {
		return nil, fmt.Errorf("run %q step %d: %s", r.Name, step, strings.Join(m.Warnings, "; "))
	}
	out := make([]float64, len(m.SqNorms))
	for i, v := range m.SqNorms {
		out[i] = math.Sqrt(v)
	}
	return out, nil
}

// Curve is a Gradient Clustering distortion-vs-K curve and the population
// it was measured on.
type Curve struct {
	*stats.Curve
	Step       int64
	Population db.Population
	N          int
	// Path says where the partitions were searched (gram or sketch).
	Path string
}

// DistortionCurve clusters run r's snapshot at step with K = 1, 2, 4, ...
// up to kmax and returns the weighted distortion of each, with D0. On a
// full snapshot the partitions are fitted and scored on the population;
// on a sample they are held out (fit on one half, scored on the other),
// and K stops at N/4.
func DistortionCurve(d *db.DB, r *db.Run, step int64, layers []string, kmax int, opts Options) (*Curve, error) {
	ls, s, err := loadLayers(d, r, step, layers)
	if err != nil {
		return nil, err
	}
	heldOut := s.Population == db.Sample
	if heldOut {
		kmax = min(kmax, s.N/4)
	}
	kmax = min(kmax, s.N)
	if kmax < 1 {
		return nil, fmt.Errorf("run %q step %d: %d examples are too few for a distortion curve", r.Name, step, s.N)
	}
	sc := newGCScope(opts.cache(), d, r, step, ls, gcOptions(opts))
	defer sc.release()
	c, path, err := sc.curve(kmax, heldOut)
	if err != nil {
		return nil, fmt.Errorf("run %q step %d: %w", r.Name, step, err)
	}
	return &Curve{Curve: c, Step: step, Population: s.Population, N: s.N, Path: path}, nil
}

// ClusterSizes clusters every snapshot of run r into k clusters (fitted
// on the snapshot's own examples: the partition itself, not an estimate)
// and returns each step's cluster sizes, largest first.
func ClusterSizes(d *db.DB, r *db.Run, k int, layers []string, opts Options) ([]int64, [][]int, error) {
	steps, err := d.Steps(r)
	if err != nil {
		return nil, nil, err
	}
	cache := opts.cache()
	var sizes [][]int
	for _, step := range steps {
		ls, snap, err := loadLayers(d, r, step, layers)
		if err != nil {
			return nil, nil, err
		}
		if err := checkK(lexer.Position{}, "clusters", float64(k), snap.N, fmt.Sprintf("the examples of run %s at step %d", r.Name, step)); err != nil {
			return nil, nil, err
		}
		sc := newGCScope(cache, d, r, step, ls, gcOptions(opts))
		p, err := sc.fit(k, stats.MethodExact, false)
		sc.release()
		if err != nil {
			return nil, nil, fmt.Errorf("run %q step %d: %w", r.Name, step, err)
		}
		s := append([]int(nil), p.Sizes...)
		sort.Sort(sort.Reverse(sort.IntSlice(s)))
		sizes = append(sizes, s)
	}
	return steps, sizes, nil
}

// cache is the Gradient Clustering cache opts asks for, else a new one
// for this call.
func (opts Options) cache() *GCCache {
	if opts.Cache != nil {
		return opts.Cache
	}
	return queryCache()
}

// gcOptions are the Gradient Clustering options that opts asks for.
func gcOptions(opts Options) stats.GCOptions {
	return stats.GCOptions{Seed: max(opts.GCSeed, 1), Rounds: opts.GCRounds, Path: opts.GCPath, SketchDim: opts.SketchDim, MemoryBudget: opts.MemoryBudget}
}

// label prints an expression with the statistics' default arguments
// filled in for batch size batch (0: leave them out).
func label(e *parser.Expr, batch int) string {
	return e.Render(func(o parser.Operand) string {
		if x, ok := o.(*parser.Paren); ok {
			return "(" + label(x.Expr, batch) + ")"
		}
		if ref, ok, _ := statRefOf(o); ok && batch > 0 {
			r := ref.resolve(batch)
			if r.pooled {
				return "pooled(" + r.text(", ") + ")"
			}
			return r.text(", ")
		}
		return o.String()
	})
}

// Title returns a figure title for a SELECT or PLOT: a PLOT's TITLE if it
// has one, else the items (their aliases, or the statistics with their
// arguments), the runs, and the population when the WHERE clause picks
// one; never the query text.
func Title(st parser.Statement) string {
	var items []*parser.Item
	var runs []string
	var where *parser.Cond
	switch s := st.(type) {
	case *parser.Plot:
		if s.Title != nil {
			return *s.Title
		}
		items, runs, where = s.Items, s.Runs, s.Where
	case *parser.Select:
		items, runs, where = s.Items, s.Runs, s.Where
	default:
		return ""
	}
	var names []string
	for _, it := range items {
		if it.Alias != nil {
			names = append(names, *it.Alias)
		} else if n := bareName(it.Expr); !keys[n] || n == "" {
			names = append(names, it.Expr.String())
		}
	}
	title := strings.Join(names, ", ") + ": " + strings.Join(runs, ", ")
	if where != nil {
		w := where.String()
		switch {
		case strings.Contains(w, "population = 'full'"):
			title += " (full snapshots)"
		case strings.Contains(w, "population = 'sample'"):
			title += " (sampled snapshots)"
		}
	}
	return title
}

// PopulationLabel says what population the curve was measured on.
func (c *Curve) PopulationLabel() string {
	if c.Population == db.Full {
		return fmt.Sprintf("full training set, N = %d, in-sample", c.N)
	}
	return fmt.Sprintf("sample of N = %d, held out", c.N)
}

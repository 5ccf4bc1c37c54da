package query

import (
	"cmp"
	"context"
	"math"
	"sort"

	"gvdb/db/stats"
)

// rowKey identifies an output row.
type rowKey struct {
	run   int
	scope int
	t     int64 // step, or window start
	group int64 // the example attribute's value under GROUP BY it, else noGroup
}

// noGroup is rowKey.group without GROUP BY an example attribute.
const noGroup = math.MinInt64

// cell accumulates one value over the snapshots or steps of a row.
type cell struct {
	sum float64
	n   int
}

func (c *cell) add(v float64) { c.sum += v; c.n++ }

func (c *cell) mean() float64 {
	if c.n == 0 {
		return math.NaN()
	}
	return c.sum / float64(c.n)
}

// grid accumulates the values of the output rows.
type grid struct {
	window int64 // 0: one row per step
	values map[rowKey]map[string]*cell
	pooled map[rowKey]map[string]*stats.Moments
	order  []rowKey
}

func newGrid(window int64) *grid {
	return &grid{window: window, values: map[rowKey]map[string]*cell{}, pooled: map[rowKey]map[string]*stats.Moments{}}
}

// key returns the row of a run, scope and step (its window's first step).
func (g *grid) key(run, scope int, step int64) rowKey {
	if g.window > 0 {
		step -= step % g.window
	}
	return rowKey{run, scope, step, noGroup}
}

// row returns a row's cells, creating the row.
func (g *grid) row(k rowKey) map[string]*cell {
	m := g.values[k]
	if m == nil {
		m = map[string]*cell{}
		g.values[k] = m
		g.order = append(g.order, k)
	}
	return m
}

// add adds one value (a snapshot's or a step's) to a row's cell.
func (g *grid) add(k rowKey, ref string, v float64) {
	m := g.row(k)
	if m[ref] == nil {
		m[ref] = &cell{}
	}
	m[ref].add(v)
}

// pool merges a snapshot's moments into a row's pooled moments.
func (g *grid) pool(k rowKey, ref string, m *stats.Moments) error {
	g.row(k)
	if g.pooled[k] == nil {
		g.pooled[k] = map[string]*stats.Moments{}
	}
	if old := g.pooled[k][ref]; old != nil {
		merged, err := stats.Merge(old, m)
		if err != nil {
			return err
		}
		m = merged
	}
	g.pooled[k][ref] = m
	return nil
}

// finishPooled evaluates the pooled statistics of every row.
func (g *grid) finishPooled(ctx context.Context, plans []runPlan) error {
	for k, byRef := range g.pooled {
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, ref := range plans[k.run].refs {
			m := byRef[ref.key()]
			if m == nil {
				continue
			}
			v, err := lookupStat(ref.name).eval(&scopeData{m: m}, ref.args)
			if err != nil {
				return err
			}
			g.add(k, ref.key(), v)
		}
	}
	return nil
}

// sorted returns the rows by run, scope and time.
func (g *grid) sorted() []rowKey {
	sort.SliceStable(g.order, func(a, b int) bool {
		x, y := g.order[a], g.order[b]
		if x.run != y.run {
			return x.run < y.run
		}
		if x.scope != y.scope {
			return x.scope < y.scope
		}
		if x.group != y.group {
			return x.group < y.group
		}
		return x.t < y.t
	})
	return g.order
}

// compareKeys orders row keys by run, scope, group and time.
func compareKeys(x, y rowKey) int {
	return cmp.Or(cmp.Compare(x.run, y.run), cmp.Compare(x.scope, y.scope), cmp.Compare(x.group, y.group), cmp.Compare(x.t, y.t))
}

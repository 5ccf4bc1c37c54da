package query

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Result is a statement's answer: a table, warnings beside it (never
// instead of it), and for PLOT where to draw it.
type Result struct {
	Columns []string
	// Labels describe the columns for figures: each statistic with its
	// default arguments filled in (nvar -> nvar(128)) when every run
	// agrees on them.
	Labels []string
	// Kinds name, per column, what its values are for axis labels: the
	// first statistic or scalar of the column's expression (nvar for
	// nvar(128) / 2), or the key's name.
	// ("mean:nvar" and "stddev:nvar" for aggregates over runs,
	// "ci_lo:variance:0.95" and "ci_hi:variance:0.95" for the bounds of
	// ci(variance)).
	Kinds []string
	// Keys counts the leading key columns (config.x groups, run, layer, an
	// example attribute group, step, example_id); the value columns
	// follow.
	Keys     int
	Rows     [][]any // string, int64 or float64 (NaN: no value)
	Warnings []string
	Plot     *PlotSpec
	Stats    EvalStats
}

// PlotSpec says how to draw a PLOT statement's result.
type PlotSpec struct {
	File  string
	Scale string // "log", "linear" or "" (the figure's default)
	Query string
	// Title is the PLOT's TITLE, or a default naming what is plotted.
	Title string
}

// KeyColumns returns the indices of r's key columns: the first r.Keys,
// or, for a result built without Keys, the columns named run, layer or
// step.
func (r *Result) KeyColumns() []int {
	var out []int
	for i, c := range r.Columns {
		if (r.Keys > 0 && i < r.Keys) || (r.Keys == 0 && keys[c]) {
			out = append(out, i)
		}
	}
	return out
}

// Project returns a result with only the named value columns (keys stay:
// run, layer, step), or an error naming a column that is not there.
func (r *Result) Project(names ...string) (*Result, error) {
	idx := map[string]int{}
	for i, c := range r.Columns {
		idx[c] = i
	}
	cols := r.KeyColumns()
	keyCount := len(cols)
	for _, n := range names {
		i, ok := idx[n]
		if !ok {
			return nil, fmt.Errorf("project: no column %q (columns: %s)", n, strings.Join(r.Columns, ", "))
		}
		cols = append(cols, i)
	}
	out := &Result{Warnings: r.Warnings, Plot: r.Plot, Stats: r.Stats, Keys: keyCount}
	for _, i := range cols {
		out.Columns = append(out.Columns, r.Columns[i])
		out.Labels = append(out.Labels, at(r.Labels, i, r.Columns[i]))
		out.Kinds = append(out.Kinds, at(r.Kinds, i, r.Columns[i]))
	}
	for _, row := range r.Rows {
		nr := make([]any, len(cols))
		for j, i := range cols {
			nr[j] = row[i]
		}
		out.Rows = append(out.Rows, nr)
	}
	return out, nil
}

// Join returns the outer join of results with the same key columns (run,
// layer, step) on those keys: one row per key seen in any of them, the
// value columns of each in turn, NaN where a result has no row. The
// report uses it to draw, in one figure, statistics measured on different
// snapshots (all snapshots for SG, full snapshots for GC).
func Join(results ...*Result) (*Result, error) {
	if len(results) == 0 {
		return &Result{}, nil
	}
	keyCols := (*Result).KeyColumns
	first := keyCols(results[0])
	out := &Result{Keys: len(first)}
	for _, i := range first {
		out.Columns = append(out.Columns, results[0].Columns[i])
		out.Labels = append(out.Labels, results[0].Columns[i])
		out.Kinds = append(out.Kinds, results[0].Columns[i])
	}
	type entry struct {
		key  []any
		vals [][]any
	}
	rows := map[string]*entry{}
	var order []string
	for ri, r := range results {
		kc := keyCols(r)
		if len(kc) != len(first) {
			return nil, fmt.Errorf("join: results have different key columns")
		}
		for j, i := range kc {
			if r.Columns[i] != out.Columns[j] {
				return nil, fmt.Errorf("join: key column %q against %q", r.Columns[i], out.Columns[j])
			}
		}
		isKey := map[int]bool{}
		for _, i := range kc {
			isKey[i] = true
		}
		for i, c := range r.Columns {
			if !isKey[i] {
				out.Columns = append(out.Columns, c)
				out.Labels = append(out.Labels, at(r.Labels, i, c))
				out.Kinds = append(out.Kinds, at(r.Kinds, i, c))
			}
		}
		out.Warnings = append(out.Warnings, r.Warnings...)
		for _, row := range r.Rows {
			var k []any
			var v []any
			for i, x := range row {
				if isKey[i] {
					k = append(k, x)
				} else {
					v = append(v, x)
				}
			}
			ks := fmt.Sprint(k...)
			e := rows[ks]
			if e == nil {
				e = &entry{key: k, vals: make([][]any, len(results))}
				rows[ks] = e
				order = append(order, ks)
			}
			e.vals[ri] = v
		}
	}
	width := make([]int, len(results))
	for ri, r := range results {
		width[ri] = len(r.Columns) - len(first)
	}
	for _, ks := range order {
		e := rows[ks]
		row := append([]any(nil), e.key...)
		for ri, v := range e.vals {
			if v == nil {
				for range width[ri] {
					row = append(row, math.NaN())
				}
				continue
			}
			row = append(row, v...)
		}
		out.Rows = append(out.Rows, row)
	}
	stepCol := -1
	for i, c := range out.Columns {
		if c == "step" {
			stepCol = i
		}
	}
	sort.SliceStable(out.Rows, func(a, b int) bool {
		for i := range first {
			c := compareCells(out.Rows[a][i], out.Rows[b][i])
			if i == stepCol || c != 0 {
				return c < 0
			}
		}
		return false
	})
	return out, nil
}

// at returns ss[i], or def when ss is too short.
func at(ss []string, i int, def string) string {
	if i < len(ss) {
		return ss[i]
	}
	return def
}

// Rename renames the value columns of a result (keys stay) and returns it.
func (r *Result) Rename(names map[string]string) *Result {
	for i, c := range r.Columns {
		if n, ok := names[c]; ok && !keys[c] {
			r.Columns[i] = n
			if i < len(r.Labels) {
				r.Labels[i] = n
			}
		}
	}
	return r
}

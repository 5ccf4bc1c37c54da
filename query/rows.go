package query

import (
	"context"
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gvdb/db"
	"gvdb/query/parser"
)

// buildRows lays out the columns (keys, then items) and the rows: one per
// grid row, one per example (per-example items), or one per group of runs
// (aggregates).
func buildRows(ctx context.Context, res *Result, s *parser.Select, p *plan, runs []*db.Run, plans []runPlan, g *grid, examples []*exampleOut) error {
	// A run column whenever the query could cover several runs: a glob
	// that matches one run today still yields one.
	showRun := (p.byRun || len(runs) > 1 || len(s.Runs) > 1 || slices.ContainsFunc(s.Runs, isGlob)) && !p.aggregate
	if p.aggregate {
		res.Columns = append(res.Columns, p.configGroups...)
	}
	if showRun {
		res.Columns = append(res.Columns, "run")
	}
	if p.byLayer {
		res.Columns = append(res.Columns, "layer")
	}
	if p.exampleGroup != "" {
		res.Columns = append(res.Columns, p.exampleGroup)
	}
	res.Columns = append(res.Columns, "step")
	if p.exampleRows {
		res.Columns = append(res.Columns, "example_id")
	}
	res.Labels = append([]string(nil), res.Columns...)
	res.Kinds = append([]string(nil), res.Columns...)
	res.Keys = len(res.Columns)
	batch := runs[0].BatchSize
	for _, r := range runs {
		if r.BatchSize != batch {
			batch = 0 // runs disagree: labels keep the defaults implicit
		}
	}
	for i, it := range p.items {
		name, lbl := it.Expr.String(), label(it.Expr, batch)
		if it.Alias != nil {
			name, lbl = *it.Alias, *it.Alias
		}
		if _, ok := p.cis[i]; ok {
			// ci(stat) is two columns: stat_lo and stat_hi.
			// Named after the statistic as written (ci(variance):
			// variance_lo, variance_hi), so that they pair with its column.
			base, lbl := singleCallArg(it.Expr).String(), label(singleCallArg(it.Expr), batch)
			if it.Alias != nil {
				base, lbl = *it.Alias, *it.Alias
			}
			res.Columns = append(res.Columns, base+"_lo", base+"_hi")
			res.Labels = append(res.Labels, lbl+"_lo", lbl+"_hi")
			lvl := strconv.FormatFloat(p.cis[i].level, 'g', -1, 64)
			res.Kinds = append(res.Kinds, "ci_lo:"+p.cis[i].stat.name+":"+lvl, "ci_hi:"+p.cis[i].stat.name+":"+lvl)
			continue
		}
		res.Columns = append(res.Columns, name)
		res.Labels = append(res.Labels, lbl)
		kind := kindOf(it.Expr)
		if c, ok := singleOperand(it.Expr).(*parser.Call); ok && p.aggregate && (c.Name == "mean" || c.Name == "stddev") {
			kind = string(c.Name) + ":" + kindOf(c.Args[0])
		}
		res.Kinds = append(res.Kinds, kind)
	}
	keyCells := func(k rowKey, rp runPlan) []any {
		var row []any
		if showRun {
			row = append(row, rp.run.Name)
		}
		if p.byLayer {
			row = append(row, rp.scopes[k.scope].name)
		}
		if p.exampleGroup != "" {
			row = append(row, k.group)
		}
		return append(row, k.t)
	}
	items := func(row []any, k rowKey, rp runPlan, vals map[string]*cell, leaf func(parser.Operand) (float64, bool)) []any {
		for i, it := range p.items {
			if ci, ok := p.cis[i]; ok {
				key := ciKey(ci.stat.resolve(rp.run.BatchSize), ci.level)
				row = append(row, vals["ci_lo:"+key].mean(), vals["ci_hi:"+key].mean())
				continue
			}
			row = append(row, evalExpr(it.Expr, func(o parser.Operand) float64 {
				if leaf != nil {
					if v, ok := leaf(o); ok {
						return v
					}
				}
				return leafValue(o, k, rp, vals)
			}))
		}
		return row
	}
	switch {
	case p.exampleRows:
		slices.SortStableFunc(examples, func(a, b *exampleOut) int { return compareKeys(a.k, b.k) })
		for _, ex := range examples {
			rp := plans[ex.k.run]
			vals := g.values[ex.k]
			for j, id := range ex.ids {
				if err := ctx.Err(); err != nil {
					return err
				}
				row := append(keyCells(ex.k, rp), int64(id))
				row = items(row, ex.k, rp, vals, func(o parser.Operand) (float64, bool) { return ex.value(o, j) })
				res.Rows = append(res.Rows, row)
			}
		}
	case p.aggregate:
		return aggregateRows(ctx, res, p, plans, g)
	default:
		for _, k := range g.sorted() {
			if err := ctx.Err(); err != nil {
				return err
			}
			rp := plans[k.run]
			res.Rows = append(res.Rows, items(keyCells(k, rp), k, rp, g.values[k], nil))
		}
	}
	return nil
}

// having keeps the rows whose output columns pass the HAVING condition
// (columns by name or alias; numbers compare as numbers, text as text;
// NaN passes nothing).
func having(ctx context.Context, res *Result, c *parser.Cond) error {
	cols := map[string]int{}
	for i := len(res.Columns) - 1; i >= 0; i-- {
		cols[strings.ToLower(res.Columns[i])] = i
	}
	col := func(name string) int {
		if i, ok := cols[strings.ToLower(name)]; ok {
			return i
		}
		return -1
	}
	var err error
	c.Walk(func(p *parser.Pred) {
		if col(string(p.Field)) < 0 && err == nil {
			err = parser.Errorf(p.Pos, "HAVING %s: not an output column (columns: %s; give an expression a name with AS)", p.Field, strings.Join(res.Columns, ", "))
		}
	})
	if err != nil {
		return err
	}
	var keep [][]any
	for _, row := range res.Rows {
		if err := ctx.Err(); err != nil {
			return err
		}
		if havingRow(c, func(f string) any { return row[col(f)] }) {
			keep = append(keep, row)
		}
	}
	res.Rows = keep
	return nil
}

func havingRow(c *parser.Cond, get func(string) any) bool {
	return c.Holds(func(p *parser.Pred) bool {
		x := get(string(p.Field))
		f, isNum := cellNumber(x)
		switch {
		case p.Bare():
			return isNum && f != 0 && !math.IsNaN(f)
		case isNum && math.IsNaN(f):
			return false
		}
		return evalPred(p, func(l parser.Literal) int {
			if l.Num != nil && isNum {
				return cmpNum(f, l)
			}
			if l.Str != nil {
				return strings.Compare(fmt.Sprint(x), *l.Str)
			}
			return strings.Compare(fmt.Sprint(x), strconv.FormatFloat(*l.Num, 'g', -1, 64))
		}, func(g string) bool { ok, _ := path.Match(g, fmt.Sprint(x)); return ok })
	})
}

// cellNumber returns a result cell as a number.
func cellNumber(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	}
	return 0, false
}

// singleCallArg returns the first argument of an item that is one call.
func singleCallArg(e *parser.Expr) *parser.Expr {
	if c, ok := singleOperand(e).(*parser.Call); ok && len(c.Args) > 0 {
		return c.Args[0]
	}
	return e
}

// aggregateRows builds the rows of a query that aggregates runs: one per
// group of runs sharing their GROUP BY config.x values (all runs when there
// is none), scope, example group and time.
func aggregateRows(ctx context.Context, res *Result, p *plan, plans []runPlan, g *grid) error {
	type groupKey struct {
		config      string
		scope       int
		group, t    int64
		configCells []any
	}
	members := map[string][]rowKey{}
	var order []groupKey
	for _, k := range g.sorted() {
		var cells []any
		for _, c := range p.configGroups {
			v, ok := plans[k.run].run.ConfigValue(strings.TrimPrefix(c, "config."))
			if !ok {
				v = ""
			}
			cells = append(cells, v)
		}
		gk := groupKey{config: fmt.Sprint(cells...), scope: k.scope, group: k.group, t: k.t, configCells: cells}
		id := fmt.Sprint(gk.config, "|", gk.scope, "|", gk.group, "|", gk.t)
		if members[id] == nil {
			order = append(order, gk)
		}
		members[id] = append(members[id], k)
	}
	sort.SliceStable(order, func(a, b int) bool {
		for i := range order[a].configCells {
			if c := compareCells(order[a].configCells[i], order[b].configCells[i]); c != 0 {
				return c < 0
			}
		}
		return compareKeys(rowKey{scope: order[a].scope, group: order[a].group, t: order[a].t}, rowKey{scope: order[b].scope, group: order[b].group, t: order[b].t}) < 0
	})
	for _, gk := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		ks := members[fmt.Sprint(gk.config, "|", gk.scope, "|", gk.group, "|", gk.t)]
		row := append([]any(nil), gk.configCells...)
		if p.byLayer {
			row = append(row, plans[ks[0].run].scopes[gk.scope].name)
		}
		if p.exampleGroup != "" {
			row = append(row, gk.group)
		}
		row = append(row, gk.t)
		for _, it := range p.items {
			row = append(row, evalExpr(it.Expr, func(o parser.Operand) float64 {
				v, missing := aggregateValue(o, ks, plans, g)
				if len(missing) > 0 {
					res.Warnings = append(res.Warnings, fmt.Sprintf("%s at step %d covers %d of %d runs: no finite value in %s",
						o, gk.t, len(ks)-len(missing), len(ks), strings.Join(missing, ", ")))
				}
				return v
			}))
		}
		res.Rows = append(res.Rows, row)
	}
	return nil
}

// aggregateValue computes an aggregate over the runs of a group (their
// rows ks): mean and stddev (sample, n−1) of the finite values, count(run)
// of the runs in the group. missing names the runs whose value is NaN or
// Inf, left out of mean and stddev.
func aggregateValue(o parser.Operand, ks []rowKey, plans []runPlan, g *grid) (v float64, missing []string) {
	c, ok := o.(*parser.Call)
	if !ok {
		return math.NaN(), nil
	}
	if c.Name == "count" {
		return float64(len(ks)), nil
	}
	var vals []float64
	for _, k := range ks {
		rp, cells := plans[k.run], g.values[k]
		v := evalExpr(c.Args[0], func(o parser.Operand) float64 { return leafValue(o, k, rp, cells) })
		if math.IsNaN(v) || math.IsInf(v, 0) {
			missing = append(missing, rp.run.Name)
			continue
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return math.NaN(), missing
	}
	mean := 0.0
	for _, v := range vals {
		mean += v / float64(len(vals))
	}
	if c.Name == "mean" {
		return mean, missing
	}
	if len(vals) < 2 {
		return math.NaN(), missing
	}
	ss := 0.0
	for _, v := range vals {
		ss += (v - mean) * (v - mean)
	}
	return math.Sqrt(ss / float64(len(vals)-1)), missing
}

// kindOf returns the first statistic or scalar an expression uses ("" for
// none).
func kindOf(e *parser.Expr) string {
	kind := ""
	e.Walk(func(o parser.Operand) {
		if kind != "" {
			return
		}
		if ref, ok, _ := statRefOf(o); ok {
			kind = ref.name
		} else if n, ok := o.(*parser.Name); ok && n.Name != "step" {
			kind = string(n.Name)
		}
	})
	return kind
}

// leafValue is the value of a name or call in one row.
func leafValue(o parser.Operand, k rowKey, rp runPlan, vals map[string]*cell) float64 {
	ref, isStat, _ := statRefOf(o)
	if !isStat {
		x, ok := o.(*parser.Name)
		switch {
		case !ok:
			return math.NaN()
		case x.Name == "step":
			return float64(k.t)
		}
		if c := vals["scalar:"+string(x.Name)]; c != nil {
			return c.mean()
		}
		return math.NaN()
	}
	if c := vals[ref.resolve(rp.run.BatchSize).key()]; c != nil {
		return c.mean()
	}
	return math.NaN()
}

// orderAndLimit applies ORDER BY and LIMIT to a result's rows.
func orderAndLimit(res *Result, s *parser.Select) error {
	if len(s.Order) > 0 {
		type key struct {
			col  int
			desc bool
		}
		var ks []key
		for _, o := range s.Order {
			name := o.Expr.String()
			col := -1
			for i, c := range res.Columns {
				if strings.EqualFold(c, name) {
					col = i
				}
			}
			// An expression that has an alias sorts by the aliased column.
			for _, it := range s.Items {
				if it.Expr.String() == name && it.Alias != nil {
					for j, c := range res.Columns {
						if c == *it.Alias {
							col = j
						}
					}
				}
			}
			if col < 0 {
				return parser.Errorf(s.Pos, "ORDER BY %s: not an output column (columns: %s)", name, strings.Join(res.Columns, ", "))
			}
			ks = append(ks, key{col, o.Desc})
		}
		sort.SliceStable(res.Rows, func(a, b int) bool {
			for _, k := range ks {
				c := compareCells(res.Rows[a][k.col], res.Rows[b][k.col])
				if c != 0 {
					return (c < 0) != k.desc
				}
			}
			return false
		})
	}
	if s.Limit != nil && *s.Limit < float64(len(res.Rows)) {
		res.Rows = res.Rows[:int(*s.Limit)]
	}
	return nil
}

// compareCells orders numbers (NaN last) and strings.
func compareCells(a, b any) int {
	x, xn := cellNumber(a)
	y, yn := cellNumber(b)
	if xn && yn {
		switch {
		case math.IsNaN(x) && math.IsNaN(y):
			return 0
		case math.IsNaN(x):
			return 1
		case math.IsNaN(y):
			return -1
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

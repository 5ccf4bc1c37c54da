package query

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
	"gvdb/query/parser"
)

// exampleGroup is the examples (row indexes; nil: all) a statistic is
// computed over, and their GROUP BY attribute value (noGroup: none).
type exampleGroup struct {
	rows  []int
	value int64
}

// exampleGroups applies the WHERE clause's example conditions and the
// GROUP BY attribute to a snapshot's examples.
func (e *evaluator) exampleGroups(rp runPlan, s *db.Snapshot, attrs *codec.Attributes) ([]exampleGroup, error) {
	if len(e.p.exampleConds) == 0 && e.p.exampleGroup == "" {
		return []exampleGroup{{value: noGroup}}, nil
	}
	if attrs == nil {
		return nil, &parser.Error{Pos: e.p.sel.Pos, Msg: fmt.Sprintf("run %q step %d has no example attributes to filter or group by (written before gvdb 0.2, or by an importer that records none)", rp.run.Name, s.Step)}
	}
	names := func() string {
		var out []string
		for _, c := range attrs.Columns {
			out = append(out, c.Name)
		}
		return strings.Join(out, ", ")
	}
	var err error
	get := func(field string, i int) float64 {
		c := attrs.Column(field)
		if c == nil {
			if err == nil {
				msg := fmt.Sprintf("run %q has no example attribute %q (attributes: %s)", rp.run.Name, field, names())
				if n := db.Nearest(field, strings.Split(names(), ", ")); n != "" {
					msg += fmt.Sprintf("; did you mean %q?", n)
				}
				pos, ok := e.p.attrPos[field]
				if !ok {
					pos = e.p.sel.Pos
				}
				err = &parser.Error{Pos: pos, Msg: msg}
			}
			return math.NaN()
		}
		return c.Value(i)
	}
	var rows []int
	for i := range s.N {
		if i%4096 == 0 && e.ctx.Err() != nil {
			return nil, e.ctx.Err()
		}
		keep := true
		for _, c := range e.p.exampleConds {
			keep = keep && evalExampleCond(c, func(f string) float64 { return get(f, i) })
		}
		if keep {
			rows = append(rows, i)
		}
	}
	if err != nil {
		return nil, err
	}
	if e.p.exampleGroup == "" {
		return []exampleGroup{{rows: rows, value: noGroup}}, nil
	}
	col := attrs.Column(e.p.exampleGroup)
	if col == nil {
		get(e.p.exampleGroup, 0)
		return nil, err
	}
	if col.Type == codec.Float {
		return nil, &parser.Error{Pos: e.p.groupPos, Msg: fmt.Sprintf("GROUP BY %s: a real-valued attribute has no groups (group by an integer or boolean attribute)", col.Name)}
	}
	by := map[int64][]int{}
	for _, i := range rows {
		v := int64(col.Value(i))
		by[v] = append(by[v], i)
	}
	var out []exampleGroup
	for v, rs := range by {
		out = append(out, exampleGroup{rows: rs, value: v})
	}
	slices.SortFunc(out, func(a, b exampleGroup) int { return cmp.Compare(a.value, b.value) })
	return out, nil
}

// splitKeys returns the keys that decide Gradient Clustering's held-out
// halves for the examples rows: a copy's source id (duplicate_of), so
// that copies stay together, else the example's id.
func splitKeys(attrs *codec.Attributes, rows []int, ids []uint64) []uint64 {
	dup := attrs.Column("duplicate_of")
	if dup == nil || dup.Type != codec.Int || ids == nil {
		return nil
	}
	if rows == nil {
		rows = make([]int, len(ids))
		for i := range rows {
			rows[i] = i
		}
	}
	out := make([]uint64, len(rows))
	for r, i := range rows {
		out[r] = ids[i]
		if d := dup.Ints[i]; d >= 0 {
			out[r] = uint64(d)
		}
	}
	return out
}

// evalExampleCond evaluates an example condition for one example; get
// returns an attribute's value.
func evalExampleCond(c *parser.Cond, get func(string) float64) bool {
	return c.Holds(func(p *parser.Pred) bool {
		x := get(string(p.Field))
		if p.Bare() {
			return x != 0
		}
		return evalPred(p, func(l parser.Literal) int { return cmpNum(x, l) }, nil)
	})
}

// exampleValues returns the per-example values a query names for the
// examples of one snapshot scope: ids, grad_norm = |g_i|, cos_to_mean =
// g_i·μ / (|g_i| |μ|), attributes, and cluster(K), the example's cluster
// in the K-partition fitted on these examples (in-sample: a label, not an
// estimate).
func (e *evaluator) exampleValues(layers []stats.Layer, m *stats.Moments, in scopeInput, x *scopeData, run string, step int64) (*exampleOut, error) {
	n := m.N
	ex := &exampleOut{ids: layers[0].Block.IDs, cols: map[string][]float64{}}
	norm := m.Norm()
	gn, cos := make([]float64, n), make([]float64, n)
	for i := range n {
		gn[i] = math.Sqrt(m.SqNorms[i])
		if m.Inner != nil {
			cos[i] = m.Inner[i] / (gn[i] * norm)
		}
	}
	ex.cols["grad_norm"], ex.cols["cos_to_mean"] = gn, cos
	if in.attrs != nil {
		for _, c := range in.attrs.Columns {
			v := make([]float64, n)
			for j := range n {
				row := j
				if in.rows != nil {
					row = in.rows[j]
				}
				v[j] = c.Value(row)
			}
			ex.cols[c.Name] = v
		}
	}
	for _, k := range e.p.clusterKs {
		if err := checkK(e.p.clusterAt[k], "cluster", k, n, fmt.Sprintf("the examples of run %s at step %d", run, step)); err != nil {
			return nil, err
		}
		v := make([]float64, n)
		if m.NonFinite {
			for j := range v {
				v[j] = math.NaN()
			}
		} else {
			p, err := x.gc().fit(int(k), stats.MethodExact, false)
			if err != nil {
				return nil, err
			}
			for j, a := range p.Assign {
				v[j] = float64(a)
			}
		}
		ex.cols[fmt.Sprintf("cluster(%g)", k)] = v
	}
	return ex, nil
}

// exampleOut is one snapshot scope's per-example values, for per-example
// rows.
type exampleOut struct {
	k    rowKey
	ids  []uint64
	cols map[string][]float64
}

// value returns a per-example operand's value for example j.
func (ex *exampleOut) value(o parser.Operand, j int) (float64, bool) {
	switch x := o.(type) {
	case *parser.Name:
		if v, ok := ex.cols[string(x.Name)]; ok {
			return v[j], true
		}
		if exampleNames[string(x.Name)] {
			return math.NaN(), true // an attribute this run does not record
		}
	case *parser.Call:
		if x.Name == "cluster" {
			k, _ := constant(x.Args[0])
			if v, ok := ex.cols[fmt.Sprintf("cluster(%g)", k)]; ok {
				return v[j], true
			}
			return math.NaN(), true
		}
	}
	return 0, false
}

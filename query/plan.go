package query

import (
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/alecthomas/participle/v2/lexer"

	"gvdb/db"
	"gvdb/query/parser"
)

// plan is a checked SELECT: what to read and how rows are keyed.
type plan struct {
	sel      *parser.Select
	stats    []statRef // distinct, as written
	scalars  []string  // distinct step-scalar names
	scalarAt map[string]lexer.Position
	window   int64 // 0: per step
	byRun    bool
	byLayer  bool
	stepPred func(int64) bool
	stepLo   int64
	stepHi   int64
	layerOK  func(string) bool
	layerLit []literalRef // layer names written literally (checked to exist)
	runOK    func(string) bool
	popOK    func(db.Population) bool
	items    []*parser.Item // items that are not bare keys, in order

	// configOK filters runs by their configuration (WHERE config.lr = 0.1).
	configOK func(*db.Run) bool
	// configUsed are the config.x keys named (WHERE, GROUP BY), where.
	configUsed map[string]lexer.Position
	// configGroups are GROUP BY config.x keys: rows aggregate runs.
	configGroups []string
	// exampleConds filter each snapshot's examples by their attributes
	// (WHERE label = 3 AND NOT corrupted); exampleGroup splits them by
	// one attribute (GROUP BY label).
	exampleConds []*parser.Cond
	exampleGroup string
	groupPos     lexer.Position
	// attrPos is where the query names each example attribute.
	attrPos map[string]lexer.Position

	// exampleRows: some item is a per-example quantity (example_id,
	// grad_norm, cos_to_mean, cluster(K), an attribute): one row per
	// example; perExample names them and clusterKs lists the K of
	// cluster(K).
	exampleRows bool
	perExample  map[string]bool
	clusterKs   []float64
	clusterAt   map[float64]lexer.Position // where cluster(K) is written
	// aggregate: items aggregate runs (mean, stddev, count).
	aggregate bool
	// cis are the statistics of ci(stat[, level]) items, by item index.
	cis map[int]ciRef
}

// ciRef is a ci(stat, level) item: a bootstrap confidence interval over a
// snapshot's examples.
type ciRef struct {
	stat  statRef
	level float64
}

// exampleNames are the per-example quantities an item may name: the
// example's id, |g_i| (grad_norm), the cosine between g_i and the mean
// gradient (cos_to_mean), and the attributes gvdb's trainer records
// (stratified samples: stratum, stratum_size, inclusion).
var exampleNames = map[string]bool{"example_id": true, "grad_norm": true, "cos_to_mean": true,
	"label": true, "true_label": true, "example_loss": true, "corrupted": true, "duplicate_of": true,
	"stratum": true, "stratum_size": true, "inclusion": true}

// aggregates are the functions that aggregate a group of runs.
var aggregates = map[string]bool{"mean": true, "stddev": true, "count": true}

// keyFields are the names WHERE tests on snapshots and scopes; config.x
// tests a run's configuration; any other name is an example attribute.
var keyFields = map[string]bool{"step": true, "layer": true, "run": true, "population": true}

func isConfig(f string) bool { return strings.HasPrefix(f, "config.") }

// isAttribute reports whether a WHERE or GROUP BY name is an example
// attribute.
func isAttribute(f string) bool { return !keyFields[f] && !isConfig(f) }

type literalRef struct {
	name string
	pos  lexer.Position
}

// planSelect checks a SELECT and works out what it needs.
func planSelect(s *parser.Select) (*plan, error) {
	p := &plan{sel: s, stepLo: 0, stepHi: math.MaxInt64, scalarAt: map[string]lexer.Position{}, attrPos: map[string]lexer.Position{}}
	seen := map[string]bool{}
	for _, g := range s.Group {
		switch {
		case g.Window != nil:
			if w := *g.Window; w < 1 || w != math.Trunc(w) || w > math.MaxInt64/2 {
				return nil, parser.Errorf(g.Pos, "window size must be a whole number of steps from 1 to %d, got %g", int64(math.MaxInt64/2), w)
			}
			if p.window != 0 {
				return nil, parser.Errorf(g.Pos, "GROUP BY has two windows")
			}
			p.window = int64(*g.Window)
		case g.Key == "RUN":
			p.byRun = true
		case g.Key == "LAYER":
			p.byLayer = true
		case isConfig(string(g.Attr)):
			p.configGroups = append(p.configGroups, string(g.Attr))
			p.useConfig(strings.TrimPrefix(string(g.Attr), "config."), g.Pos)
		case g.Attr != "" && keyFields[string(g.Attr)]:
			return nil, parser.Errorf(g.Pos, "GROUP BY %s: %s is not a key to group by (keys: window(n), step, run, layer, config.x, or an example attribute)", g.Attr, g.Attr)
		case g.Attr != "":
			if p.exampleGroup != "" {
				return nil, parser.Errorf(g.Pos, "GROUP BY has two example attributes (%s and %s); group by one", p.exampleGroup, g.Attr)
			}
			p.exampleGroup, p.groupPos = string(g.Attr), g.Pos
			p.attrPos[string(g.Attr)] = g.Pos
		}
	}
	p.perExample, p.cis = map[string]bool{}, map[int]ciRef{}
	for _, it := range s.Items {
		if n := bareName(it.Expr); n != "" && (keys[n] || n == "example_id") && it.Alias == nil {
			if n == "run" {
				p.byRun = true
			}
			if n == "layer" {
				p.byLayer = true
			}
			if n == "example_id" {
				p.exampleRows = true
			}
			continue
		}
		if c, ok := singleOperand(it.Expr).(*parser.Call); ok && c.Name == "ci" {
			ci, err := p.ciItem(c, seen)
			if err != nil {
				return nil, err
			}
			p.cis[len(p.items)] = ci
			p.items = append(p.items, it)
			continue
		}
		p.items = append(p.items, it)
		if err := p.collect(it.Expr, seen); err != nil {
			return nil, err
		}
	}
	if err := p.checkModes(s); err != nil {
		return nil, err
	}
	if len(p.items) == 0 {
		return nil, parser.Errorf(s.Pos, "SELECT lists only keys; add a statistic (variance, nvar, gns, ...) or a scalar (loss, accuracy, ...)")
	}
	if s.Limit != nil {
		if l := *s.Limit; l < 0 || l != math.Trunc(l) {
			return nil, parser.Errorf(s.Pos, "LIMIT must be a whole number >= 0, got %g", l)
		}
	}
	// Output column names must be unique (JSON objects key rows by them).
	names := map[string]bool{"step": true, "run": true, "layer": true}
	for _, it := range p.items {
		name := it.Expr.String()
		if it.Alias != nil {
			name = *it.Alias
		}
		if names[name] {
			return nil, parser.Errorf(it.Pos, "duplicate column name %q (rename it with AS)", name)
		}
		names[name] = true
	}
	if s.Where != nil {
		if err := computedInWhere(s); err != nil {
			return nil, err
		}
		if err := p.where(s.Where); err != nil {
			return nil, err
		}
	}
	if p.layerOK == nil {
		p.layerOK = func(string) bool { return true }
	}
	if p.runOK == nil {
		p.runOK = func(string) bool { return true }
	}
	if p.stepPred == nil {
		p.stepPred = func(int64) bool { return true }
	}
	if p.popOK == nil {
		p.popOK = func(db.Population) bool { return true }
	}
	return p, nil
}

// bareName returns the name an expression consists of, or "".
func bareName(e *parser.Expr) string {
	if n, ok := singleOperand(e).(*parser.Name); ok {
		return string(n.Name)
	}
	return ""
}

// collect records the statistics, scalars and per-example quantities an
// expression uses.
func (p *plan) collect(e *parser.Expr, seen map[string]bool) error {
	var err error
	e.Walk(func(o parser.Operand) {
		if err != nil {
			return
		}
		if c, ok := o.(*parser.Call); ok && (aggregates[string(c.Name)] || c.Name == "cluster" || c.Name == "ci") {
			err = p.special(c, seen)
			return
		}
		if str, ok := o.(*parser.Str); ok {
			err = parser.Errorf(str.Pos, "a string is only an argument of a Gradient Clustering statistic (gc_variance(128, 128, 'paper')); got %s here", str)
			return
		}
		if n, ok := o.(*parser.Name); ok && exampleNames[string(n.Name)] {
			p.exampleRows = true
			p.perExample[string(n.Name)] = true
			return
		}
		ref, isStat, rerr := statRefOf(o)
		switch {
		case rerr != nil:
			err = rerr
		case isStat:
			p.addStat(ref, seen)
		default:
			if x, ok := o.(*parser.Name); ok {
				err = p.addScalar(x, seen)
			}
		}
	})
	return err
}

// special plans the calls that are not statistics: cluster(K), the
// aggregates mean(x), stddev(x) and count(run), and a misplaced ci().
func (p *plan) special(c *parser.Call, seen map[string]bool) error {
	switch n := string(c.Name); n {
	case "cluster":
		if len(c.Args) != 1 {
			return parser.Errorf(c.Pos, "cluster takes the number of clusters: cluster(16)")
		}
		k, err := constant(c.Args[0])
		if err != nil {
			return err
		}
		if err := checkK(c.Pos, "cluster", k, maxArg, "the most any snapshot could hold"); err != nil {
			return err
		}
		p.exampleRows = true
		if !slices.Contains(p.clusterKs, k) {
			p.clusterKs = append(p.clusterKs, k)
			if p.clusterAt == nil {
				p.clusterAt = map[float64]lexer.Position{}
			}
			p.clusterAt[k] = c.Pos
		}
		return nil
	case "count":
		if len(c.Args) != 1 || bareName(c.Args[0]) != "run" {
			return parser.Errorf(c.Pos, "count counts the runs of a group: count(run)")
		}
		p.aggregate = true
		return nil
	case "mean", "stddev":
		if len(c.Args) != 1 {
			return parser.Errorf(c.Pos, "%s takes one expression: %s(nvar)", n, n)
		}
		inner := false
		c.Args[0].Walk(func(o parser.Operand) {
			if x, ok := o.(*parser.Call); ok && aggregates[string(x.Name)] {
				inner = true
			}
		})
		if inner {
			return parser.Errorf(c.Pos, "%s of an aggregate: aggregates do not nest", n)
		}
		p.aggregate = true
		return p.collect(c.Args[0], seen)
	}
	return parser.Errorf(c.Pos, "ci gives two columns (low, high): make ci(stat) a whole item, not part of an expression")
}

// ciItem plans a ci(stat[, level]) item.
func (p *plan) ciItem(c *parser.Call, seen map[string]bool) (ciRef, error) {
	if len(c.Args) < 1 || len(c.Args) > 2 {
		return ciRef{}, parser.Errorf(c.Pos, "ci takes a statistic and a confidence level: ci(variance(128), 0.95)")
	}
	ref, isStat, err := statRefOf(singleOperand(c.Args[0]))
	if err != nil {
		return ciRef{}, err
	}
	if !isStat || ref.pooled {
		return ciRef{}, parser.Errorf(c.Pos, "ci takes a statistic: ci(variance(128), 0.95)")
	}
	if def := lookupStat(ref.name); !bootstrappable(def) {
		return ciRef{}, parser.Errorf(c.Pos, "ci(%s) is not offered: a bootstrap of %s would recompute it over every coordinate (or every partition) per resample; ci covers %s",
			ref.name, ref.name, strings.Join(bootstrapNames(), ", "))
	}
	level := 0.95
	if len(c.Args) == 2 {
		if level, err = constant(c.Args[1]); err != nil {
			return ciRef{}, err
		}
		if !(level > 0 && level < 1) {
			return ciRef{}, parser.Errorf(c.Pos, "ci: the confidence level must be in (0, 1), got %g", level)
		}
	}
	p.addStat(ref, seen)
	return ciRef{stat: ref, level: level}, nil
}

// bootstrappable reports whether ci() covers a statistic: one computed
// from the moments without per-coordinate sums (a weighted resample then
// costs N² through the Gram matrix).
func bootstrappable(d *statDef) bool {
	return !d.need.coords && !d.need.gc && !d.need.anchor && !d.need.mean && d.name != "examples" && d.name != "params"
}

func bootstrapNames() []string {
	var out []string
	for _, d := range statistics {
		if bootstrappable(d) {
			out = append(out, d.name)
		}
	}
	return out
}

// checkModes checks that the per-example, aggregate and window forms of a
// SELECT go together.
func (p *plan) checkModes(s *parser.Select) error {
	switch {
	case p.exampleRows && p.aggregate:
		return parser.Errorf(s.Pos, "per-example items (example_id, grad_norm, ...) and aggregates over runs do not mix")
	case p.exampleRows && p.window != 0:
		return parser.Errorf(s.Pos, "per-example rows are per snapshot: drop GROUP BY window(n)")
	case p.exampleRows && len(p.cis) > 0:
		return parser.Errorf(s.Pos, "ci() is per snapshot; per-example rows take plain statistics")
	case len(p.configGroups) > 0 && !p.aggregate:
		return parser.Errorf(s.Pos, "GROUP BY config.x groups runs: aggregate them (mean(nvar), stddev(nvar), count(run))")
	case p.aggregate:
		for _, it := range p.items {
			if !aggregated(it.Expr) {
				return parser.Errorf(it.Pos, "%s is not aggregated: rows of a GROUP BY config.x (or of aggregates) take mean(...), stddev(...) or count(run)", it.Expr)
			}
		}
		if p.byRun {
			return parser.Errorf(s.Pos, "aggregates combine runs: drop run from SELECT and GROUP BY")
		}
	}
	return nil
}

// aggregated reports whether every statistic, scalar and step of an
// expression is inside an aggregate (numbers need not be).
func aggregated(e *parser.Expr) bool {
	ok := true
	e.Walk(func(o parser.Operand) {
		switch x := o.(type) {
		case *parser.Call:
			ok = ok && aggregates[string(x.Name)]
		case *parser.Name:
			ok = false
		}
	})
	return ok
}

// addScalar records a name that is not a statistic: step, or a scalar.
func (p *plan) addScalar(x *parser.Name, seen map[string]bool) error {
	n := string(x.Name)
	switch {
	case n == "step":
		return nil
	case keys[n]:
		return parser.Errorf(x.Pos, "%s is a text key: select it on its own, not inside an expression", n)
	case n == "pooled":
		return parser.Errorf(x.Pos, "pooled takes a statistic: pooled(variance(128))")
	}
	if !seen["scalar:"+n] {
		seen["scalar:"+n] = true
		p.scalars = append(p.scalars, n)
		p.scalarAt[n] = x.Pos
	}
	return nil
}

func (p *plan) addStat(r statRef, seen map[string]bool) {
	k := r.key()
	if !seen[k] {
		seen[k] = true
		p.stats = append(p.stats, r)
	}
}

func unknownStat(pos lexer.Position, name string) error {
	msg := fmt.Sprintf("unknown statistic %q", strings.ToLower(name))
	if s := db.Nearest(strings.ToLower(name), statNames()); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return parser.Errorf(pos, "%s (statistics: %s)", msg, strings.Join(statNames(), ", "))
}

// constant evaluates an argument expression that must not depend on data.
func constant(e *parser.Expr) (float64, error) {
	var bad error
	v := evalExpr(e, func(o parser.Operand) float64 {
		if bad == nil {
			bad = parser.Errorf(posOf(o), "statistic arguments must be numbers, got %s", o)
		}
		return math.NaN()
	})
	return v, bad
}

func posOf(o parser.Operand) lexer.Position {
	switch x := o.(type) {
	case *parser.Name:
		return x.Pos
	case *parser.Call:
		return x.Pos
	}
	return lexer.Position{}
}

// where splits the WHERE clause into step, layer and run predicates. Its
// top level must be a conjunction whose parts each test one key.
func (p *plan) where(c *parser.Cond) error {
	if len(c.Or) != 1 {
		field, err := condField(c)
		if err != nil {
			return err
		}
		return p.addPred(field, c)
	}
	for _, n := range c.Or[0].And {
		single := &parser.Cond{Or: []*parser.AndCond{{And: []*parser.NotCond{n}}}}
		if !n.Not && n.Pred.Paren != nil {
			if err := p.where(n.Pred.Paren); err != nil {
				return err
			}
			continue
		}
		field, err := condField(single)
		if err != nil {
			return err
		}
		if err := p.addPred(field, single); err != nil {
			return err
		}
		// A plain comparison on step also narrows the range scan (the
		// predicate itself still decides, so bounds may be loose).
		if pr := n.Pred; field == "step" && !n.Not && pr.Value != nil && pr.Value.Num != nil {
			v := *pr.Value.Num
			switch pr.Op {
			case ">=":
				p.stepLo = max(p.stepLo, stepBound(math.Ceil(v)))
			case ">":
				p.stepLo = max(p.stepLo, next(stepBound(math.Floor(v))))
			case "<":
				p.stepHi = min(p.stepHi, stepBound(math.Ceil(v)))
			case "<=":
				p.stepHi = min(p.stepHi, next(stepBound(math.Floor(v))))
			case "=":
				p.stepLo, p.stepHi = max(p.stepLo, stepBound(math.Floor(v))), min(p.stepHi, next(stepBound(math.Ceil(v))))
			}
		}
		if pr := n.Pred; field == "step" && !n.Not && pr.Lo != nil && pr.Lo.Num != nil && pr.Hi.Num != nil {
			p.stepLo = max(p.stepLo, stepBound(math.Ceil(*pr.Lo.Num)))
			p.stepHi = min(p.stepHi, next(stepBound(math.Floor(*pr.Hi.Num))))
		}
	}
	return nil
}

// stepBound converts a step bound to an int64, saturating at the ends of
// the range (1e19 is "no upper bound", not an overflow).
func stepBound(v float64) int64 {
	switch {
	case math.IsNaN(v):
		return 0
	case v >= math.MaxInt64:
		return math.MaxInt64
	case v <= math.MinInt64:
		return math.MinInt64
	}
	return int64(v)
}

// next returns s+1, saturating.
func next(s int64) int64 {
	if s == math.MaxInt64 {
		return s
	}
	return s + 1
}

// cmpConfig compares a run's configuration value with a literal: as
// numbers when both are, else as text.
func cmpConfig(v any, l parser.Literal) int {
	if x, ok := v.(float64); ok && l.Num != nil {
		return cmpNum(x, l)
	}
	want := ""
	if l.Str != nil {
		want = *l.Str
	} else {
		want = strconv.FormatFloat(*l.Num, 'g', -1, 64)
	}
	return strings.Compare(fmt.Sprint(v), want)
}

// useConfig records that the query names config.key at pos.
func (p *plan) useConfig(key string, pos lexer.Position) {
	if p.configUsed == nil {
		p.configUsed = map[string]lexer.Position{}
	}
	if _, ok := p.configUsed[key]; !ok {
		p.configUsed[key] = pos
	}
}

// firstPos is the position of a condition's first predicate.
func firstPos(c *parser.Cond) lexer.Position {
	for c != nil && len(c.Or) > 0 && len(c.Or[0].And) > 0 {
		pr := c.Or[0].And[0].Pred
		if pr.Paren == nil {
			return pr.Pos
		}
		c = pr.Paren
	}
	return lexer.Position{}
}

// checkConfigKeys refuses a config.x that neither every run has
// (ConfigKeys) nor any of runs records as a parameter.
func checkConfigKeys(p *plan, runs []*db.Run) error {
	for key, pos := range p.configUsed {
		if _, alias := db.ConfigAliases[key]; alias || slices.Contains(db.ConfigKeys, key) {
			continue
		}
		known := append([]string(nil), db.ConfigKeys...)
		found := false
		for _, r := range runs {
			if _, ok := r.Params[key]; ok {
				found = true
			}
			for k := range r.Params {
				if !slices.Contains(known, k) {
					known = append(known, k)
				}
			}
		}
		if found {
			continue
		}
		slices.Sort(known)
		msg := fmt.Sprintf("no run has a config.%s (config keys: %s)", key, strings.Join(known, ", "))
		if n := db.Nearest(key, known); n != "" {
			msg += fmt.Sprintf("; did you mean config.%s?", n)
		}
		return &parser.Error{Pos: pos, Msg: msg}
	}
	return nil
}

// computedInWhere refuses a WHERE condition on a statistic or on an
// item's output name, pointing to HAVING.
func computedInWhere(s *parser.Select) error {
	outputs := map[string]bool{}
	for _, it := range s.Items {
		if _, bare := singleOperand(it.Expr).(*parser.Name); !bare {
			// A bare name may be an example attribute, which WHERE takes.
			outputs[strings.ToLower(it.Expr.String())] = true
		}
		if it.Alias != nil {
			outputs[strings.ToLower(*it.Alias)] = true
		}
	}
	var err error
	s.Where.Walk(func(p *parser.Pred) {
		f := strings.ToLower(string(p.Field))
		if err == nil && !keyFields[f] && (lookupStat(f) != nil || outputs[f]) {
			err = parser.Errorf(p.Pos, "WHERE %s: %s is computed, and WHERE chooses the data before anything is computed; filter the computed rows with HAVING (SELECT ... HAVING %s ...)", p.Field, p.Field, p.Field)
		}
	})
	return err
}

// condField returns the one key a condition tests ("example" for example
// attributes, which may be mixed).
func condField(c *parser.Cond) (string, error) {
	field := ""
	var pos lexer.Position
	var err error
	c.Walk(func(p *parser.Pred) {
		f := strings.ToLower(string(p.Field))
		if isAttribute(f) {
			f = "example"
		}
		if err != nil {
			return
		}
		if field != "" && f != field {
			err = parser.Errorf(p.Pos, "this condition mixes %s (at %d:%d) and %s: join conditions on different keys with AND at the top level", field, pos.Line, pos.Column, f)
			return
		}
		field, pos = f, p.Pos
	})
	return field, err
}

func (p *plan) addPred(field string, c *parser.Cond) error {
	if err := checkTypes(c, field); err != nil {
		return err
	}
	switch {
	case field == "example":
		p.exampleConds = append(p.exampleConds, c)
		c.Walk(func(pr *parser.Pred) {
			if _, ok := p.attrPos[string(pr.Field)]; !ok {
				p.attrPos[string(pr.Field)] = pr.Pos
			}
		})
		return nil
	case isConfig(field):
		prev := p.configOK
		key := strings.TrimPrefix(field, "config.")
		p.useConfig(key, firstPos(c))
		p.configOK = func(r *db.Run) bool {
			v, ok := r.ConfigValue(key)
			return (prev == nil || prev(r)) && ok && evalCond(c, func(l parser.Literal) int { return cmpConfig(v, l) }, func(g string) bool {
				ok, _ := path.Match(g, fmt.Sprint(v))
				return ok
			})
		}
		return nil
	}
	switch field {
	case "step":
		prev := p.stepPred
		p.stepPred = func(s int64) bool {
			return (prev == nil || prev(s)) && evalCond(c, func(l parser.Literal) int { return cmpNum(float64(s), l) }, nil)
		}
	case "population":
		var err error
		collectLiterals(c, func(name string, pos lexer.Position) {
			if _, perr := db.ParsePopulation(name); perr != nil && err == nil {
				err = parser.Errorf(pos, "%v", perr)
			}
		})
		if err != nil {
			return err
		}
		prev := p.popOK
		p.popOK = func(pop db.Population) bool {
			return (prev == nil || prev(pop)) && evalCond(c, func(l parser.Literal) int { return strings.Compare(pop.String(), *l.Str) }, func(g string) bool {
				ok, _ := path.Match(g, pop.String())
				return ok
			})
		}
	case "layer", "run":
		collectLiterals(c, func(name string, pos lexer.Position) {
			if field == "layer" {
				p.layerLit = append(p.layerLit, literalRef{name, pos})
			}
		})
		prev := p.layerOK
		if field == "run" {
			prev = p.runOK
		}
		f := func(name string) bool {
			return (prev == nil || prev(name)) && evalCond(c, func(l parser.Literal) int { return strings.Compare(name, *l.Str) }, func(g string) bool {
				ok, _ := path.Match(g, name)
				return ok
			})
		}
		if field == "layer" {
			p.layerOK = f
		} else {
			p.runOK = f
		}
	}
	return nil
}

func checkTypes(c *parser.Cond, field string) error {
	var err error
	check := func(l *parser.Literal, pos lexer.Position) {
		if l == nil || err != nil {
			return
		}
		switch {
		case isConfig(field):
		case (field == "step" || field == "example") && l.Num == nil:
			err = parser.Errorf(pos, "%s is compared with a number, got %s", map[bool]string{true: "an example attribute", false: field}[field == "example"], l)
		case field != "step" && field != "example" && l.Str == nil:
			err = parser.Errorf(pos, "%s is compared with a quoted name, got %s", field, l)
		}
	}
	c.Walk(func(pr *parser.Pred) {
		if pr.Bare() && field != "example" {
			err = parser.Errorf(pr.Pos, "%s needs a comparison (WHERE %s = ...)", pr.Field, pr.Field)
		}
		check(pr.Value, pr.Pos)
		check(pr.Lo, pr.Pos)
		check(pr.Hi, pr.Pos)
		for i := range pr.In {
			check(&pr.In[i], pr.Pos)
		}
		if field == "example" || isConfig(field) {
			// (a GLOB has no literal: the checks above found nothing)
			if pr.Glob != nil && field == "example" {
				err = parser.Errorf(pr.Pos, "GLOB matches names; %s is a number", pr.Field)
			}
			return
		}
		if pr.Glob != nil && field == "step" {
			err = parser.Errorf(pr.Pos, "GLOB matches names (layer, run), not steps")
		}
		if pr.Glob != nil && field != "step" {
			if _, gerr := path.Match(*pr.Glob, ""); gerr != nil {
				err = parser.Errorf(pr.Pos, "bad pattern %q in GLOB: %v", *pr.Glob, gerr)
			}
		}
		if field != "step" && pr.Value != nil && pr.Op != "=" && pr.Op != "!=" && pr.Op != "<>" {
			err = parser.Errorf(pr.Pos, "%s supports =, !=, IN and GLOB, not %s", field, pr.Op)
		}
		if field != "step" && pr.Lo != nil {
			err = parser.Errorf(pr.Pos, "BETWEEN compares steps, not %ss", field)
		}
	})
	return err
}

func collectLiterals(c *parser.Cond, fn func(string, lexer.Position)) {
	c.Walk(func(pr *parser.Pred) {
		if pr.Value != nil && pr.Value.Str != nil && pr.Op == "=" {
			fn(*pr.Value.Str, pr.Pos)
		}
		for _, l := range pr.In {
			if l.Str != nil {
				fn(*l.Str, pr.Pos)
			}
		}
	})
}

func cmpNum(x float64, l parser.Literal) int {
	switch {
	case x < *l.Num:
		return -1
	case x > *l.Num:
		return 1
	}
	return 0
}

type scope struct {
	name   string // layer name, or "" for all layers in scope
	layers []string
}

type runPlan struct {
	run    *db.Run
	scopes []scope
	refs   []statRef // resolved per run, parallel to plan.stats
}

// isGlob reports whether a FROM name is a pattern.
func isGlob(pat string) bool { return strings.ContainsAny(pat, "*?[") }

// resolveRuns expands FROM (names and globs) and the WHERE run filter.
func resolveRuns(d *db.DB, s *parser.Select, p *plan) ([]*db.Run, error) {
	names, err := d.RunNames()
	if err != nil {
		return nil, err
	}
	var out, named []*db.Run
	seen := map[string]bool{}
	for _, pat := range s.Runs {
		var matched []string
		if isGlob(pat) {
			if _, err := path.Match(pat, ""); err != nil {
				return nil, parser.Errorf(s.Pos, "bad run pattern %q: %v", pat, err)
			}
			for _, n := range names {
				if ok, _ := path.Match(pat, n); ok {
					matched = append(matched, n)
				}
			}
			if len(matched) == 0 {
				return nil, parser.Errorf(s.Pos, "no run matches %q (runs: %s)", pat, strings.Join(names, ", "))
			}
		} else {
			matched = []string{pat}
		}
		for _, n := range matched {
			if seen[n] || !p.runOK(n) {
				continue
			}
			seen[n] = true
			r, err := d.Run(n)
			if err != nil {
				return nil, &parser.Error{Pos: s.Pos, Msg: err.Error(), Err: err}
			}
			named = append(named, r)
		}
	}
	if err := checkConfigKeys(p, named); err != nil {
		return nil, err
	}
	for _, r := range named {
		if p.configOK == nil || p.configOK(r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, parser.Errorf(s.Pos, "the WHERE clause leaves no run")
	}
	return out, nil
}

// planRun resolves the layer scopes and statistic defaults for one run.
func planRun(r *db.Run, p *plan) (runPlan, error) {
	rp := runPlan{run: r}
	for _, lit := range p.layerLit {
		if _, err := r.Layer(lit.name); err != nil {
			return rp, &parser.Error{Pos: lit.pos, Msg: err.Error(), Err: err}
		}
	}
	var layers []string
	for _, l := range r.Layers {
		if p.layerOK(l.Name) {
			layers = append(layers, l.Name)
		}
	}
	if len(layers) == 0 {
		return rp, parser.Errorf(p.sel.Pos, "no layer of run %q passes the WHERE clause (layers: %s)", r.Name, strings.Join(r.LayerNames(), ", "))
	}
	if p.byLayer {
		for _, l := range layers {
			rp.scopes = append(rp.scopes, scope{name: l, layers: []string{l}})
		}
	} else {
		rp.scopes = []scope{{layers: layers}}
	}
	batch := r.BatchSize
	if batch <= 0 {
		batch = 1
	}
	for _, s := range p.stats {
		rp.refs = append(rp.refs, s.resolve(batch))
	}
	return rp, nil
}

// checkScalar returns an error naming the nearest scalar or statistic if
// run never recorded the scalar name.
func checkScalar(d *db.DB, r *db.Run, name string, pos lexer.Position) error {
	run := r.Name
	all := map[string]bool{}
	err := d.Scalars(r, db.AllSteps, func(r db.ScalarRow) error {
		for k := range r.Values {
			all[k] = true
		}
		return nil
	})
	if err != nil || all[name] {
		return err
	}
	names := make([]string, 0, len(all))
	for k := range all {
		names = append(names, k)
	}
	sort.Strings(names)
	msg := fmt.Sprintf("unknown statistic or scalar %q in run %q", name, run)
	if s := db.Nearest(name, append(append([]string(nil), names...), statNames()...)); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	if len(names) > 0 {
		msg += " (scalars: " + strings.Join(names, ", ") + ")"
	} else {
		msg += " (the run has no scalars)"
	}
	return &parser.Error{Pos: pos, Msg: msg}
}

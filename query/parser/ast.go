package parser

import (
	"strconv"
	"strings"

	"github.com/alecthomas/participle/v2/lexer"
)

// Script is a sequence of statements separated by semicolons.
type Script struct {
	Statements []Statement `parser:"';'* (@@ (';'+ @@)* ';'*)?"`
}

// Statement is a SHOW, SELECT or PLOT statement (a sealed interface).
type Statement interface {
	statement()
	String() string
	Position() lexer.Position
}

// Show lists runs, or a run's layers or steps.
type Show struct {
	Pos  lexer.Position
	What Keyword `parser:"'SHOW' @('RUNS' | 'LAYERS' | 'STEPS' | 'SCALARS')"`
	From *string `parser:"('FROM' @String)?"`
}

// Select computes statistics and scalars over runs, steps and layers.
type Select struct {
	Pos    lexer.Position
	Items  []*Item     `parser:"'SELECT' @@ (',' @@)*"`
	Runs   []string    `parser:"'FROM' @String (',' @String)*"`
	Where  *Cond       `parser:"('WHERE' @@)?"`
	Group  []*GroupKey `parser:"('GROUP' 'BY' @@ (',' @@)*)?"`
	Having *Cond       `parser:"('HAVING' @@)?"`
	Order  []*OrderKey `parser:"('ORDER' 'BY' @@ (',' @@)*)?"`
	Limit  *float64    `parser:"('LIMIT' @Number)?"`
}

// Plot is a SELECT whose result is drawn to a file.
type Plot struct {
	Pos   lexer.Position
	Items []*Item     `parser:"'PLOT' @@ (',' @@)*"`
	Runs  []string    `parser:"'FROM' @String (',' @String)*"`
	Where *Cond       `parser:"('WHERE' @@)?"`
	Group []*GroupKey `parser:"('GROUP' 'BY' @@ (',' @@)*)?"`
	Scale Keyword     `parser:"('SCALE' @('LOG' | 'LINEAR'))?"`
	Title *string     `parser:"('TITLE' @String)?"`
	To    *File       `parser:"'TO' @@"`
}

// File is the file a PLOT writes, as written in the query, and where.
type File struct {
	Pos  lexer.Position
	Path string `parser:"@String"`
}

func (*Show) statement()   {}
func (*Select) statement() {}
func (*Plot) statement()   {}

// Position returns where the statement starts.
func (s *Show) Position() lexer.Position { return s.Pos }

// Position returns where the statement starts.
func (s *Select) Position() lexer.Position { return s.Pos }

// Position returns where the statement starts.
func (p *Plot) Position() lexer.Position { return p.Pos }

// AsSelect returns the SELECT a PLOT draws.
func (p *Plot) AsSelect() *Select {
	return &Select{Pos: p.Pos, Items: p.Items, Runs: p.Runs, Where: p.Where, Group: p.Group}
}

// Item is one output column: an expression with an optional alias.
type Item struct {
	Pos   lexer.Position
	Expr  *Expr   `parser:"@@"`
	Alias *string `parser:"('AS' @(Ident | String))?"`
}

// Expr is a sum of terms.
type Expr struct {
	Pos  lexer.Position
	Left *Term     `parser:"@@"`
	Ops  []*OpTerm `parser:"@@*"`
}

// OpTerm is "+ term" or "- term".
type OpTerm struct {
	Op   string `parser:"@('+' | '-')"`
	Term *Term  `parser:"@@"`
}

// Term is a product of factors.
type Term struct {
	Left *Factor     `parser:"@@"`
	Ops  []*OpFactor `parser:"@@*"`
}

// OpFactor is "* factor" or "/ factor".
type OpFactor struct {
	Op     string  `parser:"@('*' | '/')"`
	Factor *Factor `parser:"@@"`
}

// Factor is an optionally negated operand.
type Factor struct {
	Neg     bool    `parser:"@'-'?"`
	Operand Operand `parser:"@@"`
}

// Operand is a number, a call, a name, a parenthesized expression or a
// string argument (a sealed interface).
type Operand interface {
	operand()
	String() string
}

// Number is a numeric literal.
type Number struct {
	Value float64 `parser:"@Number"`
}

// Call is a statistic with arguments: variance(128), gc_nvar(64, 128),
// pooled(nvar(128)).
type Call struct {
	Pos  lexer.Position
	Name Ident   `parser:"(?! 'FROM' | 'WHERE' | 'GROUP' | 'ORDER' | 'LIMIT' | 'AS' | 'TO' | 'SCALE' | 'TITLE' | 'HAVING' | 'SELECT' | 'PLOT' | 'SHOW' | 'AND' | 'OR' | 'NOT' | 'IN' | 'BY' | 'DESC' | 'ASC') @Ident '('"`
	Args []*Expr `parser:"(@@ (',' @@)*)? ')'"`
}

// Name is a bare identifier: a statistic with default arguments, a step
// scalar (loss, accuracy, ...) or a key (step, run, layer).
type Name struct {
	Pos  lexer.Position
	Name Ident `parser:"(?! 'FROM' | 'WHERE' | 'GROUP' | 'ORDER' | 'LIMIT' | 'AS' | 'TO' | 'SCALE' | 'TITLE' | 'HAVING' | 'SELECT' | 'PLOT' | 'SHOW' | 'AND' | 'OR' | 'NOT' | 'IN' | 'BY' | 'DESC' | 'ASC') @Ident"`
}

// Str is a quoted string: only an argument, the method of a Gradient
// Clustering statistic (gc_variance(128, 128, 'paper')).
type Str struct {
	Pos   lexer.Position
	Value string `parser:"@String"`
}

// Paren is a parenthesized expression.
type Paren struct {
	Expr *Expr `parser:"'(' @@ ')'"`
}

func (*Number) operand() {}
func (*Call) operand()   {}
func (*Name) operand()   {}
func (*Paren) operand()  {}
func (*Str) operand()    {}

// Cond is a disjunction of conjunctions (WHERE).
type Cond struct {
	Or []*AndCond `parser:"@@ ('OR' @@)*"`
}

// Walk calls fn for each predicate of c that is not a parenthesized
// condition (those it enters), in order.
func (c *Cond) Walk(fn func(*Pred)) {
	for _, a := range c.Or {
		for _, n := range a.And {
			if n.Pred.Paren != nil {
				n.Pred.Paren.Walk(fn)
			} else {
				fn(n.Pred)
			}
		}
	}
}

// Holds evaluates c, an OR of ANDs of optionally negated predicates, with
// leaf deciding each predicate that is not a parenthesized condition.
func (c *Cond) Holds(leaf func(*Pred) bool) bool {
	for _, a := range c.Or {
		all := true
		for _, n := range a.And {
			var v bool
			if n.Pred.Paren != nil {
				v = n.Pred.Paren.Holds(leaf)
			} else {
				v = leaf(n.Pred)
			}
			if v == n.Not {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// AndCond is a conjunction.
type AndCond struct {
	And []*NotCond `parser:"@@ ('AND' @@)*"`
}

// NotCond is an optionally negated predicate.
type NotCond struct {
	Not  bool  `parser:"@'NOT'?"`
	Pred *Pred `parser:"@@"`
}

// Pred is a comparison on a key, or a parenthesized condition.
type Pred struct {
	Pos   lexer.Position
	Paren *Cond     `parser:"  '(' @@ ')'"`
	Field Ident     `parser:"| (?! 'AND' | 'OR' | 'NOT' | 'GROUP' | 'HAVING' | 'ORDER' | 'LIMIT' | 'SCALE' | 'TITLE' | 'TO') @Ident"`
	Op    string    `parser:"  ( @('<=' | '>=' | '!=' | '<>' | '=' | '<' | '>')"`
	Value *Literal  `parser:"    @@"`
	In    []Literal `parser:"  | 'IN' '(' @@ (',' @@)* ')'"`
	Glob  *string   `parser:"  | 'GLOB' @String"`
	Lo    *Literal  `parser:"  | 'BETWEEN' @@"`
	Hi    *Literal  `parser:"    'AND' @@ )?"`
}

// Bare reports whether the predicate is a field alone (a boolean
// attribute: WHERE corrupted).
func (p *Pred) Bare() bool {
	return p.Paren == nil && p.Value == nil && p.In == nil && p.Glob == nil && p.Lo == nil
}

// Literal is a number or a string.
type Literal struct {
	Num *float64 `parser:"  @Number"`
	Str *string  `parser:"| @String"`
}

// GroupKey is window(n), step, run or layer.
type GroupKey struct {
	Pos    lexer.Position
	Window *float64 `parser:"  'WINDOW' '(' @Number ')'"`
	Key    Keyword  `parser:"| @('STEP' | 'RUN' | 'LAYER')"`
	// Attr is an example attribute (label) or a run's configuration
	// (config.lr).
	Attr Ident `parser:"| (?! 'HAVING' | 'ORDER' | 'LIMIT' | 'SCALE' | 'TITLE' | 'TO') @Ident"`
}

// OrderKey is an output column (by name or expression) and a direction.
type OrderKey struct {
	Expr *Expr `parser:"@@"`
	Desc bool  `parser:"(@'DESC' | 'ASC')?"`
}

// Keyword is a keyword as captured, in upper case.
type Keyword string

// Capture normalizes a keyword to upper case.
func (k *Keyword) Capture(values []string) error {
	*k = Keyword(strings.ToUpper(strings.Join(values, "")))
	return nil
}

// Ident is a statistic, scalar or key name, in lower case (names are
// case-insensitive).
type Ident string

// Capture normalizes a name to lower case.
func (i *Ident) Capture(values []string) error {
	*i = Ident(strings.ToLower(strings.Join(values, "")))
	return nil
}

// String printing: every node prints as query text that parses back to an
// equal tree (the round-trip test checks this).

// Quote returns s as a quoted name of the language ('it”s').
func Quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// String prints the Show as query text.
func (s *Show) String() string {
	out := "SHOW " + string(s.What)
	if s.From != nil {
		out += " FROM " + Quote(*s.From)
	}
	return out
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = Quote(s)
	}
	return strings.Join(q, ", ")
}

func itemsString(items []*Item) string {
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = it.String()
	}
	return strings.Join(parts, ", ")
}

func groupString(g []*GroupKey) string {
	parts := make([]string, len(g))
	for i, k := range g {
		parts[i] = k.String()
	}
	return strings.Join(parts, ", ")
}

// String prints the Select as query text.
func (s *Select) String() string {
	var b strings.Builder
	b.WriteString("SELECT " + itemsString(s.Items) + " FROM " + quoteAll(s.Runs))
	if s.Where != nil {
		b.WriteString(" WHERE " + s.Where.String())
	}
	if len(s.Group) > 0 {
		b.WriteString(" GROUP BY " + groupString(s.Group))
	}
	if s.Having != nil {
		b.WriteString(" HAVING " + s.Having.String())
	}
	if len(s.Order) > 0 {
		parts := make([]string, len(s.Order))
		for i, o := range s.Order {
			parts[i] = o.Expr.String()
			if o.Desc {
				parts[i] += " DESC"
			}
		}
		b.WriteString(" ORDER BY " + strings.Join(parts, ", "))
	}
	if s.Limit != nil {
		b.WriteString(" LIMIT " + strconv.FormatFloat(*s.Limit, 'g', -1, 64))
	}
	return b.String()
}

// String prints the Plot as query text.
func (p *Plot) String() string {
	var b strings.Builder
	b.WriteString("PLOT " + itemsString(p.Items) + " FROM " + quoteAll(p.Runs))
	if p.Where != nil {
		b.WriteString(" WHERE " + p.Where.String())
	}
	if len(p.Group) > 0 {
		b.WriteString(" GROUP BY " + groupString(p.Group))
	}
	if p.Scale != "" {
		b.WriteString(" SCALE " + string(p.Scale))
	}
	if p.Title != nil {
		b.WriteString(" TITLE " + Quote(*p.Title))
	}
	b.WriteString(" TO " + Quote(p.To.Path))
	return b.String()
}

// String prints the Item as query text.
func (it *Item) String() string {
	if it.Alias != nil {
		return it.Expr.String() + " AS " + Quote(*it.Alias)
	}
	return it.Expr.String()
}

// walk calls fn for each operand of e, descending into parentheses but
// not into calls.
func (e *Expr) Walk(fn func(Operand)) {
	terms := []*Term{e.Left}
	for _, o := range e.Ops {
		terms = append(terms, o.Term)
	}
	for _, t := range terms {
		factors := []*Factor{t.Left}
		for _, o := range t.Ops {
			factors = append(factors, o.Factor)
		}
		for _, f := range factors {
			if p, ok := f.Operand.(*Paren); ok {
				p.Expr.Walk(fn)
				continue
			}
			fn(f.Operand)
		}
	}
}

// String prints the Expr as query text.
func (e *Expr) String() string { return e.Render(Operand.String) }

// Render prints the expression with op printing each operand.
func (e *Expr) Render(op func(Operand) string) string {
	return chain(e.Left.Render(op), len(e.Ops), func(i int) (string, string) { return e.Ops[i].Op, e.Ops[i].Term.Render(op) })
}

// String prints the Term as query text.
func (t *Term) String() string { return t.Render(Operand.String) }

// Render prints the term with op printing each operand.
func (t *Term) Render(op func(Operand) string) string {
	return chain(t.Left.Render(op), len(t.Ops), func(i int) (string, string) { return t.Ops[i].Op, t.Ops[i].Factor.Render(op) })
}

// chain joins left and n (operator, operand) pairs in linear time.
func chain(left string, n int, at func(i int) (op, rendered string)) string {
	if n == 0 {
		return left
	}
	var b strings.Builder
	b.WriteString(left)
	for i := range n {
		o, r := at(i)
		b.WriteString(" " + o + " ")
		b.WriteString(r)
	}
	return b.String()
}

// String prints the Factor as query text.
func (f *Factor) String() string { return f.Render(Operand.String) }

func (f *Factor) Render(op func(Operand) string) string {
	if f.Neg {
		return "-" + op(f.Operand)
	}
	return op(f.Operand)
}

// String prints the Number as query text.
func (n *Number) String() string { return strconv.FormatFloat(n.Value, 'g', -1, 64) }

// String prints the Call as query text.
func (c *Call) String() string {
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = a.String()
	}
	return string(c.Name) + "(" + strings.Join(args, ", ") + ")"
}

// String prints the Name as query text.
func (n *Name) String() string { return string(n.Name) }

// String prints the Paren as query text.
func (s *Str) String() string { return Quote(s.Value) }

func (p *Paren) String() string { return "(" + p.Expr.String() + ")" }

// String prints the Cond as query text.
func (c *Cond) String() string {
	parts := make([]string, len(c.Or))
	for i, a := range c.Or {
		parts[i] = a.String()
	}
	return strings.Join(parts, " OR ")
}

// String prints the AndCond as query text.
func (a *AndCond) String() string {
	parts := make([]string, len(a.And))
	for i, n := range a.And {
		parts[i] = n.String()
	}
	return strings.Join(parts, " AND ")
}

// String prints the NotCond as query text.
func (n *NotCond) String() string {
	if n.Not {
		return "NOT " + n.Pred.String()
	}
	return n.Pred.String()
}

// String prints the Pred as query text.
func (p *Pred) String() string {
	if p.Paren != nil {
		return "(" + p.Paren.String() + ")"
	}
	f := strings.ToLower(string(p.Field))
	switch {
	case p.Bare():
		return f
	case p.Value != nil:
		return f + " " + p.Op + " " + p.Value.String()
	case p.In != nil:
		vals := make([]string, len(p.In))
		for i, v := range p.In {
			vals[i] = v.String()
		}
		return f + " IN (" + strings.Join(vals, ", ") + ")"
	case p.Glob != nil:
		return f + " GLOB " + Quote(*p.Glob)
	default:
		return f + " BETWEEN " + p.Lo.String() + " AND " + p.Hi.String()
	}
}

// String prints the Literal as query text.
func (l Literal) String() string {
	if l.Num != nil {
		return strconv.FormatFloat(*l.Num, 'g', -1, 64)
	}
	return Quote(*l.Str)
}

// String prints the GroupKey as query text.
func (g *GroupKey) String() string {
	if g.Window != nil {
		return "window(" + strconv.FormatFloat(*g.Window, 'g', -1, 64) + ")"
	}
	if g.Attr != "" {
		return string(g.Attr)
	}
	return strings.ToLower(string(g.Key))
}

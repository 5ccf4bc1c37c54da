// Package parser is gvdb's query language without its meaning: a
// participle grammar whose tagged structs are the AST (Script, Select,
// Plot, Show, Expr, Cond, ...), Parse and ParseStatement with positioned
// errors (Error: line:column, what was expected, the nearest keyword),
// the limits on hostile text (size, nesting), canonical printing (every
// node's String parses back to itself), and Split, which cuts a script into
// statements for the interactive prompt.
//
// Like promql/parser, it knows no statistic, run or store: checking names
// against the statistics table and the store is the planner's work in
// package query. parser imports participle, and db for its nearest-name
// hints.
package parser

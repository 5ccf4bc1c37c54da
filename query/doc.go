// Package query is gvdb's query language and its evaluator: a participle
// grammar whose tagged structs are the AST (Parse, ParseStatement), a
// planner that checks a statement against the store (unknown runs, layers,
// statistics and scalars are errors that name the nearest existing one),
// and Eval, which reads only the snapshots and layers a query needs (one
// range scan per run and window), decodes blocks in parallel and computes
// the statistics of package query/stats. docs/QUERY.md is the reference.
//
// query imports db, ingest/codec and query/stats; never trainer.
package query

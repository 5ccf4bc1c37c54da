// Package query evaluates gvdb's query language (parsed by query/parser): a
// planner that checks a statement against the store (unknown runs, layers,
// statistics and scalars are errors that name the nearest existing one),
// and Eval, which reads only the snapshots and layers a query needs (one
// range scan per run and window), answers moment statistics from the
// snapshots' rollups when they have them and otherwise decodes blocks,
// processes snapshots on a bounded pool of workers and computes the
// statistics of package db/stats. The statistics table
// (statistics.go) is the one place a statistic is defined.
// docs/QUERY.md is the reference.
//
// query imports db, db/codec, db/stats and query/parser; never ingest or
// trainer.
package query

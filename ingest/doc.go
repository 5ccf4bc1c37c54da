// Package ingest feeds gradient snapshots into a store: the streaming
// Writer that trainers and importers use, over the block format of
// package db/codec; the Recorder, which runs a training run's
// lifecycle and durability policy over a Writer; Reindex, which adds
// rollups to existing snapshots; and Check, which verifies a whole store.
//
// A Writer encodes blocks on several goroutines, computes each layer's
// rollup (db/stats.Rollup: the sufficient statistics that answer moment
// statistics without reading blocks) beside it, commits snapshots to the
// store in the order they were written, and holds bounded memory: when its
// queue is full, Write waits (backpressure) instead of growing. Errors
// stick and come back from the next Write, Flush or Close. Everything
// accepted before a successful Flush survives a crash of the process.
//
// ingest imports db, db/codec and db/stats (the rollup and its
// encoding, the one computation shared with queries); it knows nothing of
// the query language or of training.
package ingest

// Package ingest feeds gradient snapshots into a store: the streaming
// Writer that trainers and importers use, over the block format of
// package ingest/codec.
//
// A Writer encodes blocks on several goroutines, commits snapshots to the
// store in the order they were written, and holds bounded memory: when its
// queue is full, Write waits (backpressure) instead of growing. Errors stick
// and come back from the next Write, Flush or Close. Everything accepted
// before a successful Flush survives a crash of the process.
//
// ingest imports db and ingest/codec; it knows nothing of queries or
// training.
package ingest

// Package db is gvdb's store: a Badger directory that holds runs (with their
// metadata and layer schema), per-step scalars and gradient snapshots.
//
// Keys order by run, then step (big-endian), then layer, so a window of
// steps is one range scan and a layer filter skips other layers' blocks
// without reading their values. FORMAT.md beside this file draws the key and
// value layouts. A snapshot is written all-or-nothing: its manifest is
// committed after its blocks, and readers see only snapshots with a
// manifest.
//
// db stores encoded blocks as opaque bytes; package db/codec knows their
// format. db imports nothing else from gvdb and knows nothing of queries.
package db

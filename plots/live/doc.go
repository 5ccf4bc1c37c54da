// Package live serves a store over HTTP while it is read or written: a
// JSON API (queries, runs, steps, figures), a stream of new snapshots
// (Server-Sent Events) and a page embedded in the binary that shows them.
// gvdb serve runs it on a store nobody writes; gvdb train --serve and
// import --follow --serve in the writer. Its SVG figures are the report's
// (plots.Lines), with each data point one element (PointClass), so that
// a page or a test can count and label them.
//
// It is read-only: no endpoint writes to the store or to the server's
// disk (figures are rendered in memory). It listens on a loopback address
// unless given a token, which every request must then carry (checked in
// constant time). Requests are bounded: the query's size, the number of
// queries at once (past it: 429), each query's time (past it: 503) and
// memory budget.
//
// It imports db, query (and its parser) and plots; cmd/gvdb wires it.
package live

package live

import (
	"context"
	"fmt"
	"io"
	"net"

	"gvdb/db"
)

// Help and Examples are gvdb serve's help text.
const (
	Help = `Serve a store over HTTP: a JSON API (/api/query?q=, /api/runs,
/api/steps?run=, /api/figure?q=PLOT...&format=svg|png or ?run=NAME for a
run's core figure, /api/events: new snapshots as Server-Sent Events) and
a page at / that shows the runs with their status, each run's core figure
(variance of SG-B and SG-2B, nvar, gns, loss; redrawn as snapshots land)
and a query box (a table, and a figure of results over steps). In the SVG
figures each point is one element, <g class="gvdb-point"> with
data-series, data-step and data-value.

serve opens the store read-only and holds it while it runs: a writer
(train, import) cannot start on it meanwhile. To watch a run while it
trains, give the writer --serve ADDR (gvdb train ... --serve, gvdb import
... --follow --serve): it serves the same page; read commands (query,
runs, plot, report) beside a writer read through it.

Read-only; loopback by default: any other address needs --token (or
GVDB_TOKEN), which every request must carry (Authorization: Bearer TOKEN,
or ?token=; the page takes #token=TOKEN).`
	Examples = `  gvdb serve --db runs/            # then open http://127.0.0.1:8080/
  gvdb train --db runs/ --run mlp --serve 127.0.0.1:8080     # the page while it trains
  GVDB_TOKEN=$(openssl rand -hex 16) gvdb serve --db runs/ --addr 0.0.0.0:8080`
)

// Run serves d on addr until ctx ends, saying where on log.
func Run(ctx context.Context, d *db.DB, addr, token string, log io.Writer) error {
	return New(d, Config{Token: token}).ListenAndServe(ctx, addr, func(a net.Addr) {
		fmt.Fprintf(log, "serving %s at http://%s/ (Ctrl-C stops)\n", d.Dir(), a)
	})
}

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
/api/steps?run=, /api/figure?q=PLOT...&format=svg|png, /api/events: new
snapshots as Server-Sent Events) and a page at / that shows the runs,
their figures (redrawn as snapshots land) and a query box.

serve opens the store read-only and holds it while it runs: a writer
(train, import) cannot start on it meanwhile. To watch a run while it
trains, run read commands (query, runs, plot, report) beside the writer:
they read through it.

Read-only; loopback by default: any other address needs --token (or
GVDB_TOKEN), which every request must carry (Authorization: Bearer TOKEN,
or ?token=; the page takes #token=TOKEN).`
	Examples = `  gvdb serve --db runs/            # then open http://127.0.0.1:8080/
  GVDB_TOKEN=$(openssl rand -hex 16) gvdb serve --db runs/ --addr 0.0.0.0:8080`
)

// Run serves d on addr until ctx ends, saying where on log.
func Run(ctx context.Context, d *db.DB, addr, token string, log io.Writer) error {
	return New(d, Config{Token: token}).ListenAndServe(ctx, addr, func(a net.Addr) {
		fmt.Fprintf(log, "serving %s at http://%s/ (Ctrl-C stops)\n", d.Dir(), a)
	})
}

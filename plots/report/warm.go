package report

import (
	"context"
	"fmt"
	"strings"

	"gvdb/db"
	"gvdb/query"
	"gvdb/query/parser"
)

// warm fits, in one pass over run r's full snapshots, the Gradient
// Clustering partitions that the report's queries and the Findings ask for
// there: gvdb's exact fit with k clusters and, when t > 0, the paper's
// refitted every t steps with its scores. The queries that follow go over
// the same snapshots in turn (exact fit, paper refit, distortion curve),
// and find these partitions in the cache they share: each full snapshot's
// Gram matrix is then built once per run, however few of them the cache
// keeps. The answers are the same without it; an error is left for those
// queries to report.
func warm(ctx context.Context, d *db.DB, cache *query.GCCache, r *db.Run, k int, t int64) {
	q := parser.Quote(r.Name)
	items := []string{fmt.Sprintf("gc_distortion(%d)", k)}
	if t > 0 {
		items = append(items, fmt.Sprintf("gc_distortion(%d, 'paper', %d)", k, t))
	}
	for len(items) > 0 {
		st, err := parser.ParseStatement(fmt.Sprintf("SELECT %s FROM %s WHERE population = 'full'", strings.Join(items, ", "), q))
		if err == nil {
			if _, err = query.Eval(ctx, d, st, query.Options{Cache: cache}); err == nil {
				return
			}
		}
		items = items[:len(items)-1] // without the paper's refits
	}
}

// fullSteps are the steps of run r's full snapshots.
func fullSteps(d *db.DB, r *db.Run) ([]int64, error) {
	infos, err := d.SnapshotInfos(r, db.AllSteps)
	if err != nil {
		return nil, err
	}
	var fulls []int64
	for _, in := range infos {
		if in.Population == db.Full {
			fulls = append(fulls, in.Step)
		}
	}
	return fulls, nil
}

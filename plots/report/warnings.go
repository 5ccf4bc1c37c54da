package report

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gvdb/db"
	"gvdb/db/stats"
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

// missedRe matches a query's warning that a refit partition's clusters
// are missing from one sample (stats.GC.Score's, prefixed with the run
// and step by the query).
var missedRe = regexp.MustCompile(`^run (.+) step (\d+): (\d+) of the partition's clusters \(([0-9.]+)% of the population\) have fewer than 2 examples in this sample and ` +
	regexp.QuoteMeta(stats.MissedClusters) + `, which is therefore low`)

// summarize folds the warnings that a refit partition's clusters are
// missing from the samples, one per sample snapshot, into one line per
// run, where the first of them was; the other warnings are kept as they
// are.
func summarize(ws []string) []string {
	type missed struct {
		at       int // index in out
		steps    []string
		lo, hi   int
		plo, phi float64
		first    string
	}
	var out []string
	byRun := map[string]*missed{}
	var runs []string
	for _, w := range ws {
		m := missedRe.FindStringSubmatch(w)
		if m == nil {
			out = append(out, w)
			continue
		}
		n, _ := strconv.Atoi(m[3])
		p, _ := strconv.ParseFloat(m[4], 64)
		a := byRun[m[1]]
		if a == nil {
			a = &missed{at: len(out), lo: n, hi: n, plo: p, phi: p, first: w}
			byRun[m[1]] = a
			runs = append(runs, m[1])
			out = append(out, "")
		}
		a.steps = append(a.steps, m[2])
		a.lo, a.hi, a.plo, a.phi = min(a.lo, n), max(a.hi, n), min(a.plo, p), max(a.phi, p)
	}
	for _, r := range runs {
		a := byRun[r]
		if len(a.steps) == 1 {
			out[a.at] = a.first
			continue
		}
		span := func(lo, hi string) string {
			if lo == hi {
				return lo
			}
			return lo + " to " + hi
		}
		out[a.at] = fmt.Sprintf("run %s: at the %d sample snapshots of steps %s, %s of the refit partition's clusters (%s%% of the population) have fewer than 2 examples in the sample and %s there, which is therefore low; samples stratified by that partition (gvdb train --snapshot-strata) or its scores on the full snapshots avoid it",
			r, len(a.steps), list(a.steps), span(strconv.Itoa(a.lo), strconv.Itoa(a.hi)), span(strconv.FormatFloat(a.plo, 'f', -1, 64), strconv.FormatFloat(a.phi, 'f', -1, 64)), stats.MissedClusters)
	}
	return out
}

// list joins words as "a, b and c".
func list(ws []string) string {
	if len(ws) < 2 {
		return strings.Join(ws, "")
	}
	return strings.Join(ws[:len(ws)-1], ", ") + " and " + ws[len(ws)-1]
}

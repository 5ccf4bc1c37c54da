package report

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gvdb/db/stats"
)

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

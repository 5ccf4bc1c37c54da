package query

import (
	"fmt"
	"slices"
	"strings"

	"gvdb/db"
	"gvdb/db/stats"
)

// Stratified samples (gvdb train --snapshot-strata K): each sample
// snapshot was drawn with at least 2 examples from every cluster of the
// partition fitted, by the run's SnapshotStrataMethod, at the latest full
// snapshot whose step is a multiple of SnapshotStrataEvery, and records
// each example's stratum, the stratum's population size and its inclusion
// probability. Scored on such a sample, that partition's refit estimate
// (gc_variance(K, B, method, every)) is unbiased by design; any other
// statistic of the sample describes the sample, which over-represents
// small clusters, not the training set.

// strataWarning checks a refit estimate on a stratified sample: the
// query's (K, method, refit_every) must be the ones the run's samples were
// stratified by, and the partition the query fitted must be the one the
// sample records (its strata and their sizes). It returns a warning when
// the estimate is therefore not unbiased ("" when it is), and whether the
// warning holds for the whole run rather than this snapshot.
func strataWarning(x *scopeData, ids []uint64, f *stats.FixedPartition, every int64, k int, method stats.Method) (string, bool) {
	if x.strata == nil {
		return "", false
	}
	c := x.run.Config
	if c.SnapshotStrata == 0 {
		return fmt.Sprintf("its samples record strata (%s, %s) but the run does not record the partition they were drawn by: refit estimates on them are not known to be unbiased", stats.StratumAttr, stats.StratumSizeAttr), true
	}
	if c.SnapshotStrata != k || c.SnapshotStrataMethod != method.String() || c.SnapshotStrataEvery != every {
		return fmt.Sprintf("its samples are stratified by the partition of %s, not by this one (K = %d, '%s', refit every %d): they over-represent some of its clusters, so this estimate on them is not unbiased; %s is",
			strataName(c), k, method, every, strataQuery(x.run)), true
	}
	if bad := f.Disagreements(ids, x.strata); bad > 0 {
		return fmt.Sprintf("the partition this query fitted differs from the one the sample was stratified by (%d of its %d examples in another cluster or a cluster of another size: a --gc-path or --memory other than the defaults, another machine's default memory budget, another seed or rounds in query.Options, or a WHERE on layers): the estimate is not unbiased for this partition",
			bad, len(ids)), false
	}
	return "", false
}

// strataName describes the partition a run's samples are stratified by.
func strataName(c db.Config) string {
	return fmt.Sprintf("gvdb train --snapshot-strata %d --snapshot-strata-method %s --snapshot-strata-every %d", c.SnapshotStrata, c.SnapshotStrataMethod, c.SnapshotStrataEvery)
}

// strataQuery is the refit statistic whose estimate a run's stratified
// samples make unbiased.
func strataQuery(r *db.Run) string {
	return fmt.Sprintf("gc_variance(%d, %d, '%s', %d)", r.SnapshotStrata, r.BatchSize, r.SnapshotStrataMethod, r.SnapshotStrataEvery)
}

// stratifiedNote warns, once per run, that statistics other than the
// stratifying partition's refit estimates describe a stratified sample,
// not the training set; "" when the query asks for none.
func stratifiedNote(r *db.Run, refs []statRef) string {
	var names []string
	for _, ref := range refs {
		def := lookupStat(ref.name)
		if (def.need.gc && ref.refit > 0) || ref.name == "examples" || ref.name == "params" {
			continue
		}
		n := ref.name
		if ref.pooled {
			n = "pooled(" + n + ")"
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return ""
	}
	how := "stratified by Gradient Clustering's clusters"
	if r.SnapshotStrata > 0 {
		how = "stratified by the clusters of " + strataName(r.Config)
	}
	verb := "describe"
	if len(names) == 1 {
		verb = "describes"
	}
	return fmt.Sprintf("run %s: its sample snapshots are %s, which over-represents small clusters: on them, %s %s the sample, not the training set (WHERE population = 'full' gives the training set's values; on the samples, %s is the stratified estimate)",
		r.Name, how, strings.Join(names, ", "), verb, strataHint(r))
}

func strataHint(r *db.Run) string {
	if r.SnapshotStrata > 0 {
		return strataQuery(r)
	}
	return "the refit estimate of the partition they were drawn by"
}

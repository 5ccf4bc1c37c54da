package query

import (
	"fmt"
	"strings"

	"gvdb/db"
)

// Advice in warnings and reports speaks of how a run was made: gvdb
// train's flags for its own runs, the capture API (python/gvdb_capture.py)
// for imported ones.

// FullSnapshotHint says how run r gets full snapshots (the whole training
// set, the paper's population for Gradient Clustering).
func FullSnapshotHint(r *db.Run) string {
	if r.Imported() {
		return `cap.snapshot(step, ids, population="full") of python/gvdb_capture.py over the whole training set, in chunks if need be`
	}
	return "gvdb train --full-snapshot-every"
}

// AnchorHint says how run r's snapshots get SVRG anchor blocks.
func AnchorHint(r *db.Run) string {
	if r.Imported() {
		return "capture them with cap.anchor(anchor_model, anchor_step) of python/gvdb_capture.py inside the snapshot block"
	}
	return "train with --svrg-every S"
}

// IgnoredNote says which trainable parameters run r's writer left out
// (ignore=), over which its whole-model statistics do not reach; "" when
// none were.
func IgnoredNote(r *db.Run) string {
	if len(r.Ignored) == 0 {
		return ""
	}
	names, more := r.Ignored, ""
	if len(names) > 8 {
		names, more = names[:8], fmt.Sprintf(" and %d more", len(names)-8)
	}
	what := fmt.Sprintf("%d trainable parameters were", len(r.Ignored))
	if len(r.Ignored) == 1 {
		what = "1 trainable parameter was"
	}
	return fmt.Sprintf("%s not captured (left out with ignore=): %s%s; whole-model statistics cover the captured layers only",
		what, strings.Join(names, ", "), more)
}

// wholeModel reports whether a run's plan computes statistics over all of
// its layers together.
func wholeModel(rp runPlan) bool {
	for _, sc := range rp.scopes {
		if sc.name == "" && len(sc.layers) == len(rp.run.Layers) {
			return true
		}
	}
	return false
}

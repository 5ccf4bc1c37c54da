package ingest

import (
	"fmt"

	"gvdb/db"
	"gvdb/db/codec"
)

// Reindex adds rollups under policy to every snapshot of run r that lacks
// them (all of them when replace is set), computing them from the blocks;
// it returns how many snapshots it indexed and the rollups' bytes. The
// snapshots themselves are not touched.
func Reindex(d *db.DB, r *db.Run, policy RollupPolicy, replace bool, progress func(done, total int)) (int, int64, error) {
	if _, err := ParseRollupPolicy(string(policy)); err != nil || policy == RollupsNone {
		return 0, 0, fmt.Errorf("reindex: rollup policy %q (want auto, vectors or scalars)", policy)
	}
	infos, err := d.SnapshotInfos(r, db.AllSteps)
	if err != nil {
		return 0, 0, err
	}
	done, indexed, bytes := 0, 0, int64(0)
	for _, in := range infos {
		done++
		if in.Rollups == len(in.Layers) && !replace {
			if progress != nil {
				progress(done, len(infos))
			}
			continue
		}
		s, err := d.Snapshot(r, in.Step, db.Select{})
		if err != nil {
			return indexed, bytes, err
		}
		var rolls []encodedRollup
		blockBytes := int64(0)
		for _, lb := range s.Blocks {
			blockBytes += int64(len(lb.Data))
			b, err := codec.Decode(lb.Data)
			if err != nil {
				return indexed, bytes, fmt.Errorf("reindex %s@%d %s: %w", r.Name, in.Step, lb.Layer, err)
			}
			ro, err := policy.encodeRollup(lb.Layer, b)
			if err != nil {
				return indexed, bytes, fmt.Errorf("reindex %s@%d %s: %w", r.Name, in.Step, lb.Layer, err)
			}
			rolls = append(rolls, ro)
		}
		kept := policy.keep(rolls, blockBytes)
		for _, lb := range kept {
			bytes += int64(len(lb.Data))
		}
		if err := d.PutRollups(r, in.Step, kept); err != nil {
			return indexed, bytes, err
		}
		indexed++
		if progress != nil {
			progress(done, len(infos))
		}
	}
	return indexed, bytes, d.Sync()
}

package query

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"gvdb/db"
	"gvdb/query/parser"
)

func evalShow(d *db.DB, s *parser.Show) (*Result, error) {
	what := string(s.What)
	if what != "RUNS" && s.From == nil {
		return nil, parser.Errorf(s.Pos, "SHOW %s needs FROM 'run'", what)
	}
	res := &Result{}
	switch what {
	case "RUNS":
		runs, err := d.Runs()
		if err != nil {
			return nil, err
		}
		res.Columns = []string{"run", "model", "data", "status", "steps", "batch", "lr", "layers", "params", "snapshots", "examples", "full", "created"}
		for _, r := range runs {
			infos, err := d.SnapshotInfos(r, db.AllSteps)
			if err != nil {
				return nil, err
			}
			// examples: per sampled snapshot (the first one's); full: how
			// many snapshots hold the whole training set.
			n, full := int64(0), int64(0)
			for _, in := range infos {
				if in.Population == db.Full {
					full++
				} else if n == 0 {
					n = int64(in.N)
				}
			}
			res.Rows = append(res.Rows, []any{r.Name, r.Model, r.Dataset, r.ShownStatus(), r.Steps, int64(r.BatchSize), r.LR,
				int64(len(r.Layers)), int64(r.TotalParams()), int64(len(infos)), n, full, r.Created.UTC().Format("2006-01-02 15:04:05")})
		}
		return res, nil
	}
	r, err := d.Run(*s.From)
	if err != nil {
		return nil, posErr(s.Pos, err)
	}
	switch what {
	case "LAYERS":
		res.Columns = []string{"layer", "kind", "shape", "params"}
		for _, l := range r.Layers {
			dims := make([]string, len(l.Shape))
			for i, n := range l.Shape {
				dims[i] = fmt.Sprint(n)
			}
			res.Rows = append(res.Rows, []any{l.Name, string(l.Kind), strings.Join(dims, "x"), int64(l.Params)})
		}
	case "STEPS":
		infos, err := d.SnapshotInfos(r, db.AllSteps)
		if err != nil {
			return nil, posErr(s.Pos, err)
		}
		// anchor_step: the step of the SVRG anchor θ̃ whose gradients the
		// snapshot also holds (NaN: none).
		// rollup_bytes: what the rollups that answer moment statistics
		// without reading blocks cost (0: none; gvdb reindex adds them).
		res.Columns = []string{"step", "population", "examples", "layers", "anchor_step", "stored_bytes", "rollup_bytes"}
		for _, in := range infos {
			anchor := math.NaN()
			if in.HasAnchor {
				anchor = float64(in.AnchorStep)
			}
			res.Rows = append(res.Rows, []any{in.Step, in.Population.String(), int64(in.N), int64(len(in.Layers)), anchor, in.StoredBytes(), in.RollupBytes})
		}
	case "SCALARS":
		type agg struct {
			n           int64
			first, last int64
		}
		seen := map[string]*agg{}
		err := d.Scalars(r, db.AllSteps, func(r db.ScalarRow) error {
			for k := range r.Values {
				a := seen[k]
				if a == nil {
					a = &agg{first: r.Step}
					seen[k] = a
				}
				a.n++
				a.last = r.Step
			}
			return nil
		})
		if err != nil {
			return nil, posErr(s.Pos, err)
		}
		res.Columns = []string{"scalar", "steps", "first_step", "last_step"}
		names := make([]string, 0, len(seen))
		for k := range seen {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			a := seen[k]
			res.Rows = append(res.Rows, []any{k, a.n, a.first, a.last})
		}
	}
	return res, nil
}

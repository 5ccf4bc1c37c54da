package db

import "strconv"

// Config is a run's configuration: everything needed to reproduce it. It is
// the one configuration type of gvdb: Run embeds it (and so the store's run
// record), the trainer's configuration embeds it, interchange's run.json
// converts to and from it, and the query language's config.x reads it
// (Value).
type Config struct {
	Model   string `json:"model"`
	Dataset string `json:"dataset"`

	Optimizer   string  `json:"optimizer,omitempty"`
	LR          float64 `json:"lr,omitempty"`
	Momentum    float64 `json:"momentum,omitempty"`
	WeightDecay float64 `json:"weight_decay,omitempty"`
	BatchSize   int     `json:"batch_size,omitempty"`
	Steps       int64   `json:"steps,omitempty"`
	Seed        uint64  `json:"seed"`

	SnapshotEvery    int64 `json:"snapshot_every,omitempty"`
	SnapshotExamples int   `json:"snapshot_examples,omitempty"`
	// FullSnapshotEvery is the schedule of full snapshots (every training
	// example); SVRGEvery the refresh period of the SVRG anchor whose
	// gradients every snapshot also holds (0: none).
	FullSnapshotEvery int64 `json:"full_snapshot_every,omitempty"`
	SVRGEvery         int64 `json:"svrg_every,omitempty"`
	// SnapshotStrata K (0: uniform samples) draws each sample snapshot
	// stratified by the K clusters of the partition fitted, by
	// SnapshotStrataMethod ("exact" or "paper"), at the latest full
	// snapshot whose step is a multiple of SnapshotStrataEvery: the
	// partition gc_variance(K, B, method, every) scores on the samples,
	// whose estimate is then unbiased by design.
	SnapshotStrata       int    `json:"snapshot_strata,omitempty"`
	SnapshotStrataMethod string `json:"snapshot_strata_method,omitempty"`
	SnapshotStrataEvery  int64  `json:"snapshot_strata_every,omitempty"`
	Encoding             string `json:"encoding,omitempty"`
	// Rollups is the policy the run's rollups were written with (auto,
	// vectors, scalars or none; see ingest.Options.Rollups).
	Rollups string `json:"rollups,omitempty"`

	// Params holds free-form settings (hidden widths, data options, ...).
	Params map[string]string `json:"params,omitempty"`
}

// ConfigKeys are the configuration keys every run has (Run.ConfigValue);
// parameters (hidden, duplicate, corrupt_labels, ...) come on top.
var ConfigKeys = []string{"name", "model", "dataset", "optimizer", "lr", "momentum", "weight_decay", "batch_size",
	"steps", "seed", "snapshot_every", "snapshot_examples", "full_snapshot_every", "svrg_every", "snapshot_strata",
	"snapshot_strata_method", "snapshot_strata_every", "encoding", "status"}

// ConfigAliases are short names the query language accepts for config keys.
var ConfigAliases = map[string]string{"batch": "batch_size", "data": "dataset", "wd": "weight_decay"}

// ConfigValue returns a run's configuration value under key (config.key
// in queries): a field of its configuration or metadata (ConfigKeys; the
// ConfigAliases too) or one of its parameters (hidden, duplicate,
// corrupt_labels, ...), as a float64 when it is a number, else a string.
func (r *Run) ConfigValue(key string) (any, bool) {
	if a, ok := ConfigAliases[key]; ok {
		key = a
	}
	c := &r.Config
	fields := map[string]any{"name": r.Name, "model": c.Model, "dataset": c.Dataset, "optimizer": c.Optimizer,
		"lr": c.LR, "momentum": c.Momentum, "weight_decay": c.WeightDecay, "batch_size": float64(c.BatchSize),
		"steps": float64(c.Steps), "seed": float64(c.Seed), "snapshot_every": float64(c.SnapshotEvery),
		"snapshot_examples": float64(c.SnapshotExamples), "full_snapshot_every": float64(c.FullSnapshotEvery),
		"svrg_every": float64(c.SVRGEvery), "snapshot_strata": float64(c.SnapshotStrata), "snapshot_strata_method": c.SnapshotStrataMethod,
		"snapshot_strata_every": float64(c.SnapshotStrataEvery), "encoding": c.Encoding, "status": r.Status}
	if v, ok := fields[key]; ok {
		return v, true
	}
	pv, ok := c.Params[key]
	if !ok {
		return nil, false
	}
	if f, err := strconv.ParseFloat(pv, 64); err == nil {
		return f, true
	}
	return pv, true
}

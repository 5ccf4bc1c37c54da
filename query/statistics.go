package query

import (
	"sort"
	"strings"
)

// statDef describes a statistic of the language.
type statDef struct {
	// args name the statistic's arguments: "B" (batch size, default the
	// run's) and "K" (clusters, default B).
	args   []string
	coords bool // needs per-coordinate moments
	inner  bool // needs per-example g_i·μ
	gram   bool // needs the Gram matrix (Gradient Clustering)
	doc    string
}

// statistics is the language's statistic table; DESIGN.md section 3 and
// docs/QUERY.md define each one.
var statistics = map[string]statDef{
	"variance":      {args: []string{"B"}, doc: "variance of the SG-B mean per coordinate: S/(B·D)"},
	"nvar":          {args: []string{"B"}, coords: true, doc: "normalized gradient variance of SG-B: mean_j v_j/(μ_j²+v_j)"},
	"gns":           {doc: "gradient noise scale B_simple = S/|μ|²"},
	"snr":           {args: []string{"B"}, coords: true, doc: "mean_j ln((μ_j²+v_j)/v_j) over coordinates with v_j > 0"},
	"norm":          {doc: "|μ|, the norm of the mean gradient"},
	"example_norm":  {doc: "mean_i |g_i|"},
	"norm_test":     {args: []string{"B"}, doc: "norm test sqrt(Σ|g_i−μ|²/((N−1)·B·|μ|²)); B = N is Cockpit's"},
	"inner_test":    {args: []string{"B"}, inner: true, doc: "inner-product test sqrt(Var(g_i·μ)/(B·|μ|⁴))"},
	"ortho_test":    {args: []string{"B"}, inner: true, doc: "orthogonality test"},
	"gc_variance":   {args: []string{"K", "B"}, gram: true, doc: "variance of Gradient Clustering with K clusters, batch B"},
	"gc_nvar":       {args: []string{"K", "B"}, gram: true, coords: true, doc: "normalized variance of Gradient Clustering"},
	"gc_distortion": {args: []string{"K"}, gram: true, doc: "weighted distortion Σ_k N_k Σ_{i∈C_k}|g_i−μ_k|² of the K-clustering"},
	"examples":      {doc: "N, the examples in a snapshot (summed when pooled)"},
	"params":        {doc: "D, the parameters in scope"},
}

// keys are the names that identify a row rather than compute a value.
var keys = map[string]bool{"step": true, "run": true, "layer": true}

func statNames() []string {
	names := make([]string, 0, len(statistics))
	for n := range statistics {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// StatisticDocs returns "name(args): description" lines for help texts.
func StatisticDocs() []string {
	var out []string
	for _, n := range statNames() {
		d := statistics[n]
		sig := n
		if len(d.args) > 0 {
			sig += "(" + strings.Join(d.args, ", ") + ")"
		}
		out = append(out, sig+": "+d.doc)
	}
	return out
}

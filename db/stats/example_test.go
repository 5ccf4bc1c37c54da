package stats_test

import (
	"fmt"

	"gvdb/db/codec"
	"gvdb/db/stats"
)

// Two examples of a 2 x 1 dense layer, stored as factors: g_1 = [1 2]ᵀ·[1]
// and g_2 = [3 0]ᵀ·[1], so μ = [2 1], S = (1/2)(|g_1−μ|² + |g_2−μ|²) = 2,
// both coordinates have variance 1 and nvar(1) = (1/(4+1) + 1/(1+1))/2.
func ExampleCompute() {
	b := &codec.Block{Kind: codec.Factored, IDs: []uint64{7, 9}, T: 1, In: 2, Out: 1,
		A: []float32{1, 2, 3, 0}, Delta: []float32{1, 1}}
	m, err := stats.Compute([]stats.Layer{{Name: "fc.weight", Block: b}}, 0, stats.Need{Coords: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	nvar, _ := m.NVar(1)
	fmt.Printf("S = %g, variance(1) = %g, gns = %g, nvar(1) = %g\n", m.TotalVar(), m.Variance(1), m.GNS(), nvar)
	// Output:
	// S = 2, variance(1) = 1, gns = 0.4, nvar(1) = 0.35
}

package stats

import (
	"fmt"

	"gvdb/db/codec"
)

// The example attributes of a stratified sample (gvdb train
// --snapshot-strata): each example's stratum (its cluster in the partition
// the sample was drawn by), that stratum's size N_k in the population the
// partition was fitted on, and the example's inclusion probability
// n_k/N_k, n_k the stratum's examples in the sample.
const (
	StratumAttr     = "stratum"
	StratumSizeAttr = "stratum_size"
	InclusionAttr   = "inclusion"
)

// Strata are a stratified sample's recorded design, per example in the
// snapshot's order: its stratum and the stratum's population size.
type Strata struct {
	Stratum, Size []int64
}

// StrataOf reads a snapshot's recorded strata from its attributes: nil
// when it records none (a uniform sample, or a full snapshot).
func StrataOf(a *codec.Attributes) (*Strata, error) {
	if a == nil {
		return nil, nil
	}
	st, sz := a.Column(StratumAttr), a.Column(StratumSizeAttr)
	if st == nil && sz == nil {
		return nil, nil
	}
	if st == nil || sz == nil || st.Type != codec.Int || sz.Type != codec.Int {
		return nil, fmt.Errorf("example attributes %s and %s must both be integers, or both absent", StratumAttr, StratumSizeAttr)
	}
	return &Strata{Stratum: st.Ints, Size: sz.Ints}, nil
}

// Disagreements counts the examples ids (in the order of s) whose
// recorded stratum is not their cluster in f, or whose recorded stratum
// size is not that cluster's size: 0 when the sample was drawn by f's
// partition (as far as its examples show).
func (f *FixedPartition) Disagreements(ids []uint64, s *Strata) int {
	bad := 0
	for i, id := range ids {
		c, ok := f.Of[id]
		if !ok || i >= len(s.Stratum) || s.Stratum[i] != int64(c) || s.Size[i] != int64(f.Sizes[c]) {
			bad++
		}
	}
	return bad
}

package report

import (
	"math/rand/v2"
	"strings"
	"testing"

	"gvdb/db/stats"
	"gvdb/db/synth"
)

// TestSummarizeMissedClusters folds stats.GC.Score's warning about
// clusters a sample misses, told per sample snapshot, into one line per
// run, and leaves every other warning as it is.
func TestSummarizeMissedClusters(t *testing.T) {
	layers := synth.MLP(6, 5, 3)
	blocks := synth.Snapshot(rand.New(rand.NewPCG(1, 2)), 5, layers)
	var ls []stats.Layer
	for _, l := range layers {
		b := blocks[l.Name]
		b.IDs = []uint64{0, 1, 2, 3, 5}
		ls = append(ls, stats.Layer{Name: l.Name, Block: b})
	}
	g, err := stats.NewGC(ls, stats.GCOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Ids 0 to 4 in cluster 0 and 5 to 9 in cluster 1: the sample has one
	// example of cluster 1.
	f := &stats.FixedPartition{K: 2, Of: map[uint64]int{}, Sizes: []int{5, 5}, N: 10}
	for id := range uint64(10) {
		f.Of[id] = int(id / 5)
	}
	_, ws, err := g.Score(f)
	if err != nil || len(ws) != 1 {
		t.Fatalf("Score: %v %q", err, ws)
	}
	got := summarize([]string{"run r step 100: " + ws[0], "something else", "run r step 300: " + ws[0], "run q step 100: " + ws[0]})
	want := []string{
		"run r: at the 2 sample snapshots of steps 100 and 300, 1 of the refit partition's clusters (50% of the population) have fewer than 2 examples in the sample and " + stats.MissedClusters + " there",
		"something else",
		"run q step 100: " + ws[0],
	}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("line %d: %q, want %q...", i, got[i], want[i])
		}
	}
}

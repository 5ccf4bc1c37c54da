package query

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"gvdb/db"
	"gvdb/db/synth"
	"gvdb/ingest"
	"gvdb/query/parser"
)

// TestClusterCountRule: one rule on K for every statistic that clusters
// (cluster(K), gc_*): a whole number from 1 to the examples available
// (each held-out half on a sample), else an error at the call saying the
// range. cluster(1e8) used to give NaN rows.
func TestClusterCountRule(t *testing.T) {
	d := testStore(t)
	for _, c := range []struct{ q, want string }{
		{"SELECT cluster(1e8) FROM 'a' WHERE step = 0", "cluster: K must be a whole number from 1 to 24 (the examples of run a at step 0), got 1e+08"},
		{"SELECT cluster(50) FROM 'a' WHERE step = 200", "cluster: K must be a whole number from 1 to 48 (the examples of run a at step 200), got 50"},
		{"SELECT gc_variance(1e9, 8) FROM 'a' WHERE step = 0", "gc_variance: K must be a whole number from 1 to 12 (each held-out half of the 24 examples of run a at step 0"},
		{"SELECT gc_variance_insample(1e9, 8) FROM 'a' WHERE step = 0", "gc_variance_insample: K must be a whole number from 1 to 24"},
		{"SELECT gc_variance(60, 8) FROM 'a' WHERE step = 200", "gc_variance: K must be a whole number from 1 to 48"},
		{"SELECT gc_distortion(20) FROM 'a' WHERE step = 0 AND label = 1", "gc_distortion: K must be a whole number from 1 to "},
		{"SELECT cluster(2.5) FROM 'a'", "cluster: K must be a whole number"},
		{"SELECT cluster(1e10) FROM 'a'", "cluster: K must be a whole number from 1 to 2147483648"},
	} {
		st, err := parser.ParseStatement(c.q)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Eval(context.Background(), d, st, Options{GCRounds: 2})
		var qe *parser.Error
		if !errors.As(err, &qe) || qe.Pos.Line != 1 || qe.Pos.Column != len("SELECT ")+1 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant 1:8: ...%s", c.q, err, c.want)
		}
	}
	st, _ := parser.ParseStatement("SELECT cluster(24), gc_variance_insample(24, 8) FROM 'a' WHERE step = 0")
	if _, err := Eval(context.Background(), d, st, Options{GCRounds: 2}); err != nil {
		t.Errorf("K = N: %v", err)
	}
}

// TestCancelReachesRows: an interrupt stops an evaluation within a second
// wherever it is, here while computing 20,000 per-example rows of a
// 9,000-term expression (minutes of work).
func TestCancelReachesRows(t *testing.T) {
	d, err := db.Open(t.TempDir(), db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	layers := synth.MLP(2, 2)
	r := &db.Run{Name: "big", Config: db.Config{Model: "mlp", Dataset: "synthetic", BatchSize: 8}}
	r.Layers = synth.Schema(layers)
	if err := d.CreateRun(r); err != nil {
		t.Fatal(err)
	}
	w, err := ingest.NewWriter(d, "big", ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	blocks := synth.Snapshot(rand.New(rand.NewPCG(1, 2)), 20000, layers)
	s := &ingest.Snapshot{Step: 0}
	for _, l := range layers {
		s.Blocks = append(s.Blocks, ingest.NamedBlock{Layer: l.Name, Block: blocks[l.Name]})
	}
	if err := w.Write(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	q := "SELECT " + strings.TrimSuffix(strings.Repeat("grad_norm + ", 9000), " + ") + " FROM 'big'"
	st, err := parser.ParseStatement(q)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err = Eval(ctx, d, st, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Eval: %v, want context.Canceled", err)
	}
	if el := time.Since(start); el > 1300*time.Millisecond {
		t.Errorf("Eval returned %s after the interrupt", el-300*time.Millisecond)
	}
}

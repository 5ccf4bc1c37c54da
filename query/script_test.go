package query

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/synth"
	"gvdb/ingest"
	"gvdb/query/parser"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/scripts")

// testStore builds a small store from seeded synthetic blocks: runs "a"
// (batch 16) and "b" (batch 8), an MLP 6-5-3, snapshots of 24 examples at
// steps 0, 100, ..., 400, scalars every 50 steps; run "b" has a NaN
// gradient at step 300. Run "a"'s snapshot at step 200 is a full one (48
// examples, ids 0 to 47), and each of its snapshots holds SVRG anchor
// blocks from the last multiple of 200 (the same blocks at 0, 200, 400).
func testStore(t testing.TB) *db.DB {
	t.Helper()
	d, err := db.Open(t.TempDir(), db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	layers := synth.MLP(6, 5, 3)
	for ri, name := range []string{"a", "b"} {
		r := &db.Run{Name: name, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Config: db.Config{Model: "mlp", Dataset: "synthetic", BatchSize: 16 / (ri + 1), LR: 0.1 / float64(ri+1), Seed: 1}}
		r.Layers = synth.Schema(layers)
		if err := d.CreateRun(r); err != nil {
			t.Fatal(err)
		}
		w, err := ingest.NewWriter(d, name, ingest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(ri+1), 7))
		for step := int64(0); step <= 400; step += 100 {
			s := &ingest.Snapshot{Step: step}
			n := 24
			if name == "a" && step == 200 {
				n, s.Population = 48, db.Full
			}
			blocks := synth.Snapshot(rng, n, layers)
			if s.Population == db.Full {
				ids := make([]uint64, n)
				for i := range ids {
					ids[i] = uint64(i)
				}
				for _, b := range blocks {
					b.IDs = ids
				}
			}
			for _, l := range layers {
				s.Blocks = append(s.Blocks, ingest.NamedBlock{Layer: l.Name, Block: blocks[l.Name]})
			}
			s.Attributes = testAttributes(blocks[layers[0].Name].IDs)
			if name == "a" {
				s.AnchorStep = step - step%200
				anchor := blocks
				if s.AnchorStep != step {
					anchor = synth.Perturbed(rng, blocks, layers, 0.3)
				}
				for _, l := range layers {
					s.Anchor = append(s.Anchor, ingest.NamedBlock{Layer: l.Name, Block: anchor[l.Name]})
				}
			}
			if name == "b" && step == 300 {
				blocks["fc2.weight"].Delta[4] = float32(math.NaN())
			}
			if err := w.Write(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		var rows []db.ScalarRow
		for step := int64(0); step <= 400; step += 50 {
			rows = append(rows, db.ScalarRow{Step: step, Values: map[string]float64{
				"loss": 2 / (1 + float64(step)/100) / float64(ri+1), "accuracy": float64(step) / 500}})
		}
		if err := d.PutScalars(name, rows); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// testAttributes are deterministic attributes of examples ids: label =
// id mod 3, example_loss = (id mod 7)/2, corrupted when id is a multiple
// of 5, duplicate_of = id-1 for odd ids above 40 (else -1).
func testAttributes(ids []uint64) *codec.Attributes {
	n := len(ids)
	a := &codec.Attributes{N: n, Columns: []codec.Column{
		{Name: "label", Type: codec.Int, Ints: make([]int64, n)},
		{Name: "example_loss", Type: codec.Float, Floats: make([]float64, n)},
		{Name: "corrupted", Type: codec.Bool, Bools: make([]bool, n)},
		{Name: "duplicate_of", Type: codec.Int, Ints: make([]int64, n)},
	}}
	for i, id := range ids {
		a.Columns[0].Ints[i] = int64(id % 3)
		a.Columns[1].Floats[i] = float64(id%7) / 2
		a.Columns[2].Bools[i] = id%5 == 0
		a.Columns[3].Ints[i] = -1
		if id > 40 && id%2 == 1 {
			a.Columns[3].Ints[i] = int64(id - 1)
		}
	}
	return a
}

// format renders a result as the scripts expect: CSV with 6 significant
// digits, warnings first.
func format(res *Result) string {
	var b strings.Builder
	for _, w := range res.Warnings {
		b.WriteString("warning: " + w + "\n")
	}
	b.WriteString(strings.Join(res.Columns, ",") + "\n")
	for _, row := range res.Rows {
		cells := make([]string, len(row))
		for i, v := range row {
			switch x := v.(type) {
			case float64:
				cells[i] = strconv.FormatFloat(x, 'g', 6, 64)
			default:
				cells[i] = fmt.Sprint(x)
			}
		}
		b.WriteString(strings.Join(cells, ",") + "\n")
	}
	return b.String()
}

// TestScripts runs testdata/scripts/*.test: blocks of "query: ..." lines
// followed by the expected output (or "error: ..."), separated by blank
// lines. go test -run Scripts -update rewrites the expectations.
func TestScripts(t *testing.T) {
	d := testStore(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "scripts", "*.test"))
	if len(files) == 0 {
		t.Fatal("no scripts in testdata/scripts")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			for _, block := range strings.Split(strings.TrimSpace(string(raw)), "\n\n") {
				lines := strings.Split(block, "\n")
				var q []string
				var comments []string
				i := 0
				for ; i < len(lines); i++ {
					if strings.HasPrefix(lines[i], "#") {
						comments = append(comments, lines[i])
						continue
					}
					if s, ok := strings.CutPrefix(lines[i], "query: "); ok {
						q = append(q, s)
						continue
					}
					break
				}
				want := strings.Join(lines[i:], "\n")
				src := strings.Join(q, "\n")
				got := run(d, src)
				if !*update && strings.TrimSpace(got) != strings.TrimSpace(want) {
					t.Errorf("%s\n--- got:\n%s\n--- want:\n%s", src, got, want)
				}
				for _, c := range comments {
					out.WriteString(c + "\n")
				}
				for _, l := range q {
					out.WriteString("query: " + l + "\n")
				}
				out.WriteString(strings.TrimSpace(got) + "\n\n")
			}
			if *update {
				if err := os.WriteFile(file, []byte(strings.TrimSpace(out.String())+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func run(d *db.DB, src string) string {
	st, err := parser.ParseStatement(src)
	if err != nil {
		return "error: " + err.Error()
	}
	res, err := Eval(context.Background(), d, st, Options{})
	if err != nil {
		return "error: " + err.Error()
	}
	return format(res)
}

// TestQueryMatchesEngine checks the evaluator's wiring against direct
// calls into the statistics engine on the same decoded blocks.
func TestQueryMatchesEngine(t *testing.T) {
	d := testStore(t)
	st, _ := parser.ParseStatement("SELECT variance, nvar(4), gns, gc_variance(4, 8), gc_variance_insample(4, 8) FROM 'a' WHERE step = 300 AND layer GLOB 'fc1.*'")
	res, err := Eval(context.Background(), d, st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := d.Run("a")
	snap, err := d.Snapshot(r, 300, db.Select{Layers: []string{"fc1.weight", "fc1.bias"}})
	if err != nil {
		t.Fatal(err)
	}
	var layers []statsLayer
	for _, b := range snap.Blocks {
		blk, err := codec.Decode(b.Data)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, statsLayer{b.Layer, blk})
	}
	want := directStats(t, layers)
	row := res.Rows[0]
	for i, w := range want {
		if got := row[i+1].(float64); math.Abs(got-w) > 1e-12*math.Abs(w) {
			t.Errorf("%s = %g, engine %g", res.Columns[i+1], got, w)
		}
	}
}

// TestCorruptBlock stores a snapshot whose block bytes are damaged: the
// query fails with an error naming the run, step and layer, never a panic.
func TestCorruptBlock(t *testing.T) {
	d := testStore(t)
	r, _ := d.Run("a")
	s, err := d.Snapshot(r, 100, db.Select{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Blocks {
		data := append([]byte(nil), s.Blocks[i].Data...)
		if s.Blocks[i].Layer == "fc2.weight" {
			data[len(data)/2] ^= 0x40
		}
		s.Blocks[i].Data = data
	}
	s.Step = 150
	if err := d.PutSnapshot("a", s); err != nil {
		t.Fatal(err)
	}
	got := run(d, "SELECT variance FROM 'a'")
	if !strings.Contains(got, "error:") || !strings.Contains(got, "step 150") || !strings.Contains(got, "fc2.weight") || !strings.Contains(got, "checksum mismatch") {
		t.Fatalf("corrupt block: %s", got)
	}
	// Layers that are not read are not checked: fc1 alone still works.
	if got := run(d, "SELECT variance FROM 'a' WHERE layer GLOB 'fc1.*' AND step = 150"); strings.Contains(got, "error") {
		t.Fatalf("fc1 query failed on fc2's damage: %s", got)
	}
}

// TestBlocksAgainstSchema stores snapshots (past the Writer's checks) whose
// blocks contradict the schema or each other: queries fail naming the run,
// step and layer instead of computing on them.
func TestBlocksAgainstSchema(t *testing.T) {
	d := testStore(t)
	r, _ := d.Run("a")
	s, err := d.Snapshot(r, 100, db.Select{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(step int64, edit func(map[string]*codec.Block)) {
		blocks := map[string]*codec.Block{}
		for _, lb := range s.Blocks {
			b, err := codec.Decode(lb.Data)
			if err != nil {
				t.Fatal(err)
			}
			blocks[lb.Layer] = b
		}
		edit(blocks)
		snap := &db.Snapshot{Step: step, N: s.N}
		for _, lb := range s.Blocks {
			data, err := codec.Encode(blocks[lb.Layer], codec.Float32)
			if err != nil {
				t.Fatal(err)
			}
			snap.Blocks = append(snap.Blocks, db.LayerBlock{Layer: lb.Layer, Data: data})
		}
		if err := d.PutSnapshot("a", snap); err != nil {
			t.Fatal(err)
		}
	}
	put(150, func(b map[string]*codec.Block) { // fc1.bias with other ids
		ids := append([]uint64(nil), b["fc1.bias"].IDs...)
		ids[0], ids[1] = ids[1], ids[0]
		b["fc1.bias"].IDs = ids
	})
	put(160, func(b map[string]*codec.Block) { // fc2.bias with 2 values per example, not 3
		o := b["fc2.bias"]
		rows := make([]float32, 0, o.N()*2)
		for i := range o.N() {
			rows = append(rows, o.Rows[i*3:i*3+2]...)
		}
		b["fc2.bias"] = &codec.Block{Kind: codec.Dense, IDs: o.IDs, Dim: 2, Rows: rows}
	})
	for _, c := range []struct{ q, want string }{
		{"SELECT variance FROM 'a' WHERE step = 150", "layer fc1.bias: corrupt metadata: its examples differ"},
		{"SELECT variance FROM 'a' WHERE step = 160", "layer fc2.bias: corrupt metadata: block header says 24 examples x 2 parameters, the manifest and schema 24 x 3"},
	} {
		if got := run(d, c.q); !strings.Contains(got, c.want) {
			t.Errorf("%s: %s", c.q, got)
		}
	}
}

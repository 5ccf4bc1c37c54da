package interchange

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
)

// Parquet tables (docs/SCALE.md): what `gvdb export --format parquet`
// writes for Spark, DuckDB or pandas, and `gvdb query --format parquet`.
// They are written with parquet-go, which costs a gvdb process little at
// start-up (arrow-go, used before, cost every command about 10 ms).
const (
	FactorsTable = "factors.parquet"
	MomentsTable = "moments.parquet"
)

// factorRow is a row of factors.parquet: one per run, step, layer and
// example. label is the example's label attribute, attributes all its
// attributes as numbers (booleans 0 or 1). A factored layer fills a (T·In
// values, row-major (t, in)) and delta (T·Out); a dense block fills grad
// (D values, gvdb's (in, out) order for weights). Absent ones are null.
type factorRow struct {
	Run        string             `parquet:"run"`
	Step       int64              `parquet:"step"`
	Population string             `parquet:"population"`
	Layer      string             `parquet:"layer"`
	ExampleID  int64              `parquet:"example_id"`
	Label      *int64             `parquet:"label,optional"`
	Attributes map[string]float64 `parquet:"attributes,optional"`
	T          int32              `parquet:"t"`
	In         int32              `parquet:"in"`
	Out        int32              `parquet:"out"`
	A          []float32          `parquet:"a,optional,list"`
	Delta      []float32          `parquet:"delta,optional,list"`
	Grad       []float32          `parquet:"grad,optional,list"`
}

// momentRow is a row of moments.parquet: one per run, step and layer, the
// sufficient statistics of the layer's N per-example gradients g_i (D
// coordinates): sum = Σ_i g_i and sumsq = Σ_i g_i∘g_i per coordinate,
// sum_sq_norm = Σ_i |g_i|², and per example (in example_id's order)
// sq_norm = |g_i|² and inner = g_i·μ (μ = sum/N, the layer's mean).
type momentRow struct {
	Run        string    `parquet:"run"`
	Step       int64     `parquet:"step"`
	Population string    `parquet:"population"`
	Layer      string    `parquet:"layer"`
	BatchSize  int64     `parquet:"batch_size"`
	N          int64     `parquet:"n"`
	D          int64     `parquet:"d"`
	Sum        []float64 `parquet:"sum,list"`
	SumSq      []float64 `parquet:"sumsq,list"`
	SumSqNorm  float64   `parquet:"sum_sq_norm"`
	ExampleID  []int64   `parquet:"example_id,list"`
	SqNorm     []float64 `parquet:"sq_norm,list"`
	Inner      []float64 `parquet:"inner,list"`
}

// compression: zstd, without dictionaries (gradient values rarely
// repeat; zstd takes the repeated names).
var compression = parquet.Compression(&zstd.Codec{})

// TableStats reports what WriteTables wrote.
type TableStats struct {
	Snapshots, FactorRows, MomentRows int
	FactorBytes, MomentBytes          int64
}

// WriteTables writes the runs' snapshots in window w as two Parquet tables
// in dir, FactorsTable and MomentsTable, all or nothing (dir must not
// exist or be empty). The moments are computed from the blocks (exactly
// what a query computes), whatever rollups the runs stored.
func WriteTables(dir string, d *db.DB, runs []*db.Run, w db.Window, opts Options, progress func(step int64)) (st TableStats, err error) {
	err = writeDir(dir, func(tmp string) error {
		st = TableStats{}
		return writeTables(tmp, d, runs, w, opts, progress, &st)
	})
	if err != nil {
		return st, err
	}
	if fi, err := os.Stat(filepath.Join(dir, FactorsTable)); err == nil {
		st.FactorBytes = fi.Size()
	}
	if fi, err := os.Stat(filepath.Join(dir, MomentsTable)); err == nil {
		st.MomentBytes = fi.Size()
	}
	return st, nil
}

// writeTables writes WriteTables' two files into tmp.
func writeTables(tmp string, d *db.DB, runs []*db.Run, w db.Window, opts Options, progress func(step int64), st *TableStats) error {
	ff, err := os.Create(filepath.Join(tmp, FactorsTable))
	if err != nil {
		return err
	}
	defer ff.Close()
	mf, err := os.Create(filepath.Join(tmp, MomentsTable))
	if err != nil {
		return err
	}
	defer mf.Close()
	fw := parquet.NewGenericWriter[factorRow](ff, compression)
	mw := parquet.NewGenericWriter[momentRow](mf, compression)
	for _, r := range runs {
		if err := writeRunTables(d, r, w, opts, fw, mw, st, progress); err != nil {
			return err
		}
	}
	return errors.Join(fw.Close(), mw.Close())
}

// writeRunTables appends run r's snapshots to the two tables, a row group
// per snapshot in each.
func writeRunTables(d *db.DB, r *db.Run, w db.Window, opts Options, fw *parquet.GenericWriter[factorRow],
	mw *parquet.GenericWriter[momentRow], st *TableStats, progress func(step int64)) error {
	return d.Snapshots(r, w, db.Select{Layers: opts.Layers, Attributes: true}, func(s *db.Snapshot) error {
		var attrs *codec.Attributes
		if len(s.Attributes) > 0 {
			var err error
			if attrs, err = codec.DecodeAttributes(s.Attributes, s.N); err != nil {
				return fmt.Errorf("%s@%d attributes: %w", r.Name, s.Step, err)
			}
		}
		for _, lb := range s.Blocks {
			b, err := codec.Decode(lb.Data)
			if err != nil {
				return fmt.Errorf("%s@%d %s: %w", r.Name, s.Step, lb.Layer, err)
			}
			rows, err := factorRows(r.Name, s, lb.Layer, b, attrs)
			if err != nil {
				return err
			}
			if _, err := fw.Write(rows); err != nil {
				return err
			}
			st.FactorRows += b.N()
			ro, err := stats.NewRollup(stats.Layer{Name: lb.Layer, Block: b}, stats.Float64Vectors)
			if err != nil {
				return fmt.Errorf("%s@%d %s: %w", r.Name, s.Step, lb.Layer, err)
			}
			if _, err := mw.Write([]momentRow{momentsRow(r, s, lb.Layer, b.IDs, ro)}); err != nil {
				return err
			}
			st.MomentRows++
		}
		// A row group per snapshot in each table: memory holds one snapshot.
		if err := errors.Join(fw.Flush(), mw.Flush()); err != nil {
			return err
		}
		st.Snapshots++
		if progress != nil {
			progress(s.Step)
		}
		return nil
	})
}

// factorRows returns a block's rows of factors.parquet (their lists share
// the block's memory).
func factorRows(run string, s *db.Snapshot, layer string, b *codec.Block, attrs *codec.Attributes) ([]factorRow, error) {
	var labels []int64
	if attrs != nil {
		for _, c := range attrs.Columns {
			if c.Name == "label" && c.Type == codec.Int {
				labels = c.Ints
			}
		}
	}
	n := b.N()
	t, in, out := b.T, b.In, b.Out
	if b.Kind != codec.Factored {
		t, in, out = 0, 0, 0
	}
	rows := make([]factorRow, n)
	for i := range rows {
		if b.IDs[i] > math.MaxInt64 {
			return nil, fmt.Errorf("%s@%d: example id %d does not fit a Parquet INT64", run, s.Step, b.IDs[i])
		}
		row := &rows[i]
		*row = factorRow{Run: run, Step: s.Step, Population: s.Population.String(), Layer: layer, ExampleID: int64(b.IDs[i]),
			T: int32(t), In: int32(in), Out: int32(out)}
		if labels != nil {
			row.Label = &labels[i]
		}
		if attrs != nil {
			row.Attributes = make(map[string]float64, len(attrs.Columns))
			for _, c := range attrs.Columns {
				switch c.Type {
				case codec.Int:
					row.Attributes[c.Name] = float64(c.Ints[i])
				case codec.Float:
					row.Attributes[c.Name] = c.Floats[i]
				default:
					row.Attributes[c.Name] = map[bool]float64{false: 0, true: 1}[c.Bools[i]]
				}
			}
		}
		if b.Kind == codec.Factored {
			row.A = b.A[i*t*in : (i+1)*t*in : (i+1)*t*in]
			row.Delta = b.Delta[i*t*out : (i+1)*t*out : (i+1)*t*out]
		} else {
			row.Grad = b.Rows[i*b.Dim : (i+1)*b.Dim : (i+1)*b.Dim]
		}
	}
	return rows, nil
}

// momentsRow returns a layer's row of moments.parquet.
func momentsRow(r *db.Run, s *db.Snapshot, layer string, ids []uint64, ro *stats.Rollup) momentRow {
	row := momentRow{Run: r.Name, Step: s.Step, Population: s.Population.String(), Layer: layer, BatchSize: int64(r.BatchSize),
		N: int64(ro.N), D: int64(ro.D), Sum: ro.Sum, SumSq: ro.SumSq, SumSqNorm: ro.SumSqNorm, SqNorm: ro.SqNorms, Inner: ro.Inner,
		ExampleID: make([]int64, len(ids))}
	for i, id := range ids {
		row.ExampleID[i] = int64(id)
	}
	return row
}

// WriteResultParquet writes a query result (columns of string, int64 or
// float64 values; NaN, no value, is written as null) as one Parquet table,
// its columns in the result's order.
func WriteResultParquet(w io.Writer, columns []string, rows [][]any) error {
	group := parquet.Group{}
	names := make([]string, len(columns))
	seen := map[string]int{}
	for c, name := range columns {
		var typ parquet.Node = parquet.Leaf(parquet.DoubleType)
		kinds := map[string]bool{}
		for _, r := range rows {
			switch r[c].(type) {
			case string:
				kinds["string"] = true
			case int64, int:
				kinds["int"] = true
			case bool:
				kinds["bool"] = true
			case nil:
			default:
				kinds["float"] = true
			}
		}
		switch {
		case kinds["string"]:
			typ = parquet.String()
		case kinds["bool"] && len(kinds) == 1:
			typ = parquet.Leaf(parquet.BooleanType)
		case kinds["int"] && len(kinds) == 1:
			typ = parquet.Int(64)
		}
		// Parquet column names must be distinct.
		if k := seen[name]; k > 0 {
			name = fmt.Sprintf("%s_%d", name, k+1)
		}
		seen[columns[c]]++
		names[c] = name
		group[name] = parquet.Optional(typ)
	}
	schema := parquet.NewSchema("result", orderedGroup{group, names})
	out := make([]parquet.Row, len(rows))
	for i, r := range rows {
		row := make(parquet.Row, len(r))
		for c, v := range r {
			var x parquet.Value
			switch group[names[c]].Type().Kind() {
			case parquet.ByteArray:
				if v != nil {
					x = parquet.ValueOf(fmt.Sprint(v))
				}
			case parquet.Int64:
				switch n := v.(type) {
				case int64:
					x = parquet.ValueOf(n)
				case int:
					x = parquet.ValueOf(int64(n))
				}
			case parquet.Boolean:
				if b, ok := v.(bool); ok {
					x = parquet.ValueOf(b)
				}
			default:
				if f, ok := toFloat(v); ok && !math.IsNaN(f) {
					x = parquet.ValueOf(f)
				}
			}
			def := 0
			if !x.IsNull() {
				def = 1
			}
			row[c] = x.Level(0, def, c)
		}
		out[i] = row
	}
	pw := parquet.NewWriter(w, schema, compression)
	_, err := pw.WriteRows(out)
	return errors.Join(err, pw.Close())
}

// orderedGroup is a Parquet group whose fields come in the given order
// (a parquet.Group's are sorted by name).
type orderedGroup struct {
	parquet.Group
	order []string
}

func (g orderedGroup) Fields() []parquet.Field {
	fields := g.Group.Fields()
	byName := make(map[string]parquet.Field, len(fields))
	for _, f := range fields {
		byName[f.Name()] = f
	}
	out := make([]parquet.Field, len(g.order))
	for i, name := range g.order {
		out[i] = byName[name]
	}
	return out
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int64:
		return float64(x), true
	case int:
		return float64(x), true
	}
	return 0, false
}

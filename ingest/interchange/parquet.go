package interchange

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"gvdb/db"
	"gvdb/db/codec"
	"gvdb/db/stats"
)

// Parquet tables (docs/SCALE.md): what `gvdb export --format parquet`
// writes for Spark, DuckDB or pandas, and `gvdb query --format parquet`.
const (
	FactorsTable = "factors.parquet"
	MomentsTable = "moments.parquet"
)

// FactorsSchema is factors.parquet: one row per run, step, layer and
// example. label is the example's label attribute, attributes all its
// attributes as numbers (booleans 0 or 1). A factored layer fills a (T·In
// values, row-major (t, in)) and delta (T·Out); a dense block fills grad
// (D values, gvdb's (in, out) order for weights).
var FactorsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "run", Type: arrow.BinaryTypes.String},
	{Name: "step", Type: arrow.PrimitiveTypes.Int64},
	{Name: "population", Type: arrow.BinaryTypes.String},
	{Name: "layer", Type: arrow.BinaryTypes.String},
	{Name: "example_id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "label", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "attributes", Type: arrow.MapOf(arrow.BinaryTypes.String, arrow.PrimitiveTypes.Float64), Nullable: true},
	{Name: "t", Type: arrow.PrimitiveTypes.Int32},
	{Name: "in", Type: arrow.PrimitiveTypes.Int32},
	{Name: "out", Type: arrow.PrimitiveTypes.Int32},
	{Name: "a", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
	{Name: "delta", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
	{Name: "grad", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
}, nil)

// MomentsSchema is moments.parquet: one row per run, step and layer, the
// sufficient statistics of the layer's N per-example gradients g_i (D
// coordinates): sum = Σ_i g_i and sumsq = Σ_i g_i∘g_i per coordinate,
// sum_sq_norm = Σ_i |g_i|², and per example (in example_id's order)
// sq_norm = |g_i|² and inner = g_i·μ (μ = sum/N, the layer's mean).
var MomentsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "run", Type: arrow.BinaryTypes.String},
	{Name: "step", Type: arrow.PrimitiveTypes.Int64},
	{Name: "population", Type: arrow.BinaryTypes.String},
	{Name: "layer", Type: arrow.BinaryTypes.String},
	{Name: "batch_size", Type: arrow.PrimitiveTypes.Int64},
	{Name: "n", Type: arrow.PrimitiveTypes.Int64},
	{Name: "d", Type: arrow.PrimitiveTypes.Int64},
	{Name: "sum", Type: arrow.ListOf(arrow.PrimitiveTypes.Float64)},
	{Name: "sumsq", Type: arrow.ListOf(arrow.PrimitiveTypes.Float64)},
	{Name: "sum_sq_norm", Type: arrow.PrimitiveTypes.Float64},
	{Name: "example_id", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64)},
	{Name: "sq_norm", Type: arrow.ListOf(arrow.PrimitiveTypes.Float64)},
	{Name: "inner", Type: arrow.ListOf(arrow.PrimitiveTypes.Float64)},
}, nil)

// writerProps: zstd, without dictionaries (gradient values rarely repeat;
// zstd takes the repeated names): 24% smaller files than with them.
func writerProps() *parquet.WriterProperties {
	return parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd), parquet.WithDictionaryDefault(false))
}

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
	arrProps := pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
	fw, err := pqarrow.NewFileWriter(FactorsSchema, ff, writerProps(), arrProps)
	if err != nil {
		return err
	}
	mw, err := pqarrow.NewFileWriter(MomentsSchema, mf, writerProps(), arrProps)
	if err != nil {
		return err
	}
	mem := memory.NewGoAllocator()
	fb := array.NewRecordBuilder(mem, FactorsSchema)
	defer fb.Release()
	mb := array.NewRecordBuilder(mem, MomentsSchema)
	defer mb.Release()
	for _, r := range runs {
		if err := writeRunTables(d, r, w, opts, fw, fb, mw, mb, st, progress); err != nil {
			return err
		}
	}
	return errors.Join(fw.Close(), mw.Close())
}

// writeRunTables appends run r's snapshots to the two tables, a row group
// per snapshot in each.
func writeRunTables(d *db.DB, r *db.Run, w db.Window, opts Options, fw *pqarrow.FileWriter, fb *array.RecordBuilder,
	mw *pqarrow.FileWriter, mb *array.RecordBuilder, st *TableStats, progress func(step int64)) error {
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
			if err := appendFactors(fb, r.Name, s, lb.Layer, b, attrs); err != nil {
				return err
			}
			st.FactorRows += b.N()
			ro, err := stats.NewRollup(stats.Layer{Name: lb.Layer, Block: b}, stats.Float64Vectors)
			if err != nil {
				return fmt.Errorf("%s@%d %s: %w", r.Name, s.Step, lb.Layer, err)
			}
			appendMoments(mb, r, s, lb.Layer, b.IDs, ro)
			st.MomentRows++
		}
		// A row group per snapshot in each table: memory holds one snapshot.
		for _, t := range []struct {
			w *pqarrow.FileWriter
			b *array.RecordBuilder
		}{{fw, fb}, {mw, mb}} {
			rec := t.b.NewRecordBatch()
			err := t.w.Write(rec)
			rec.Release()
			if err != nil {
				return err
			}
		}
		st.Snapshots++
		if progress != nil {
			progress(s.Step)
		}
		return nil
	})
}

// appendFactors adds a block's rows to factors.parquet's builder.
func appendFactors(fb *array.RecordBuilder, run string, s *db.Snapshot, layer string, b *codec.Block, attrs *codec.Attributes) error {
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
	list := func(i int, v []float32) {
		lb := fb.Field(i).(*array.ListBuilder)
		if v == nil {
			lb.AppendNull()
			return
		}
		lb.Append(true)
		lb.ValueBuilder().(*array.Float32Builder).AppendValues(v, nil)
	}
	for i := range n {
		fb.Field(0).(*array.StringBuilder).Append(run)
		fb.Field(1).(*array.Int64Builder).Append(s.Step)
		fb.Field(2).(*array.StringBuilder).Append(s.Population.String())
		fb.Field(3).(*array.StringBuilder).Append(layer)
		if b.IDs[i] > math.MaxInt64 {
			return fmt.Errorf("%s@%d: example id %d does not fit a Parquet INT64", run, s.Step, b.IDs[i])
		}
		fb.Field(4).(*array.Int64Builder).Append(int64(b.IDs[i]))
		if labels != nil {
			fb.Field(5).(*array.Int64Builder).Append(labels[i])
		} else {
			fb.Field(5).(*array.Int64Builder).AppendNull()
		}
		mb := fb.Field(6).(*array.MapBuilder)
		if attrs == nil {
			mb.AppendNull()
		} else {
			mb.Append(true)
			kb, vb := mb.KeyBuilder().(*array.StringBuilder), mb.ItemBuilder().(*array.Float64Builder)
			for _, c := range attrs.Columns {
				kb.Append(c.Name)
				switch c.Type {
				case codec.Int:
					vb.Append(float64(c.Ints[i]))
				case codec.Float:
					vb.Append(c.Floats[i])
				default:
					vb.Append(map[bool]float64{false: 0, true: 1}[c.Bools[i]])
				}
			}
		}
		fb.Field(7).(*array.Int32Builder).Append(int32(t))
		fb.Field(8).(*array.Int32Builder).Append(int32(in))
		fb.Field(9).(*array.Int32Builder).Append(int32(out))
		if b.Kind == codec.Factored {
			list(10, b.A[i*t*in:(i+1)*t*in])
			list(11, b.Delta[i*t*out:(i+1)*t*out])
			list(12, nil)
		} else {
			list(10, nil)
			list(11, nil)
			list(12, b.Rows[i*b.Dim:(i+1)*b.Dim])
		}
	}
	return nil
}

// appendMoments adds a layer's moments to moments.parquet's builder.
func appendMoments(mb *array.RecordBuilder, r *db.Run, s *db.Snapshot, layer string, ids []uint64, ro *stats.Rollup) {
	f64 := func(i int, v []float64) {
		lb := mb.Field(i).(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Float64Builder).AppendValues(v, nil)
	}
	mb.Field(0).(*array.StringBuilder).Append(r.Name)
	mb.Field(1).(*array.Int64Builder).Append(s.Step)
	mb.Field(2).(*array.StringBuilder).Append(s.Population.String())
	mb.Field(3).(*array.StringBuilder).Append(layer)
	mb.Field(4).(*array.Int64Builder).Append(int64(r.BatchSize))
	mb.Field(5).(*array.Int64Builder).Append(int64(ro.N))
	mb.Field(6).(*array.Int64Builder).Append(int64(ro.D))
	f64(7, ro.Sum)
	f64(8, ro.SumSq)
	mb.Field(9).(*array.Float64Builder).Append(ro.SumSqNorm)
	lb := mb.Field(10).(*array.ListBuilder)
	lb.Append(true)
	vb := lb.ValueBuilder().(*array.Int64Builder)
	for _, id := range ids {
		vb.Append(int64(id))
	}
	f64(11, ro.SqNorms)
	f64(12, ro.Inner)
}

// WriteResultParquet writes a query result (columns of string, int64 or
// float64 values; NaN, no value, is written as null) as one Parquet table.
func WriteResultParquet(w io.Writer, columns []string, rows [][]any) error {
	fields := make([]arrow.Field, len(columns))
	seen := map[string]int{}
	for c, name := range columns {
		var typ arrow.DataType = arrow.PrimitiveTypes.Float64
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
			typ = arrow.BinaryTypes.String
		case kinds["bool"] && len(kinds) == 1:
			typ = arrow.FixedWidthTypes.Boolean
		case kinds["int"] && len(kinds) == 1:
			typ = arrow.PrimitiveTypes.Int64
		}
		// Parquet column names must be distinct.
		if k := seen[name]; k > 0 {
			name = fmt.Sprintf("%s_%d", name, k+1)
		}
		seen[columns[c]]++
		fields[c] = arrow.Field{Name: name, Type: typ, Nullable: true}
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.NewGoAllocator(), schema)
	defer b.Release()
	for _, r := range rows {
		for c, v := range r {
			switch fb := b.Field(c).(type) {
			case *array.StringBuilder:
				if v == nil {
					fb.AppendNull()
				} else {
					fb.Append(fmt.Sprint(v))
				}
			case *array.Int64Builder:
				switch x := v.(type) {
				case int64:
					fb.Append(x)
				case int:
					fb.Append(int64(x))
				default:
					fb.AppendNull()
				}
			case *array.BooleanBuilder:
				if x, ok := v.(bool); ok {
					fb.Append(x)
				} else {
					fb.AppendNull()
				}
			case *array.Float64Builder:
				x, ok := toFloat(v)
				if !ok || math.IsNaN(x) {
					fb.AppendNull()
				} else {
					fb.Append(x)
				}
			}
		}
	}
	// The writer closes what it writes to if it can: w stays the caller's.
	fw, err := pqarrow.NewFileWriter(schema, struct{ io.Writer }{w}, writerProps(), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return err
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	return errors.Join(fw.Write(rec), fw.Close())
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

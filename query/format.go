package query

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Table is a result to print: named columns, rows of values (string,
// int, int64, float64, float32, bool, time.Time, []int or nil). Every
// command prints its listings through it, so table, CSV and JSON output
// agree everywhere (the CLI, and the JSON a server gives).
type Table struct {
	Columns []string
	Rows    [][]any
}

// Add appends a row.
func (t *Table) Add(row ...any) { t.Rows = append(t.Rows, row) }

// Formats are the output formats of Table.Write.
var Formats = []string{"table", "csv", "json"}

// CheckFormat refuses a format Table.Write does not know.
func CheckFormat(f string) error {
	if slices.Contains(Formats, f) {
		return nil
	}
	return fmt.Errorf("unknown --format %q (want table, csv or json)", f)
}

// Write prints t in the given format: "table" (aligned, floats to 6
// significant digits), "csv" (full precision), "json" (an indented array
// of objects with keys in column order; NaN is null, ±Inf "+Inf"/"-Inf")
// or "ndjson" (the same, unindented).
func (t *Table) Write(w io.Writer, format string) error {
	switch format {
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.Write(t.Columns); err != nil {
			return err
		}
		for _, r := range t.Rows {
			rec := make([]string, len(r))
			for i, v := range r {
				rec[i] = formatCell(v, false)
			}
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
		cw.Flush()
		return cw.Error()
	case "json", "ndjson":
		out := make([]map[string]any, len(t.Rows))
		for i, r := range t.Rows {
			obj := make(map[string]any, len(r))
			for j, v := range r {
				obj[t.Columns[j]] = jsonValue(v)
			}
			out[i] = obj
		}
		enc := json.NewEncoder(w)
		if format == "json" {
			enc.SetIndent("", "  ")
		}
		return enc.Encode(orderedRows{t.Columns, out})
	default:
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, strings.Join(t.Columns, "\t")+"\t")
		for _, r := range t.Rows {
			cells := make([]string, len(r))
			for i, v := range r {
				cells[i] = formatCell(v, true)
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
		}
		return tw.Flush()
	}
}

// orderedRows marshals rows as JSON objects with keys in column order.
type orderedRows struct {
	cols []string
	rows []map[string]any
}

func (o orderedRows) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteString("[")
	for i, r := range o.rows {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("{")
		for j, c := range o.cols {
			if j > 0 {
				b.WriteString(",")
			}
			k, _ := json.Marshal(c)
			v, err := json.Marshal(r[c])
			if err != nil {
				return nil, err
			}
			b.Write(k)
			b.WriteString(":")
			b.Write(v)
		}
		b.WriteString("}")
	}
	b.WriteString("]")
	return []byte(b.String()), nil
}

// jsonValue maps values that JSON numbers cannot hold: NaN (no value) to
// null, ±Inf to the strings "+Inf" and "-Inf".
func jsonValue(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) {
			return nil
		}
		if math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
	case float32:
		return jsonValue(float64(x))
	case time.Time:
		return x.Format(time.RFC3339)
	}
	return v
}

// formatCell formats one value; short rounds floats to 6 significant digits.
func formatCell(v any, short bool) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		if short {
			return strconv.FormatFloat(x, 'g', 6, 64)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case float32:
		return formatCell(float64(x), short)
	case time.Time:
		return x.Format("2006-01-02 15:04:05")
	case []int:
		s := make([]string, len(x))
		for i, n := range x {
			s[i] = strconv.Itoa(n)
		}
		return strings.Join(s, "x")
	}
	return fmt.Sprint(v)
}

// Table returns the result's columns and rows as a Table.
func (r *Result) Table() *Table { return &Table{Columns: r.Columns, Rows: r.Rows} }

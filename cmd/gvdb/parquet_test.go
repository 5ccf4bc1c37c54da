package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// duckdbScript runs docs/SCALE.md's SQL blocks in DuckDB (@duckdb/node-api)
// on an exported moments table, and reads back a query's Parquet file and
// the factors table: it prints one JSON object of result rows.
const duckdbScript = `
import { DuckDBInstance } from '@duckdb/node-api';
import { readFileSync } from 'fs';
const [doc, dir, result] = process.argv.slice(2);
const text = readFileSync(doc, 'utf8');
const block = (name) => {
  const parts = text.split('<!-- sql:' + name + ' -->\n` + "```sql" + `\n');
  if (parts.length != 2) throw new Error('docs/SCALE.md: no sql:' + name + ' block');
  return parts[1].split('` + "```" + `')[0].replaceAll("'moments.parquet'", "'" + dir + "/moments.parquet'")
    .replaceAll("'factors.parquet'", "'" + dir + "/factors.parquet'");
};
const inst = await DuckDBInstance.create(':memory:');
const c = await inst.connect();
const out = {};
await c.run(block('setup'));
for (const name of ['snapshot', 'window-mean', 'window-pooled', 'run', 'attributes']) {
  let r;
  for (const s of block(name).split(';').map(s => s.trim()).filter(s => s)) r = await c.runAndReadAll(s);
  out[name] = r.getRowObjectsJson();
}
out.result = (await c.runAndReadAll("SELECT * FROM read_parquet('" + result + "')")).getRowObjectsJson();
out.factors = (await c.runAndReadAll(
  "SELECT f.step, f.layer, count(*) AS rows, sum(list_sum([x::DOUBLE * x for x in a]) * list_sum([x::DOUBLE * x for x in delta])) AS sq, max(m.sum_sq_norm) AS want, " +
  "bool_and(f.attributes['label'] = f.label) AS labels, count(f.attributes['example_loss']) AS losses " +
  "FROM read_parquet('" + dir + "/factors.parquet') f JOIN read_parquet('" + dir + "/moments.parquet') m " +
  "ON f.run = m.run AND f.step = m.step AND f.layer = m.layer WHERE f.t = 1 GROUP BY f.step, f.layer")).getRowObjectsJson();
console.log(JSON.stringify(out));
`

// duckdbDir returns the directory where npm installed @duckdb/node-api
// (GVDB_DUCKDB_DIR, set by .ci/run). Where there is none, the test fails
// in CI (GVDB_REQUIRE_DUCKDB=1) and is skipped loudly elsewhere.
func duckdbDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("GVDB_DUCKDB_DIR")
	_, err := os.Stat(filepath.Join(dir, "node_modules", "@duckdb", "node-api"))
	if _, nerr := exec.LookPath("node"); dir != "" && err == nil && nerr == nil {
		return dir
	}
	missing(t, "GVDB_REQUIRE_DUCKDB", "no DuckDB: set GVDB_DUCKDB_DIR to a directory where `npm install @duckdb/node-api` ran (node on PATH); docs/SCALE.md's SQL is NOT tested")
	return ""
}

// TestParquetDuckDB exports a run as Parquet, runs docs/SCALE.md's SQL in
// real DuckDB, and checks per-snapshot, window-mean, pooled-window and
// per-run variance, nvar and gns against gvdb's to 1e-9; it also reads a
// query's Parquet output and checks the factors table against the moments.
func TestParquetDuckDB(t *testing.T) {
	// Parallel: much of it is a child process (Python, node, a second
	// store) that overlaps the package's other parallel tests; it changes
	// no environment or working directory.
	t.Parallel()
	duck := duckdbDir(t)
	src := trainedStore(t)
	out := filepath.Join(t.TempDir(), "tables")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "mlp", "--format", "parquet", "--out", out); code != exitOK {
		t.Fatalf("export: %s", errs)
	}
	resultQ := "SELECT variance, nvar, loss FROM 'mlp' GROUP BY layer"
	result := filepath.Join(t.TempDir(), "result.parquet")
	if _, errs, code := gvdb(t, "query", "--db", src, "--format", "parquet", "--out", result, resultQ); code != exitOK {
		t.Fatalf("query --format parquet: %s", errs)
	}
	script := filepath.Join(duck, fmt.Sprintf("gvdb-scale-test-%d.mjs", os.Getpid()))
	if err := os.WriteFile(script, []byte(duckdbScript), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(script)
	doc, _ := filepath.Abs("../../docs/SCALE.md")
	duckdb := func(tables string) map[string][]map[string]any {
		b, err := exec.Command("node", script, doc, tables, result).CombinedOutput()
		if err != nil {
			t.Fatalf("DuckDB: %v\n%s", err, b)
		}
		var got map[string][]map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("DuckDB output: %v\n%s", err, b)
		}
		return got
	}
	got := duckdb(out)
	num := func(v any) float64 {
		switch x := v.(type) {
		case float64:
			return x
		case string:
			f, _ := strconv.ParseFloat(x, 64)
			return f
		}
		return math.NaN()
	}
	// DuckDB's SQL over the float64 moments is gvdb's block path (the
	// default answer, from float32 rollup vectors, is within 1e-6).
	compare := func(name, q, key string) {
		csv, errs, code := gvdb(t, "query", "--db", src, "--format", "csv", "--from-blocks", q)
		if code != exitOK {
			t.Fatalf("%s: %s", q, errs)
		}
		lines := strings.Split(strings.TrimSpace(csv), "\n")
		rows := got[name]
		if len(rows) != len(lines)-1 || len(rows) == 0 {
			t.Fatalf("%s: DuckDB %d rows, gvdb:\n%s", name, len(rows), csv)
		}
		for i, l := range lines[1:] {
			f := strings.Split(l, ",")
			if key != "" && f[0] != fmt.Sprint(rows[i][key]) {
				t.Errorf("%s row %d: gvdb %s %s, DuckDB %v", name, i, key, f[0], rows[i][key])
			}
			for j, col := range []string{"variance", "nvar", "gns"} {
				want, _ := strconv.ParseFloat(f[len(f)-3+j], 64)
				if g := num(rows[i][col]); !(math.Abs(g-want) <= 1e-9*math.Abs(want)) {
					t.Errorf("%s row %d %s: DuckDB %.17g, gvdb %.17g", name, i, col, g, want)
				}
			}
		}
	}
	compare("snapshot", "SELECT variance, nvar, gns FROM 'mlp'", "step")
	compare("window-mean", "SELECT variance, nvar, gns FROM 'mlp' GROUP BY window(20)", "window_start")
	compare("window-pooled", "SELECT pooled(variance), pooled(nvar), pooled(gns) FROM 'mlp' GROUP BY window(20)", "window_start")
	compare("run", "SELECT variance, nvar, gns FROM 'mlp' GROUP BY window(1000000)", "")

	// Several runs in one pair of tables: per snapshot and per run, keyed
	// by run (full snapshots of 2000 examples and samples of 64 mixed).
	sweep := filepath.Join(t.TempDir(), "sweep")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "lr-*", "--format", "parquet", "--out", sweep); code != exitOK || !strings.Contains(errs, "(2 runs)") {
		t.Fatalf("export of a glob: exit %d, %s", code, errs)
	}
	got = duckdb(sweep)
	compare("snapshot", "SELECT variance, nvar, gns FROM 'lr-*'", "run")
	compare("run", "SELECT variance, nvar, gns FROM 'lr-*' GROUP BY run, window(1000000)", "run")
	if _, errs, code := gvdb(t, "export", "--db", src, "--run", "lr-*", "--out", filepath.Join(t.TempDir(), "x")); code != exitUsage || !strings.Contains(errs, "only --format parquet") {
		t.Errorf("a glob without --format parquet: exit %d, %s", code, errs)
	}
	got = duckdb(out)

	// The query's Parquet file holds its CSV's values.
	csv, _, _ := gvdb(t, "query", "--db", src, "--format", "csv", resultQ)
	lines := strings.Split(strings.TrimSpace(csv), "\n")
	if len(got["result"]) != len(lines)-1 || lines[0] != "layer,step,variance,nvar,loss" {
		t.Fatalf("query parquet: %d rows, CSV:\n%s", len(got["result"]), csv)
	}
	for i, l := range lines[1:] {
		f, r := strings.Split(l, ","), got["result"][i]
		if r["layer"] != f[0] || fmt.Sprint(r["step"]) != f[1] {
			t.Errorf("row %d: parquet %v, csv %s", i, r, l)
		}
		for j, col := range []string{"variance", "nvar", "loss"} {
			if want, _ := strconv.ParseFloat(f[2+j], 64); num(r[col]) != want {
				t.Errorf("row %d %s: parquet %v, csv %s", i, col, r[col], f[2+j])
			}
		}
	}
	// The attributes example runs: one group per snapshot (this run has no
	// corrupted attribute), each of the snapshot's 64 examples.
	if rows := got["attributes"]; len(rows) != len(queryRows(t, src, "SELECT variance FROM 'mlp'")) {
		t.Errorf("attributes example: %v", rows)
	} else {
		for _, r := range rows {
			if num(r["examples"]) != 64 || !(num(r["mean_sq_norm"]) > 0) {
				t.Errorf("attributes example row %v", r)
			}
		}
	}
	// Factors: Σ_i |a_i|² |δ_i|² (T = 1) is the moments' Σ_i |g_i|², in float32.
	if len(got["factors"]) == 0 {
		t.Fatal("factors table: no factored layers")
	}
	for _, r := range got["factors"] {
		if sq, want := num(r["sq"]), num(r["want"]); num(r["rows"]) != 64 || !(math.Abs(sq-want) <= 1e-9*want) {
			t.Errorf("factors %v: want 64 examples and sum %g", r, want)
		}
		if r["labels"] != true || num(r["losses"]) != 64 {
			t.Errorf("factors %v: want attributes['label'] = label and 64 example losses", r)
		}
	}
}

// queryRows returns a query's CSV data rows.
func queryRows(t *testing.T, db, q string) []string {
	t.Helper()
	csv, errs, code := gvdb(t, "query", "--db", db, "--format", "csv", q)
	if code != exitOK {
		t.Fatalf("%s: %s", q, errs)
	}
	return strings.Split(strings.TrimSpace(csv), "\n")[1:]
}

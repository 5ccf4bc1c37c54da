package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	flag "github.com/spf13/pflag"

	"gvdb/db"
	"gvdb/db/stats"
	"gvdb/ingest/interchange"
	"gvdb/plots"
	"gvdb/query"
	"gvdb/query/outfile"
	"gvdb/query/parser"
	"gvdb/query/prompt"
)

func init() {
	register("query", "run queries: statistics over runs, steps and layers", (*Main).query)
}

const queryHelp = `Run one query (given as an argument), the statements read from standard
input (separated by ';'; each runs on its own: one that fails is reported
with its line:column and the others still run, unless --bail; the exit
status is 1 if any failed; 'exit' ends the input), or, on a terminal with
no query, an interactive prompt (multi-line input ends at ';' or a blank
line; 'help', 'exit'). Flags may come before or after the query; with
--format json, several statements print one JSON array per line (NDJSON).

Statements:
  SHOW RUNS | SHOW LAYERS FROM 'r' | SHOW STEPS FROM 'r' | SHOW SCALARS FROM 'r'
  SELECT item [AS name], ... FROM 'run' [, 'glob*' ...]
      [WHERE step >= 1000 AND step < 5000 AND layer IN ('fc1.weight') AND run GLOB 'lr-*'
             AND population = 'full' AND label = 3 AND NOT corrupted AND config.lr = 0.1]
      [GROUP BY window(500) | step, run, layer, label, config.lr] [HAVING nvar > 0.8]
      [ORDER BY column [DESC]] [LIMIT n]
  PLOT item, ... FROM ... [WHERE ...] [GROUP BY ...] [SCALE LOG|LINEAR] [TITLE 'text'] TO 'file.png|svg|pdf'

A snapshot's population is a sample or the full training set (train
--full-snapshot-every; an imported run: cap.snapshot(..., population="full")
in python/gvdb_capture.py): Gradient Clustering is in-sample on a full
snapshot and held out on a sample (gc_*_insample: always in-sample).

WHERE on an example attribute (label, example_loss, true_label, corrupted,
duplicate_of) chooses the examples every statistic covers; config.x
(lr, batch_size, seed, model, corrupt_labels, ...) chooses runs. Per-example
items (example_id, grad_norm, cos_to_mean, cluster(K), attributes) give one
row per example. mean(x), stddev(x) and count(run) aggregate over the runs
of a GROUP BY config.x group; ci(stat[, level]) is a bootstrap interval
over a snapshot's examples (columns stat_lo, stat_hi).

An item is arithmetic (+ - * /) over statistics, step scalars (loss,
accuracy, lr, test_accuracy, ...) and step. Statistics (B defaults to the
run's batch size, K to B):
`

func (m *Main) query(ctx context.Context, args []string) error {
	fs := m.newFlags("query [flags] ['QUERY']", queryHelp+"  "+strings.Join(query.StatisticDocs(), "\n  ")+`

A window's value is the mean over its snapshots; pooled(stat) instead
treats all the window's examples as one population.`, `  gvdb query 'SHOW RUNS'
  gvdb query "SELECT step, variance, nvar, gns FROM 'mlp'"
  gvdb query "SELECT variance(128), nvar(128) FROM 'mlp' WHERE step >= 1000 GROUP BY window(500)"
  gvdb query "SELECT nvar FROM 'mlp' GROUP BY layer"
  gvdb query "SELECT gc_variance(128, 128) / variance(128) AS gain FROM 'mlp'"
  gvdb query --format csv "SELECT nvar FROM 'lr-*' GROUP BY run, window(1000)" > nvar.csv
  echo "SHOW RUNS; SHOW LAYERS FROM 'mlp'" | gvdb query
  gvdb query --bail --format json < script.sql     # NDJSON: one line per statement
  gvdb query "SELECT nvar FROM 'mlp' WHERE step = 1000 GROUP BY label"
  gvdb query "SELECT example_id, label, grad_norm FROM 'mlp' WHERE step = 1000 ORDER BY grad_norm DESC LIMIT 10"
  gvdb query "SELECT mean(nvar), stddev(nvar), count(run) FROM 'seed-*' GROUP BY config.lr, window(500)"`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	format := formatFlag(fs)
	timing := fs.Bool("timing", false, "print read, decode and compute times, and the Gradient Clustering path, to standard error")
	ef := addEvalFlags(fs)
	bail := fs.Bool("bail", false, "stop at the first statement that fails (default: report it and go on)")
	outFile := fs.String("out", "", "with --format parquet: the Parquet file to write (one SELECT; docs/SCALE.md)")
	ff := addFigureFlags(fs)
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	fo, err := ff.options("")
	if err != nil {
		return err
	}
	if *format == "parquet" {
		if *outFile == "" {
			return usagef("query: --format parquet writes a file: give --out FILE")
		}
		if err := m.fileWrites("query", *outFile); err != nil {
			return err
		}
	} else if err := checkFormat(*format); err != nil {
		return err
	} else if *outFile != "" {
		return usagef("query: --out is for --format parquet (other formats print to standard output)")
	}
	d, err := openStore(*dir)
	if err != nil {
		return err
	}
	opts, err := ef.options()
	if err != nil {
		d.Close()
		return err
	}
	opts.NoFileWrites = m.noWrites
	out := output{format: *format, timing: *timing, opts: opts, file: *outFile, figure: fo}
	defer d.Close()
	// run runs a script's statements one by one: a statement that fails
	// is reported with its position and the rest still run (unless
	// --bail); the exit status is 1 if any failed. "exit" ends the script.
	run := func(src string) error {
		chunks := parser.Split(parser.Until(src))
		if out.format == "parquet" && len(chunks) != 1 {
			return usagef("query: --format parquet writes one statement's result to --out (got %d statements)", len(chunks))
		}
		if len(chunks) > 1 && out.format == "json" {
			out.format = "ndjson" // one JSON document per statement, one per line
		}
		failed, ran := 0, 0
		for _, c := range chunks {
			if ran > 0 && out.format == "table" {
				fmt.Fprintln(m.Stdout)
			}
			ran++
			st, err := parser.ParseChunk(c)
			if err == nil {
				err = m.runStatement(ctx, d, st, out)
			}
			if err != nil {
				if len(chunks) == 1 || errors.Is(err, context.Canceled) {
					return err
				}
				failed++
				var qe *parser.Error
				if errors.As(err, &qe) && qe.Pos.Line > 0 {
					fmt.Fprintf(m.Stderr, "gvdb: %v\n", err)
				} else {
					fmt.Fprintf(m.Stderr, "gvdb: statement at %d:%d: %v\n", c.Pos.Line, c.Pos.Column, err)
				}
				if *bail {
					return scriptErr(failed, ran)
				}
			}
		}
		return scriptErr(failed, ran)
	}
	switch {
	case len(rest) > 0:
		return run(strings.Join(rest, " "))
	case m.Interactive && out.format == "parquet":
		return usagef("query: --format parquet writes a file: give the query as an argument or on standard input")
	case m.Interactive:
		return m.interactive(ctx, d, out)
	default:
		src, err := io.ReadAll(m.Stdin)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(src)) == "" {
			return usagef("query: no query given (pass one as an argument or on standard input)")
		}
		return run(string(src))
	}
}

// runStatement evaluates one statement and prints its result.
func (m *Main) runStatement(ctx context.Context, d *db.DB, st parser.Statement, out output) error {
	start := time.Now()
	var bar *progress
	opts := out.opts
	format, timing := out.format, out.timing
	opts.MeasureMemory = timing
	if m.Interactive { // else the query need not count its snapshots
		opts.Progress = func(done, total int) {
			if bar == nil {
				bar = m.newProgress("query", int64(total))
			}
			bar.update(int64(done), "snapshots")
		}
	}
	res, err := query.Eval(ctx, d, st, opts)
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(m.Stderr, "warning:", w)
	}
	if res.Plot != nil {
		o := out.figure // --width, --height, --style, ...; the PLOT's TITLE and SCALE unless given
		o.Title, o.Scale, o.InQuery = cmp.Or(o.Title, res.Plot.Title), cmp.Or(o.Scale, res.Plot.Scale), true
		if err := m.saveLines(res, res.Plot.File, o); err != nil {
			return err
		}
	} else if format == "parquet" {
		if err := writeParquetFile(out.file, res); err != nil {
			return err
		}
		fmt.Fprintf(m.Stderr, "wrote %d rows to %s\n", len(res.Rows), out.file)
	} else if err := res.Table().Write(m.Stdout, format); err != nil {
		return err
	}
	if timing {
		s := res.Stats
		fmt.Fprintf(m.Stderr, "%d rows in %s: %d snapshots (%d from rollups), %s read in %s, decoded in %s, computed in %s (summed over workers), peak heap %s\n",
			len(res.Rows), time.Since(start).Round(time.Millisecond), s.Snapshots, s.FromRollups, humanBytes(s.BytesRead),
			s.Read.Round(time.Millisecond), s.Decode.Round(time.Millisecond), s.Compute.Round(time.Millisecond), humanBytes(s.PeakHeap))
		for _, p := range s.GC {
			fmt.Fprintf(m.Stderr, "gradient clustering path: %s\n", p)
		}
	}
	return nil
}

// scriptErr summarizes a script's failed statements (nil: none failed);
// each was reported as it failed.
func scriptErr(failed, ran int) error {
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d statements failed", failed, ran)
}

// output says how runStatement evaluates and prints.
type output struct {
	format string
	file   string // --format parquet: the file
	timing bool
	opts   query.Options
	figure plots.Options // PLOT ... TO: the figure flags
}

// evalFlags are the evaluation settings of commands that run queries.
type evalFlags struct {
	gcPath, memory string
	fromBlocks     bool
}

func addEvalFlags(fs *flag.FlagSet) *evalFlags {
	f := &evalFlags{}
	fs.StringVar(&f.gcPath, "gc-path", "auto", "where Gradient Clustering searches: auto (Gram matrix up to 8192 examples, else a sketch), gram or sketch")
	fs.StringVar(&f.memory, "memory", "", "memory budget for large computations, e.g. 4GiB (default: half the machine's memory)")
	fs.BoolVar(&f.fromBlocks, "from-blocks", false, "compute every statistic from the blocks (float64 throughout), not from the rollups' float32 vectors (within 1e-6; docs/QUERY.md)")
	return f
}

// options returns the query options the flags ask for.
func (f *evalFlags) options() (query.Options, error) {
	o := query.Options{NoRollups: f.fromBlocks}
	p, err := stats.ParsePath(f.gcPath)
	if err != nil {
		return o, usageError{err}
	}
	o.GCPath = p
	if f.memory != "" {
		n, err := humanize.ParseBytes(f.memory)
		if err != nil || n == 0 || n > math.MaxInt64 {
			return o, usagef("bad --memory %q (want a size such as 512MiB or 8GiB)", f.memory)
		}
		o.MemoryBudget = int64(n)
	}
	return o, nil
}

func (m *Main) historyFile() string {
	if m.noWrites {
		return "" // --no-file-writes: no history file either
	}
	if h := os.Getenv("GVDB_HISTORY"); h != "" {
		return h
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".gvdb_history")
	}
	return ""
}

func (m *Main) newLineReader() prompt.Reader {
	f, ok := m.Stdin.(*os.File)
	return prompt.New(m.Stdin, m.Stderr, ok && isTerminal(f), m.historyFile())
}

// interactive is the interactive query loop: a query ends at ';' or a blank
// line (a first line that is a whole query runs at once); arrow keys
// recall earlier queries; Ctrl-C clears the current input or stops the
// running query; Ctrl-D or 'exit' quits.
func (m *Main) interactive(ctx context.Context, d *db.DB, out output) error {
	fmt.Fprintln(m.Stderr, "gvdb query prompt: end a query with ';' or a blank line; 'help' lists statistics, 'exit' quits.")
	in := m.newLineReader()
	defer in.Close()
	var buf strings.Builder
	for {
		if err := ctx.Err(); err != nil {
			return nil
		}
		p := "gvdb> "
		if buf.Len() > 0 {
			p = "   -> "
		}
		line, err := in.ReadLine(p)
		if errors.Is(err, prompt.ErrInterrupt) {
			buf.Reset()
			continue
		}
		if err != nil {
			fmt.Fprintln(m.Stderr)
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		trimmed := strings.TrimSpace(line)
		if buf.Len() == 0 {
			switch strings.ToLower(strings.TrimSuffix(trimmed, ";")) {
			case "":
				continue
			case "exit", "quit", `\q`:
				return nil
			case "help":
				fmt.Fprintln(m.Stdout, strings.Join(query.StatisticDocs(), "\n"))
				continue
			}
		}
		first := buf.Len() == 0
		buf.WriteString(line + "\n")
		src := buf.String()
		// A query ends at ';' or a blank line; a first line that is a
		// whole query on its own runs at once.
		complete := strings.HasSuffix(trimmed, ";") || trimmed == ""
		if !complete && first {
			_, err := parser.Parse(src)
			complete = !errors.Is(err, parser.ErrIncomplete)
		}
		if !complete {
			continue
		}
		buf.Reset()
		in.Remember(strings.Join(strings.Fields(src), " "))
		script, err := parser.Parse(src)
		if err != nil {
			fmt.Fprintln(m.Stderr, "error:", err)
			continue
		}
		for _, st := range script.Statements {
			sctx, done := m.statementContext(ctx)
			err := m.runStatement(sctx, d, st, out)
			interrupted := sctx.Err() != nil && ctx.Err() == nil
			done()
			switch {
			case interrupted:
				fmt.Fprintln(m.Stderr, "interrupted")
			case err != nil:
				fmt.Fprintln(m.Stderr, "error:", err)
			}
			if interrupted {
				break
			}
		}
	}
}

// writeParquetFile writes a query result as a Parquet file, all or
// nothing (a temporary file renamed into place, never through a link).
func writeParquetFile(path string, res *query.Result) error {
	return outfile.WriteFile(path, func(w io.Writer) error { return interchange.WriteResultParquet(w, res.Columns, res.Rows) })
}

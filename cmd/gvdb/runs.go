package main

import (
	"context"
	"fmt"
	"io"

	flag "github.com/spf13/pflag"

	"gvdb/db"
	"gvdb/query"
	"gvdb/query/parser"
)

func init() {
	register("runs", "list the runs in a store", (*Main).runs)
}

// openWithFormat parses a reading command's flags (positional arguments
// only when positional says so), checks --format and opens the store; it
// returns the positional arguments.
func (m *Main) openWithFormat(fs *flag.FlagSet, args []string, dir, format *string, positional bool) ([]string, *db.DB, error) {
	parser := parse
	if positional {
		parser = parseArgs
	}
	rest, err := parser(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if err := checkFormat(*format); err != nil {
		return nil, nil, err
	}
	d, err := openStore(*dir)
	return rest, d, err
}

// openStore opens the store at dir for reading: read-only, so that a read
// never changes a store and several readers can share one; the store must
// exist (a mistyped --db is an error, not a new empty store).
func openStore(dir string) (*db.DB, error) {
	return db.Open(dir, db.Options{ReadOnly: true, Log: io.Discard})
}

// openWriter opens the store at dir for writing (train, delete, recover):
// it takes the exclusive lock, and creates the store if create says so.
func openWriter(dir string, create bool) (*db.DB, error) {
	return db.Open(dir, db.Options{MustExist: !create})
}

func (m *Main) runs(ctx context.Context, args []string) error {
	fs := m.newFlags("runs [flags]", "List the runs in a store with their model, data, schedule and snapshots.", `  gvdb runs
  gvdb runs --db ./lr-sweep --format csv`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	format := formatFlag(fs)
	_, d, err := m.openWithFormat(fs, args, dir, format, false)
	if err != nil {
		return err
	}
	defer d.Close()
	// The same table as the query language's SHOW RUNS.
	res, err := query.Eval(ctx, d, &parser.Show{What: "RUNS"}, query.Options{})
	if err != nil {
		return err
	}
	if len(res.Rows) == 0 && *format == "table" {
		fmt.Fprintf(m.Stderr, "no runs in %s (try 'gvdb demo' or 'gvdb train')\n", *dir)
		return nil
	}
	return res.Table().Write(m.Stdout, *format)
}

package main

import (
	"github.com/dustin/go-humanize"
	flag "github.com/spf13/pflag"

	"gvdb/query"
)

// formatFlag registers --format on fs.
func formatFlag(fs *flag.FlagSet) *string {
	return fs.String("format", "table", "output format: table, csv or json")
}

// checkFormat refuses an unknown --format as a usage error.
func checkFormat(f string) error {
	if err := query.CheckFormat(f); err != nil {
		return usageError{err}
	}
	return nil
}

// humanBytes formats a byte count with a binary unit (go-humanize).
func humanBytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

// Command gvdb stores per-example gradients of training runs and answers
// questions about their variance. Run 'gvdb help' for the subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"

	flag "github.com/spf13/pflag"
	"golang.org/x/term"

	"gvdb/db"
	"gvdb/db/stats"
	"gvdb/query/outfile"
	"gvdb/trainer"
)

// Version is gvdb's version, recorded in every run it creates.
const Version = "0.2.0"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed (bad query, unknown run, I/O)
	exitUsage = 2 // the command line was wrong
)

func init() {
	// The trainer's matrix products use the same BLAS as the statistics
	// (OpenBLAS when it is installed, loaded at run time; GVDB_BLAS=gonum
	// keeps pure Go).
	trainer.UseBLAS(stats.Implementation())
}

func main() {
	// A never-written ballast (no memory: its pages are never touched)
	// spares short commands the collector's cycles at a 4 MiB heap.
	ballast := make([]byte, 64<<20)
	defer runtime.KeepAlive(ballast)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := NewMain()
	// Ctrl-C (SIGINT) cancels the query running at the interactive prompt
	// if there is one, and otherwise the whole command, as SIGTERM does.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for sig := range sigs {
			if sig == os.Interrupt && m.interruptStatement() {
				continue
			}
			cancel()
		}
	}()
	os.Exit(m.Exit(m.Run(ctx, os.Args[1:])))
}

// Main is the CLI with its standard streams, so tests can drive it.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Interactive says whether Stdin and Stderr are a terminal (prompts,
	// progress bars).
	Interactive bool

	mu            sync.Mutex
	stopStatement context.CancelFunc // the prompt's running statement
	// flagSets are the commands' flags by command name, recorded by
	// newFlags when set (for completion).
	flagSets map[string]*flag.FlagSet
	noWrites bool // --no-file-writes or GVDB_NO_FILE_WRITES=1: no files outside the store
}

// statementContext returns a context for one statement at the prompt,
// which interruptStatement cancels; call done when the statement ends.
func (m *Main) statementContext(ctx context.Context) (sctx context.Context, done func()) {
	sctx, cancel := context.WithCancel(ctx)
	m.mu.Lock()
	m.stopStatement = cancel
	m.mu.Unlock()
	return sctx, func() {
		m.mu.Lock()
		m.stopStatement = nil
		m.mu.Unlock()
		cancel()
	}
}

// interruptStatement cancels the prompt's running statement and reports
// whether there was one.
func (m *Main) interruptStatement() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopStatement == nil {
		return false
	}
	m.stopStatement()
	m.stopStatement = nil
	return true
}

// NewMain returns a Main wired to the process's streams.
func NewMain() *Main {
	return &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Interactive: isTerminal(os.Stderr) && isTerminal(os.Stdin)}
}

// command is one subcommand.
type command struct {
	summary string
	run     func(m *Main, ctx context.Context, args []string) error
}

var commands = map[string]command{}

func register(name, summary string, run func(m *Main, ctx context.Context, args []string) error) {
	commands[name] = command{summary, run}
}

// usageError marks a mistake on the command line (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// Run runs the subcommand named by args[0]. A panic inside becomes an
// error: users get a message, never a stack trace.
func (m *Main) Run(ctx context.Context, args []string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v (please report this with the command line)", r)
		}
	}()
	v := os.Getenv("GVDB_NO_FILE_WRITES")
	m.noWrites = m.noWrites || v != "" && v != "0" && !strings.EqualFold(v, "false")
	if i := slices.IndexFunc(args, func(a string) bool { return !strings.HasPrefix(a, "--no-file-writes") }); i > 0 {
		args = slices.Concat(args[i:i+1], args[:i], args[i+1:]) // global flags before the command: its FlagSet takes them
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				return c.run(m, ctx, []string{"-h"})
			}
		}
		m.usage(m.Stdout)
		if len(args) == 0 {
			return usageError{errors.New("no command given")}
		}
		return nil
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintf(m.Stdout, "gvdb %s (BLAS: %s)\n", Version, stats.BLASName())
		return nil
	}
	if args[0] == "__runs" {
		return m.completeRuns(ctx, args[1:])
	}
	c, ok := commands[args[0]]
	if !ok {
		names := commandNames()
		hint := ""
		if s := db.Nearest(args[0], names); s != "" {
			hint = fmt.Sprintf("; did you mean %q?", s)
		}
		return usagef("unknown command %q%s (commands: %s)", args[0], hint, strings.Join(names, ", "))
	}
	return c.run(m, ctx, args[1:])
}

// Exit prints err (if any) and returns the process exit code for it.
func (m *Main) Exit(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, new(usageError)):
		fmt.Fprintln(m.Stderr, "gvdb:", err)
		return exitUsage
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(m.Stderr, "gvdb: interrupted")
		return exitError
	default:
		fmt.Fprintln(m.Stderr, "gvdb:", err)
		return exitError
	}
}

func commandNames() []string {
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (m *Main) usage(w io.Writer) {
	fmt.Fprintf(w, `gvdb %s: a database and query engine for per-example gradients.

Usage:
  gvdb <command> [flags]

Commands:
`, Version)
	for _, n := range commandNames() {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Every command takes -h for its flags and examples. A store is a directory
(--db, default ./gvdb-data).

Global flag (before or after the command, or GVDB_NO_FILE_WRITES=1):
--no-file-writes refuses every file outside the store (figures, reports,
exports, Parquet, PLOT ... TO, history); writes to the store go on.

Examples:
  gvdb runs
  gvdb inspect --run mlp --step 500
`)
}

// newFlags returns a FlagSet whose usage prints synopsis, the flags and the
// examples text.
func (m *Main) newFlags(name, synopsis, examples string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	if m.flagSets != nil {
		cmd, _, _ := strings.Cut(name, " ")
		m.flagSets[cmd] = fs
	}
	fs.SetOutput(m.Stderr)
	fs.BoolVar(&m.noWrites, "no-file-writes", m.noWrites, "refuse to write files outside the store (figures, reports, exports, Parquet; global; GVDB_NO_FILE_WRITES=1)")
	fs.Usage = func() {
		w := m.Stdout
		fmt.Fprintf(w, "Usage: gvdb %s\n\n%s\n\nFlags:\n", name, strings.TrimSpace(synopsis))
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(m.Stderr)
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(examples, "\n"))
	}
	return fs
}

// fileWrites refuses to write what (outside the store) with --no-file-writes.
func (m *Main) fileWrites(cmd, what string) error {
	if m.noWrites {
		return fmt.Errorf("%s: refusing to write %s: %w", cmd, what, outfile.ErrOff)
	}
	return nil
}

// parseArgs parses args into fs, flags anywhere among the positional
// arguments (after "--" everything is positional); mistakes are usage
// errors (exit 2), -h is flag.ErrHelp (exit 0). Positional arguments are
// returned.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	return fs.Args(), nil
}

// parse is parseArgs for a command that takes no positional arguments: a
// stray one is a usage error.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	rest, err := parseArgs(fs, args)
	if err == nil && len(rest) > 0 {
		name, _, _ := strings.Cut(fs.Name(), " ")
		return nil, usagef("%s: unexpected argument %q (this command takes only flags; see -h)", name, rest[0])
	}
	return rest, err
}

// isTerminal reports whether f is a terminal (not a pipe, a file or
// /dev/null).
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

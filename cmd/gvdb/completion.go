package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	flag "github.com/spf13/pflag"

	"gvdb/db"
)

func init() {
	register("completion", "print a shell completion script: bash, zsh or fish", (*Main).completion)
}

// runFlags are the flags whose values are run names, completed from the
// store (gvdb __runs).
var runFlags = map[string]bool{"run": true, "runs": true}

// commandFlags returns each command's flags, read from the FlagSet the
// command itself builds (it is asked for -h with its output discarded), so
// completion never drifts from the commands.
func (m *Main) commandFlags(ctx context.Context) map[string][]*flag.Flag {
	quiet := &Main{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard, flagSets: map[string]*flag.FlagSet{}}
	out := map[string][]*flag.Flag{}
	for _, name := range commandNames() {
		_ = commands[name].run(quiet, ctx, []string{"-h"})
		if fs := quiet.flagSets[name]; fs != nil {
			fs.VisitAll(func(f *flag.Flag) { out[name] = append(out[name], f) })
		}
	}
	return out
}

func (m *Main) completion(ctx context.Context, args []string) error {
	fs := m.newFlags("completion bash|zsh|fish", `Print a completion script for bash, zsh or fish: commands, their flags, and
run names for --run and --runs (read from the store named by --db on the
command line, else ./gvdb-data; nothing is completed while a writer holds
it).`, `  source <(gvdb completion bash)                       # bash, this shell
  gvdb completion bash > /etc/bash_completion.d/gvdb    # bash, every shell
  gvdb completion zsh > "${fpath[1]}/_gvdb"             # zsh
  gvdb completion fish > ~/.config/fish/completions/gvdb.fish`)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("completion: name one shell: bash, zsh or fish")
	}
	flags := m.commandFlags(ctx)
	switch pos[0] {
	case "bash":
		writeBash(m.Stdout, flags)
	case "zsh":
		// zsh runs the bash script through its bashcompinit layer.
		fmt.Fprint(m.Stdout, "#compdef gvdb\nautoload -U +X bashcompinit && bashcompinit\n")
		writeBash(m.Stdout, flags)
	case "fish":
		writeFish(m.Stdout, flags)
	default:
		return usagef("completion: unknown shell %q (want bash, zsh or fish)", pos[0])
	}
	return nil
}

func writeBash(w io.Writer, flags map[string][]*flag.Flag) {
	fmt.Fprintf(w, `# gvdb completion for bash (gvdb completion bash)
_gvdb() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" db="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    [[ "${COMP_WORDS[i]}" == --db ]] && db="${COMP_WORDS[i+1]}"
    [[ "${COMP_WORDS[i]}" == --db=* ]] && db="${COMP_WORDS[i]#--db=}"
  done
  if ((COMP_CWORD == 1)); then
    COMPREPLY=($(compgen -W %q -- "$cur")); return
  fi
  case "$prev" in
    --run|--runs) COMPREPLY=($(compgen -W "$(gvdb __runs --db "${db:-%s}" 2>/dev/null)" -- "$cur")); return ;;
    --db|--out) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  case "${COMP_WORDS[1]}" in
`, strings.Join(commandNames(), " "), db.DefaultDir)
	for _, name := range commandNames() {
		var words []string
		for _, f := range flags[name] {
			words = append(words, "--"+f.Name)
		}
		fmt.Fprintf(w, "    %s) COMPREPLY=($(compgen -W %q -- \"$cur\")) ;;\n", name, strings.Join(words, " "))
	}
	fmt.Fprint(w, "  esac\n}\ncomplete -o default -F _gvdb gvdb\n")
}

func writeFish(w io.Writer, flags map[string][]*flag.Flag) {
	fmt.Fprintln(w, "# gvdb completion for fish (gvdb completion fish)\ncomplete -c gvdb -f")
	for _, name := range commandNames() {
		fmt.Fprintf(w, "complete -c gvdb -n __fish_use_subcommand -a %s -d %s\n", name, fishQuote(commands[name].summary))
		for _, f := range flags[name] {
			fmt.Fprintf(w, "complete -c gvdb -n '__fish_seen_subcommand_from %s' -l %s -d %s", name, f.Name, fishQuote(f.Usage))
			if runFlags[f.Name] {
				fmt.Fprint(w, " -x -a '(gvdb __runs 2>/dev/null)'")
			} else if f.Value.Type() != "bool" {
				fmt.Fprint(w, " -r -F")
			}
			fmt.Fprintln(w)
		}
	}
}

func fishQuote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}

// completeRuns prints the store's run names, one a line: the hidden
// command the completion scripts call.
func (m *Main) completeRuns(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("__runs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("db", db.DefaultDir, "store directory")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	d, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer d.Close()
	runs, err := d.Runs()
	for _, r := range runs {
		fmt.Fprintln(m.Stdout, r.Name)
	}
	return err
}

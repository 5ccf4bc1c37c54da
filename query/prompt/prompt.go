// Package prompt reads the interactive query prompt's input a line at a
// time: with line editing and history on a terminal (readline), plainly
// from a pipe or a test's reader. It knows nothing of queries: the loop
// that splits input into statements and runs them is gvdb query's.
package prompt

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/chzyer/readline"
)

// ErrInterrupt is ReadLine's error for Ctrl-C on a terminal.
var ErrInterrupt = errors.New("interrupt")

// Reader reads the prompt's input a line at a time.
type Reader interface {
	// ReadLine shows prompt and returns the next line (io.EOF at the end,
	// ErrInterrupt for Ctrl-C).
	ReadLine(prompt string) (string, error)
	// Remember adds a whole query to the history.
	Remember(query string)
	Close() error
}

// New returns a terminal reader when terminal is set (history kept in the
// file history, "" for none), falling back to a plain one; a plain reader
// reads in and writes its prompts to echo.
func New(in io.Reader, echo io.Writer, terminal bool, history string) Reader {
	if terminal {
		rl, err := readline.NewEx(&readline.Config{
			Prompt: "gvdb> ", HistoryFile: history, DisableAutoSaveHistory: true,
			HistoryLimit: 1000, InterruptPrompt: "^C", EOFPrompt: "exit",
		})
		if err == nil {
			return &termReader{rl}
		}
	}
	return &scanReader{in: bufio.NewScanner(in), w: echo}
}

// scanReader reads lines from any reader (pipes, tests).
type scanReader struct {
	in *bufio.Scanner
	w  io.Writer
}

func (s *scanReader) ReadLine(prompt string) (string, error) {
	fmt.Fprint(s.w, prompt)
	if !s.in.Scan() {
		if err := s.in.Err(); err != nil {
			return "", err
		}
		return "", io.EOF
	}
	return s.in.Text(), nil
}

func (s *scanReader) Remember(string) {}
func (s *scanReader) Close() error    { return nil }

// termReader edits lines on a terminal.
type termReader struct{ rl *readline.Instance }

func (t *termReader) ReadLine(prompt string) (string, error) {
	t.rl.SetPrompt(prompt)
	line, err := t.rl.Readline()
	if errors.Is(err, readline.ErrInterrupt) {
		return "", ErrInterrupt
	}
	return line, err
}

func (t *termReader) Remember(q string) { _ = t.rl.SaveHistory(q) }
func (t *termReader) Close() error      { return t.rl.Close() }

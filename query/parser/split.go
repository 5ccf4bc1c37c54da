package parser

import (
	"errors"
	"strings"

	"github.com/alecthomas/participle/v2/lexer"
)

// ErrIncomplete is wrapped by the syntax error of a query that ends before
// its statement does (an unterminated statement, string or comment): more
// input may complete it.
var ErrIncomplete = errors.New("incomplete query")

// Chunk is one statement's text in a script, with where it starts.
type Chunk struct {
	Text string
	Pos  lexer.Position
}

// Split cuts a script into statements at the semicolons outside strings
// and comments, dropping empty ones, so that each can be parsed and run
// on its own (an error in one need not stop the others).
func Split(src string) []Chunk {
	var out []Chunk
	start, line, col := 0, 1, 1
	startPos := lexer.Position{Line: 1, Column: 1}
	emit := func(end int) {
		text := src[start:end]
		if strings.TrimSpace(stripComments(text)) != "" {
			out = append(out, Chunk{Text: text, Pos: startPos})
		}
	}
	advance := func(i int) {
		if src[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\'' || c == '"':
			advance(i)
			i++
			for i < len(src) {
				if src[i] == c {
					if i+1 < len(src) && src[i+1] == c {
						advance(i)
						i++
					} else {
						break
					}
				}
				advance(i)
				i++
			}
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			for i < len(src) && src[i] != '\n' {
				advance(i)
				i++
			}
			continue
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			advance(i)
			i++
			for i < len(src) && !(src[i] == '*' && i+1 < len(src) && src[i+1] == '/') {
				advance(i)
				i++
			}
			if i < len(src) {
				advance(i)
				i++
			}
		case c == ';':
			emit(i)
			advance(i)
			i++
			start, startPos = i, lexer.Position{Line: line, Column: col}
			continue
		}
		if i < len(src) {
			advance(i)
			i++
		}
	}
	emit(len(src))
	return out
}

// stripComments removes comments (roughly: for the emptiness test only).
func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, "--"); i >= 0 && !strings.ContainsAny(l[:i], `'"`) {
			l = l[:i]
		}
		b.WriteString(l + "\n")
	}
	out := b.String()
	for {
		i := strings.Index(out, "/*")
		if i < 0 {
			return out
		}
		j := strings.Index(out[i+2:], "*/")
		if j < 0 {
			return out[:i]
		}
		out = out[:i] + out[i+2+j+2:]
	}
}

// ParseChunk parses one statement of a script; its positions (in errors
// and in the tree, for evaluation errors) are in the script's coordinates.
func ParseChunk(c Chunk) (Statement, error) {
	pad := strings.Repeat("\n", max(c.Pos.Line-1, 0)) + strings.Repeat(" ", max(c.Pos.Column-1, 0))
	return ParseStatement(pad + c.Text)
}

// Until cuts a script at its first line that says exit, quit or \q (with
// or without a semicolon): what follows is not run.
func Until(src string) string {
	off := 0
	for _, line := range strings.SplitAfter(src, "\n") {
		switch strings.ToLower(strings.TrimSuffix(strings.TrimSpace(line), ";")) {
		case "exit", "quit", `\q`:
			return src[:off]
		}
		off += len(line)
	}
	return src
}

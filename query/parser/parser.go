package parser

import (
	"errors"
	"fmt"
	"strings"

	"github.com/alecthomas/participle/v2"
	"github.com/alecthomas/participle/v2/lexer"

	"gvdb/db"
)

var queryLexer = lexer.MustSimple([]lexer.SimpleRule{
	{Name: "Comment", Pattern: `--[^\n]*|/\*([^*]|\*+[^*/])*\*+/`},
	{Name: "String", Pattern: `'(?:[^']|'')*'|"(?:[^"]|"")*"`},
	{Name: "Number", Pattern: `(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?`},
	{Name: "Ident", Pattern: `[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*`},
	{Name: "Op", Pattern: `<=|>=|!=|<>|[-+*/(),;=<>]`},
	{Name: "Whitespace", Pattern: `\s+`},
})

var grammar = participle.MustBuild[Script](
	participle.Lexer(queryLexer),
	participle.Elide("Comment", "Whitespace"),
	participle.CaseInsensitive("Ident"),
	participle.Map(unquote, "String"),
	participle.Union[Statement](&Show{}, &Select{}, &Plot{}),
	participle.Union[Operand](&Number{}, &Call{}, &Name{}, &Paren{}, &Str{}),
	participle.UseLookahead(4),
)

func unquote(t lexer.Token) (lexer.Token, error) {
	q := t.Value[:1]
	t.Value = strings.ReplaceAll(t.Value[1:len(t.Value)-1], q+q, q)
	return t, nil
}

// Error is a query error with the position it refers to, and the error
// that caused it, if any (a store's NotFoundError, say).
type Error struct {
	Pos lexer.Position
	Msg string
	Err error
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Error formats the error as line:column: message.
func (e *Error) Error() string {
	if e.Pos.Line == 0 {
		return e.Msg
	}
	return fmt.Sprintf("%d:%d: %s", e.Pos.Line, e.Pos.Column, e.Msg)
}

func Errorf(pos lexer.Position, format string, args ...any) *Error {
	return &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// Limits on what Parse accepts: deeper nesting would exhaust the stack,
// longer text is not a query, and more operands in one statement would
// make its work (parsing, then evaluating every operand on every row)
// unbounded in practice.
const (
	MaxQueryBytes = 1 << 20
	MaxDepth      = 200
	MaxOperands   = 10000
)

// checkLimits refuses a query over MaxQueryBytes, nested deeper than
// MaxDepth parentheses, or with a statement of more than MaxOperands
// operands (names, numbers and strings), outside comments, with the
// position of the excess.
func checkLimits(src string) error {
	if len(src) > MaxQueryBytes {
		return &Error{Pos: lexer.Position{Line: 1, Column: 1}, Msg: fmt.Sprintf("query of %d bytes is over the limit of %d", len(src), MaxQueryBytes)}
	}
	depth, operands, line, col := 0, 0, 1, 0
	var quote, comment byte // comment: '-' to the end of the line, '*' to */
	inWord := false
	next := func(i int) byte {
		if i+1 < len(src) {
			return src[i+1]
		}
		return 0
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		col++
		word, operand := false, false
		switch {
		case c == '\n':
			line, col = line+1, 0
			if comment == '-' {
				comment = 0
			}
		case comment == '-':
		case comment == '*':
			if c == '*' && next(i) == '/' {
				comment, i, col = 0, i+1, col+1
			}
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '-' && next(i) == '-', c == '/' && next(i) == '*':
			comment, i, col = next(i), i+1, col+1
		case c == '\'' || c == '"':
			quote, operand = c, true
		case c == ';':
			operands = 0
		case c == '(':
			if depth++; depth > MaxDepth {
				return &Error{Pos: lexer.Position{Line: line, Column: col}, Msg: fmt.Sprintf("parentheses nested deeper than %d", MaxDepth)}
			}
		case c == ')':
			depth--
		case c == '_' || c == '.' || '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'z':
			word, operand = true, !inWord
		}
		if inWord = word; operand {
			if operands++; operands > MaxOperands {
				return &Error{Pos: lexer.Position{Line: line, Column: col}, Msg: fmt.Sprintf("a statement has more than %d operands (names, numbers and strings), the limit on one statement's work: split it into several statements", MaxOperands)}
			}
		}
	}
	return nil
}

// Parse parses one or more statements separated by semicolons. A syntax
// error is an *Error naming the line and column, what was found and what
// was expected.
func Parse(src string) (*Script, error) {
	if err := checkLimits(src); err != nil {
		return nil, err
	}
	s, err := grammar.ParseString("", src)
	if err != nil {
		return nil, syntaxError(err)
	}
	if len(s.Statements) == 0 {
		return nil, &Error{Pos: lexer.Position{Line: 1, Column: 1}, Msg: "empty query (try SHOW RUNS, or SELECT variance FROM 'run')"}
	}
	return s, nil
}

// ParseStatement parses exactly one statement.
func ParseStatement(src string) (Statement, error) {
	s, err := Parse(src)
	if err != nil {
		return nil, err
	}
	if len(s.Statements) != 1 {
		return nil, Errorf(s.Statements[1].Position(), "expected one statement, got %d", len(s.Statements))
	}
	return s.Statements[0], nil
}

func syntaxError(err error) error {
	var perr participle.Error
	if !errors.As(err, &perr) {
		return &Error{Msg: err.Error(), Err: err}
	}
	msg := perr.Message()
	var ut *participle.UnexpectedTokenError
	if errors.As(err, &ut) {
		found := fmt.Sprintf("%q", ut.Unexpected.Value)
		var cause error
		if ut.Unexpected.EOF() {
			found, cause = "end of query", ErrIncomplete
		}
		msg = "unexpected " + found
		// participle says what it expected as a grammar fragment; its first
		// element is what the user most likely left out.
		if _, exp, ok := strings.Cut(perr.Message(), "(expected "); ok {
			first := strings.Fields(strings.TrimSuffix(exp, ")"))
			if len(first) > 0 {
				want := strings.Trim(first[0], "()")
				msg += ", expected " + want
				kw := strings.Trim(want, `"`)
				if s := db.Nearest(ut.Unexpected.Value, []string{kw}); s != "" && ut.Unexpected.Value != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", s)
				}
			}
		}
		return &Error{Pos: perr.Position(), Msg: msg, Err: cause}
	}
	var lerr *lexer.Error
	if errors.As(err, &lerr) {
		// An unterminated string or comment.
		return &Error{Pos: perr.Position(), Msg: msg, Err: ErrIncomplete}
	}
	return &Error{Pos: perr.Position(), Msg: msg}
}

func errorsAs(err error, target **Error) bool { return errors.As(err, target) }

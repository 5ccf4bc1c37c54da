package parser

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/participle/v2/lexer"
)

var parseCases = []struct {
	in   string
	want string // canonical form; "" means the input is already canonical
	fail string // error substring when the input is invalid
}{
	{in: "SHOW RUNS"},
	{in: "show layers from 'mlp'", want: "SHOW LAYERS FROM 'mlp'"},
	{in: "SHOW STEPS FROM 'mlp'"},
	{in: "SHOW SCALARS FROM 'it''s'"},
	{in: "SELECT step, variance, nvar, gns FROM 'mlp'"},
	{in: "SELECT variance(128), nvar(128) FROM 'mlp' WHERE step >= 1000 AND step < 5000 GROUP BY window(500)"},
	{in: "SELECT nvar FROM 'mlp' WHERE layer = 'fc1.weight' GROUP BY layer"},
	{in: "SELECT variance(128), variance(256), gc_variance(128, 128) FROM 'mlp' GROUP BY window(1000)"},
	{in: "SELECT nvar FROM 'lr-0.1', 'lr-0.01' GROUP BY run, window(1000)"},
	{in: "SELECT loss, accuracy FROM 'mlp'"},
	{in: "PLOT nvar FROM 'lr-0.1', 'lr-0.01' GROUP BY run, window(500) TO 'nvar.png'"},
	{in: "plot variance from 'a' scale log to \"v.svg\"", want: "PLOT variance FROM 'a' SCALE LOG TO 'v.svg'"},
	{in: "select gc_variance(128,128)/variance(128) as gain from 'm' order by gain desc limit 3",
		want: "SELECT gc_variance(128, 128) / variance(128) AS 'gain' FROM 'm' ORDER BY gain DESC LIMIT 3"},
	{in: "SELECT -variance * 2 + (nvar - 1) / 3 FROM 'm'"},
	{in: "SELECT pooled(nvar(64)) FROM 'lr-*' WHERE run GLOB 'lr-0.*' AND layer IN ('fc1.weight', 'fc2.weight')"},
	{in: "SELECT variance FROM 'm' WHERE NOT step BETWEEN 100 AND 200 AND (step = 0 OR step > 1000)"},
	{in: "-- a comment\nSELECT /* inline */ variance FROM 'm'", want: "SELECT variance FROM 'm'"},
	{in: "SELECT variance FROM 'm' WHERE step <> 5 AND layer != 'x'"},
	{in: "", fail: "empty query"},
	{in: ";;", fail: "empty query"},
	{in: "SELECT variance FORM 'm'", fail: `1:17: unexpected "FORM", expected "FROM" (did you mean FROM?)`},
	{in: "SELECT variance(128 FROM 'm'", fail: `1:21: unexpected "FROM", expected ")"`},
	{in: "SELECT FROM 'm'", fail: "1:8:"},
	{in: "SELECT variance FROM", fail: "unexpected end of query"},
	{in: "SELECT variance FROM 'm' WHERE step >>= 3", fail: "1:38:"},
	{in: "SHOW TABLES", fail: "1:6:"},
	{in: "SELECT variance FROM 'm'\nGROUP BY windw(5)", fail: "2:15:"},
	{in: "PLOT variance FROM 'm'", fail: "expected \"TO\""},
}

// stripPos zeroes every lexer.Position in a tree, so trees parsed from
// different text compare equal.
func stripPos(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			stripPos(v.Elem())
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(lexer.Position{}) {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Field(i).CanSet() {
				stripPos(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			stripPos(v.Index(i))
		}
	}
}

func TestParse(t *testing.T) {
	for _, c := range parseCases {
		s, err := Parse(c.in)
		if c.fail != "" {
			if err == nil || !strings.Contains(err.Error(), c.fail) {
				t.Errorf("Parse(%q) = %v, want error containing %q", c.in, err, c.fail)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		want := c.want
		if want == "" {
			want = c.in
		}
		if got := s.Statements[0].String(); got != want {
			t.Errorf("Parse(%q).String() = %q, want %q", c.in, got, want)
		}
	}
}

// TestRoundTrip checks that printing a statement gives text that parses to
// the same tree.
func TestRoundTrip(t *testing.T) {
	for _, c := range parseCases {
		if c.fail != "" {
			continue
		}
		checkRoundTrip(t, c.in)
	}
}

func checkRoundTrip(t *testing.T, in string) {
	s1, err := Parse(in)
	if err != nil {
		return
	}
	for _, st := range s1.Statements {
		text := st.String()
		s2, err := ParseStatement(text)
		if err != nil {
			t.Fatalf("printed %q does not parse: %v (from %q)", text, err, in)
		}
		a, b := st, s2
		stripPos(reflect.ValueOf(&a))
		stripPos(reflect.ValueOf(&b))
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip changed the tree:\n in:  %q\n out: %q", text, s2.String())
		}
		if s2.String() != text {
			t.Fatalf("printing is not stable: %q then %q", text, s2.String())
		}
	}
}

func TestParseErrorPosition(t *testing.T) {
	_, err := Parse("SELECT variance\nFROM 'a'\nWHERE step >")
	var qe *Error
	if !errorsAs(err, &qe) || qe.Pos.Line != 3 {
		t.Fatalf("error %v: want an *Error on line 3", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, c := range parseCases {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		checkRoundTrip(t, in)
	})
}

// TestLimits: deep nesting and huge queries are positioned errors, not a
// stack overflow.
func TestLimits(t *testing.T) {
	deep := "SELECT " + strings.Repeat("(", 150000) + "1" + strings.Repeat(")", 150000) + " FROM 'a'"
	if _, err := Parse(deep); err == nil || !strings.Contains(err.Error(), "1:208: parentheses nested deeper than 200") {
		t.Errorf("deep nesting: %v", err)
	}
	if _, err := Parse(strings.Repeat(" ", MaxQueryBytes+1)); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("huge query: %v", err)
	}
	if _, err := Parse("SELECT variance FROM '(((('"); err != nil {
		t.Errorf("parentheses in a string: %v", err)
	}
}

// TestOperandLimit: a statement of more than MaxOperands operands (the
// 100,000-term query, 500 KB, under the byte cap) is refused at once with
// the position of the first operand over the limit; comments do not
// count, and each statement of a script has its own budget.
func TestOperandLimit(t *testing.T) {
	terms := func(n int) string { return strings.TrimSuffix(strings.Repeat("x + ", n), " + ") }
	big := "SELECT " + terms(100000) + " FROM 'a'"
	start := time.Now()
	_, err := Parse(big)
	var qe *Error
	if !errorsAs(err, &qe) || qe.Pos.Line != 1 || qe.Pos.Column != len("SELECT ")+4*(MaxOperands-1)+1 || !strings.Contains(qe.Msg, "operands") {
		t.Fatalf("100,000 terms: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusing took %s", d)
	}
	ok := "SELECT " + terms(MaxOperands-3) + " FROM 'a' /* " + terms(100) + " */ -- x x x\n"
	if _, err := Parse(ok + ";" + ok); err != nil {
		t.Errorf("%d operands per statement: %v", MaxOperands, err)
	}
	if _, err := Parse(strings.Replace(ok, "FROM", "+ x FROM", 1)); err == nil {
		t.Errorf("%d operands accepted", MaxOperands+1)
	}
}

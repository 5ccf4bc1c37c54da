package parser

import (
	"errors"
	"testing"
)

func TestSplit(t *testing.T) {
	src := "SHOW RUNS;\n  SELECT 'a;b' FROM \"x;\" -- c;d\n;/* e; */ ;\nSHOW STEPS FROM 'q''s;'"
	got := Split(src)
	want := []struct {
		line, col int
		prefix    string
	}{{1, 1, "SHOW RUNS"}, {1, 11, "\n  SELECT 'a;b'"}, {3, 12, "\nSHOW STEPS FROM 'q''s;'"}}
	if len(got) != len(want) {
		t.Fatalf("%d chunks: %+v", len(got), got)
	}
	for i, w := range want {
		if got[i].Pos.Line != w.line || got[i].Pos.Column != w.col || got[i].Text[:len(w.prefix)] != w.prefix {
			t.Errorf("chunk %d = %+v, want line %d col %d text %q...", i, got[i], w.line, w.col, w.prefix)
		}
	}
	// Errors carry the script's positions.
	_, err := ParseChunk(Chunk{Text: "SELECT variance FORM 'a'", Pos: got[2].Pos})
	var qe *Error
	if !errors.As(err, &qe) || qe.Pos.Line != 3 || qe.Pos.Column != 28 {
		t.Errorf("positioned error %v", err)
	}
	if got := Until("SHOW RUNS;\n  EXIT;\nSHOW RUNS"); got != "SHOW RUNS;\n" {
		t.Errorf("Until = %q", got)
	}
	for _, src := range []string{"SELECT variance FROM", "SELECT 'abc", "SHOW"} {
		if _, err := Parse(src); !errors.Is(err, ErrIncomplete) {
			t.Errorf("%q: %v is not ErrIncomplete", src, err)
		}
	}
	if _, err := Parse("SELECT FROM 'a'"); errors.Is(err, ErrIncomplete) {
		t.Errorf("a complete but wrong query is ErrIncomplete")
	}
}

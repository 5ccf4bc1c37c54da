package query

import (
	"testing"

	"gvdb/query/parser"
)

// TestTitle checks figure titles: a PLOT's TITLE, else what is plotted,
// never the query text.
func TestTitle(t *testing.T) {
	for _, c := range []struct{ q, want string }{
		{"PLOT nvar FROM 'a' TITLE 'My figure' TO 'x.png'", "My figure"},
		{"PLOT variance(128) AS 'SG-B', gc_variance(128, 128) FROM 'a', 'b*' WHERE population = 'full' TO 'x.png'", "SG-B, gc_variance(128, 128): a, b* (full snapshots)"},
		{"SELECT run, step, nvar FROM 'a' GROUP BY run", "nvar: a"},
	} {
		st, err := parser.ParseStatement(c.q)
		if err != nil {
			t.Fatal(err)
		}
		if got := Title(st); got != c.want {
			t.Errorf("Title(%s) = %q, want %q", c.q, got, c.want)
		}
		if st2, err := parser.ParseStatement(st.String()); err != nil || st2.String() != st.String() {
			t.Errorf("round trip of %s: %v", st, err)
		}
	}
}

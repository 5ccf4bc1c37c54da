package query

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gvdb/query/parser"
)

// FuzzEval evaluates arbitrary statements against the test store: errors
// are fine, panics are not. Seeds are every query of the golden scripts.
func FuzzEval(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "scripts", "*.test"))
	for _, file := range files {
		raw, _ := os.ReadFile(file)
		for _, line := range strings.Split(string(raw), "\n") {
			if q, ok := strings.CutPrefix(line, "query: "); ok && !strings.HasPrefix(q, "PLOT") {
				f.Add(q)
			}
		}
	}
	d := testStore(f)
	f.Fuzz(func(t *testing.T, src string) {
		st, err := parser.ParseStatement(src)
		if err != nil {
			return
		}
		if _, isPlot := st.(*parser.Plot); isPlot {
			return // evaluation is SELECT's; drawing belongs to the CLI
		}
		_, _ = Eval(context.Background(), d, st, Options{GCRounds: 2})
	})
}

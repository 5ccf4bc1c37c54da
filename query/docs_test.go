package query

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDocsTable checks docs/QUERY.md's statistics table against the
// statistics table: the same statistics, with the same arguments.
func TestDocsTable(t *testing.T) {
	raw, err := os.ReadFile("../docs/QUERY.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(raw), "## Statistics")
	section, _, _ = strings.Cut(section, "\n## ")
	row := regexp.MustCompile("(?m)^\\| `([^`]+)`(?:, `([^`]+)`)? \\|")
	var docs []string
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		docs = append(docs, m[1])
		if m[2] != "" {
			docs = append(docs, m[2])
		}
	}
	var code []string
	for _, d := range statistics {
		code = append(code, d.signature())
	}
	slices.Sort(docs)
	slices.Sort(code)
	if !slices.Equal(docs, code) {
		t.Errorf("docs/QUERY.md documents\n  %v\nthe code has\n  %v", docs, code)
	}
}

package main

import (
	"bytes"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLayers keeps the house's floors (docs/DESIGN.md §1): ingest and
// query never import each other (tests may, to build fixtures), db imports nothing of gvdb above it, no
// non-test Go file is over 1,000 lines, and cmd/ stays wiring (under 2,400
// lines of non-test Go).
func TestLayers(t *testing.T) {
	root := filepath.Join("..", "..")
	forbidden := map[string][]string{
		"ingest": {"gvdb/query", "gvdb/trainer", "gvdb/plots"},
		"query":  {"gvdb/ingest", "gvdb/trainer"},
		"db":     {"gvdb/ingest", "gvdb/query", "gvdb/trainer", "gvdb/plots"},
		"plots":  {"gvdb/ingest", "gvdb/trainer"},
	}
	cmdLines := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		test := strings.HasSuffix(path, "_test.go")
		lines := bytes.Count(src, []byte("\n"))
		if !test && lines > 1000 {
			t.Errorf("%s: %d lines (split it by concern)", rel, lines)
		}
		if !test && strings.HasPrefix(rel, "cmd/") {
			cmdLines += lines
		}
		if test {
			return nil // tests may build their fixtures with any package
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
		if err != nil {
			return err
		}
		top, _, _ := strings.Cut(rel, "/")
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden[top] {
				if p == bad || strings.HasPrefix(p, bad+"/") {
					t.Errorf("%s imports %s: %s must not", rel, p, top)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cmdLines >= 2400 {
		t.Errorf("cmd/ holds %d lines of non-test Go (at most 2,400: move product logic into its package)", cmdLines)
	}
}

// Package atoll_test holds repository-wide checks.
package atoll_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs: every package has exactly one doc comment ("Package x …" or, for a main,
// "Command x …"), as STYLE.md asks.
func TestPackageDocs(t *testing.T) {
	dirs := map[string][]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules" || name == "out") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, files := range dirs {
		var docs []string
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			file, err := parser.ParseFile(token.NewFileSet(), f, src, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if file.Doc != nil {
				docs = append(docs, filepath.Base(f))
				text := file.Doc.Text()
				if !strings.HasPrefix(text, "Package "+file.Name.Name) && !(file.Name.Name == "main" && strings.HasPrefix(text, "Command ")) {
					t.Errorf("%s: doc comment should start with %q", f, "Package "+file.Name.Name)
				}
			}
		}
		if len(docs) != 1 {
			t.Errorf("%s: %d doc comments (%v), want exactly one", dir, len(docs), docs)
		}
	}
}

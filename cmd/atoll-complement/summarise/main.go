// Command summarise turns the `go test -json` streams of a Complement run into
// e2e/complement/results.tsv and summary.md (package e2e/complement).
//
//	go run ./cmd/atoll-complement/summarise --out e2e/complement [--skip FILE] [--image REF] STREAM.json...
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/atoll-matrix/atoll/e2e/complement"
)

func main() {
	out := flag.String("out", "e2e/complement", "directory for results.tsv and summary.md")
	skipFile := flag.String("skip", "e2e/complement/skip.txt", "skip list (listed in the summary)")
	src := flag.String("src", "", "Complement module source directory (groups tests by file)")
	lists := map[string]string{}
	flag.Func("list", "PKG=FILE: the top-level tests of PKG (go test -list), to report those that never ran", func(v string) error {
		pkg, file, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("want PKG=FILE")
		}
		lists[pkg] = file
		return nil
	})
	var m complement.Meta
	flag.StringVar(&m.Complement, "complement", "v0.0.0-20240126134841-458bfba5f7f3", "Complement module version")
	flag.StringVar(&m.Image, "image", "", "image reference and digest")
	flag.StringVar(&m.Revision, "revision", "", "Atoll revision")
	flag.StringVar(&m.Machine, "machine", "", "machine description")
	flag.Parse()
	if err := run(*out, *skipFile, *src, lists, m, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "summarise:", err)
		os.Exit(1)
	}
}

func run(out, skipFile, src string, lists map[string]string, m complement.Meta, streams []string) error {
	if len(streams) == 0 {
		return fmt.Errorf("no go test -json streams given")
	}
	var r complement.Run
	for _, s := range streams {
		f, err := os.Open(s)
		if err != nil {
			return err
		}
		err = r.Read(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", s, err)
		}
	}
	if src != "" {
		if err := r.ReadSources(src); err != nil {
			return fmt.Errorf("read Complement sources: %w", err)
		}
	}
	for pkg, file := range lists {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		r.Expect("github.com/matrix-org/complement/"+pkg, strings.Fields(string(b)))
	}
	skips, err := complement.ReadSkipList(skipFile)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for name, write := range map[string]func(*os.File) error{
		"results.tsv": func(f *os.File) error { return r.WriteTSV(f) },
		"summary.md":  func(f *os.File) error { return r.WriteMarkdown(f, m, skips) },
	} {
		f, err := os.Create(filepath.Join(out, name))
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	top, sub := r.Count("")
	fmt.Printf("top-level: %d pass, %d fail, %d skip, %d no result (%d never started); subtests: %d pass, %d fail, %d skip, %d no result\n",
		top.Pass, top.Fail, top.Skip, top.NoResult, len(r.NeverStarted()), sub.Pass, sub.Fail, sub.Skip, sub.NoResult)
	return nil
}

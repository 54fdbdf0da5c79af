// Command atoll-chartgen writes charts/atoll/values.yaml and values.schema.json from the
// fragments in charts/atoll/source/ (make chart); with -check it fails when they are stale.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/atoll-matrix/atoll/charts/chartgen"
)

func main() {
	chart := flag.String("chart", "charts/atoll", "chart directory holding source/")
	check := flag.Bool("check", false, "only report whether the generated files are current")
	flag.Parse()
	if err := run(*chart, *check); err != nil {
		fmt.Fprintln(os.Stderr, "atoll-chartgen:", err)
		os.Exit(1)
	}
}

func run(chart string, check bool) error {
	src := filepath.Join(chart, "source")
	if !check {
		return chartgen.Write(src, chart)
	}
	f, err := chartgen.Generate(src)
	if err != nil {
		return err
	}
	for name, want := range map[string][]byte{"values.yaml": f.Values, "values.schema.json": f.Schema} {
		got, err := os.ReadFile(filepath.Join(chart, name))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s is stale: run make chart", filepath.Join(chart, name))
		}
	}
	return nil
}

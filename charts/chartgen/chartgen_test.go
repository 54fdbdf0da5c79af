package chartgen_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/atoll-matrix/atoll/charts/chartgen"
)

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, s := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"common/image.yaml": "type: object\nadditionalProperties: false\nproperties:\n  repository: {type: string}\n  tag: {type: string, default: \"\"}\n",
		"10-b.yaml": `key: b
schema:
  type: object
  properties:
    image:
      x-atoll-common: image
      properties:
        repository: {default: org/b}
    extra: {type: string, x-atoll-optional: true}
`,
		"00-a.yaml": "key: a\nschema:\n  type: integer\n  description: Number of things.\n  default: 3\n",
	})
	f, err := chartgen.Generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "# -- Number of things.\na: 3\n"
	if !strings.Contains(string(f.Values), want) {
		t.Errorf("values lack the described default %q:\n%s", want, f.Values)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(f.Values, &vals); err != nil {
		t.Fatal(err)
	}
	img := vals["b"].(map[string]any)["image"].(map[string]any)
	if img["repository"] != "org/b" || img["tag"] != "" {
		t.Errorf("merged image defaults %v", img)
	}
	if _, ok := vals["b"].(map[string]any)["extra"]; ok {
		t.Error("optional key written to values")
	}
	var schema map[string]any
	if err := json.Unmarshal(f.Schema, &schema); err != nil {
		t.Fatal(err)
	}
	if schema["additionalProperties"] != false {
		t.Error("root schema allows unknown keys")
	}
	if strings.Contains(string(f.Schema), "x-atoll-") {
		t.Error("generator keywords leaked into the schema")
	}
	imgSchema := schema["properties"].(map[string]any)["b"].(map[string]any)["properties"].(map[string]any)["image"].(map[string]any)
	if imgSchema["additionalProperties"] != false || imgSchema["properties"].(map[string]any)["repository"].(map[string]any)["type"] != "string" {
		t.Errorf("common block not merged: %v", imgSchema)
	}
}

func TestGenerateErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"leaf without default", map[string]string{"a.yaml": "key: a\nschema: {type: object, properties: {x: {type: string}}}\n"}, "a.x: no default"},
		{"unknown common", map[string]string{"a.yaml": "key: a\nschema: {x-atoll-common: nope, default: 1}\n"}, `unknown x-atoll-common "nope"`},
		{"duplicate key", map[string]string{"a.yaml": "key: a\nschema: {default: 1}\n", "b.yaml": "key: a\nschema: {default: 2}\n"}, "defined twice"},
		{"unknown field", map[string]string{"a.yaml": "key: a\nshema: {}\n"}, "field shema not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, tc.files)
			_, err := chartgen.Generate(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if tc.name == "leaf without default" && !errors.Is(err, chartgen.ErrNoDefault) {
				t.Error("not ErrNoDefault")
			}
		})
	}
}

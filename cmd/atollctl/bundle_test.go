package main

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/atoll-matrix/atoll/images/assemble"
	"github.com/atoll-matrix/atoll/images/bundle"
	"github.com/atoll-matrix/atoll/images/layer"
)

func TestBundleCmdPush(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "images")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	files := &layer.Tree{}
	files.AddFile("/usr/bin/atollctl", 0o755, []byte("bin"))
	img, err := assemble.Image(&layer.Tree{}, assemble.Spec{Title: "atollctl", Version: "0.1.0", Created: time.Unix(0, 0), Layers: []*layer.Tree{files}, Entrypoint: []string{"/usr/bin/atollctl"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{assemble.AnnotationRefName: "atoll-matrix/atollctl:0.1.0"})); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "bundle.tar")
	if err := bundle.Create(context.Background(), bundle.CreateOptions{Layout: dir, Chart: "../../charts/atoll", Out: file}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no subcommand", nil, "usage"},
		{"missing registry", []string{"push", "--bundle", file}, "--registry are required"},
		{"push", []string{"push", "--bundle", file, "--registry", host}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := bundleCmd(context.Background(), tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := img.Digest()
			ref, err := name.ParseReference(host + "/atoll-matrix/atollctl:0.1.0")
			if err != nil {
				t.Fatal(err)
			}
			desc, err := remote.Head(ref)
			if err != nil {
				t.Fatal(err)
			}
			if desc.Digest != want {
				t.Errorf("registry has %s, want %s", desc.Digest, want)
			}
		})
	}
}

func TestSecretsCmdUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", nil, "usage"},
		{"bad derive", []string{"ensure", "--derive", "novalue"}, "is not key=template"},
		{"outside a pod", []string{"ensure", "--namespace", "n", "--secret", "s", "--keys", "a"}, "in-cluster config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			err := secretsCmd(context.Background(), tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

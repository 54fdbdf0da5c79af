package charts_test

import (
	"bytes"
	encjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/release"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/atoll-matrix/atoll/charts/chartgen"
	hsconfig "github.com/atoll-matrix/atoll/homeserver/config"
	pushconfig "github.com/atoll-matrix/atoll/pushgateway/config"
	mediaconfig "github.com/atoll-matrix/atoll/sidecars/media/config"
)

const chartDir = "atoll"

// object is one rendered manifest.
type object struct {
	source string // template path
	hook   *release.Hook
	raw    []byte
	obj    runtime.Object // nil for kinds outside client-go's scheme
	kind   string
	name   string
}

func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func readValues(t testing.TB, file string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValuesFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return v.AsMap()
}

// render installs the chart client-only (what ArgoCD's helm template does) with the
// Prometheus operator and Gateway APIs present.
func render(t testing.TB, vals map[string]any) (*release.Release, error) {
	t.Helper()
	install := action.NewInstall(&action.Configuration{})
	install.ClientOnly = true
	install.DryRun = true
	install.ReleaseName = "atoll"
	install.Namespace = "matrix"
	install.APIVersions = chartutil.VersionSet{"monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor", "gateway.networking.k8s.io/v1"}
	return install.Run(loadChart(t), vals)
}

var strict = k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, k8sjson.SerializerOptions{Yaml: true, Strict: true})

// objects splits a release into objects, each decoded strictly as its Kubernetes type.
func objects(t testing.TB, rel *release.Release) []object {
	t.Helper()
	var out []object
	add := func(source string, hook *release.Hook, manifest string) {
		for _, doc := range splitDocs(manifest) {
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := sigsyaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s: %v", source, err)
			}
			o := object{source: source, hook: hook, raw: []byte(doc), kind: meta.Kind, name: meta.Metadata.Name}
			switch meta.Kind {
			case "ServiceMonitor":
				strictJSON(t, doc, &serviceMonitor{})
			case "HTTPRoute":
				strictJSON(t, doc, &httpRoute{})
			default:
				obj, _, err := strict.Decode([]byte(doc), nil, nil)
				if err != nil {
					t.Fatalf("%s: %s %s does not decode strictly: %v", source, meta.Kind, meta.Metadata.Name, err)
				}
				o.obj = obj
			}
			out = append(out, o)
		}
	}
	for _, doc := range strings.Split(rel.Manifest, "\n---\n") {
		src := ""
		if m := regexp.MustCompile(`(?m)^# Source: (.*)$`).FindStringSubmatch(doc); m != nil {
			src = m[1]
		}
		add(src, nil, doc)
	}
	for _, h := range rel.Hooks {
		add(h.Path, h, h.Manifest)
	}
	return out
}

func splitDocs(s string) []string {
	var out []string
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(s, -1) {
		body := regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")
		if strings.TrimSpace(body) != "" {
			out = append(out, d)
		}
	}
	return out
}

func strictJSON(t testing.TB, doc string, v any) {
	t.Helper()
	j, err := sigsyaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	dec := encjson.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%T does not decode strictly: %v\n%s", v, err, doc)
	}
}

// The two custom resources the chart renders, with the fields it uses.
type objectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type serviceMonitor struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type httpRoute struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		ParentRefs []struct {
			Name        string `json:"name"`
			Namespace   string `json:"namespace"`
			SectionName string `json:"sectionName"`
			Port        int    `json:"port"`
		} `json:"parentRefs"`
		Hostnames []string `json:"hostnames"`
		Rules     []struct {
			Matches []struct {
				Path struct {
					Type  string `json:"type"`
					Value string `json:"value"`
				} `json:"path"`
			} `json:"matches"`
			BackendRefs []struct {
				Name string `json:"name"`
				Port int    `json:"port"`
			} `json:"backendRefs"`
		} `json:"rules"`
	} `json:"spec"`
}

func ciFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no ci values files")
	}
	return files
}

func TestEveryComponentHasFourCIValuesFiles(t *testing.T) {
	for _, c := range []string{"homeserver", "media", "push", "postgres", "redis", "minio"} {
		for _, kind := range []string{"minimal", "checkov", "secrets-in-helm", "secrets-externally"} {
			p := filepath.Join(chartDir, "ci", c+"-"+kind+"-values.yaml")
			if _, err := os.Stat(p); err != nil {
				t.Errorf("missing %s", p)
			}
		}
	}
}

func podSpec(o runtime.Object) (*corev1.PodSpec, bool) {
	switch v := o.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template.Spec, true
	case *appsv1.StatefulSet:
		return &v.Spec.Template.Spec, true
	case *batchv1.Job:
		return &v.Spec.Template.Spec, true
	case *corev1.Pod:
		return &v.Spec, true
	}
	return nil, false
}

func TestCIValues(t *testing.T) {
	for _, file := range ciFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			vals := readValues(t, file)
			rel, err := render(t, vals)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			again, err := render(t, readValues(t, file))
			if err != nil {
				t.Fatal(err)
			}
			if rel.Manifest != again.Manifest || hooksText(rel) != hooksText(again) {
				t.Error("two renders differ")
			}
			objs := objects(t, rel)
			g, _ := vals["global"].(map[string]any)
			registry, _ := g["imageRegistry"].(string)
			workloads := map[string]bool{}
			pdbs := map[string]bool{}
			for _, o := range objs {
				if pdb, ok := o.obj.(*policyv1.PodDisruptionBudget); ok {
					pdbs[pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"]] = true
				}
				spec, ok := podSpec(o.obj)
				if !ok {
					continue
				}
				checkPod(t, o, spec, registry)
				switch w := o.obj.(type) {
				case *appsv1.Deployment:
					workloads[w.Spec.Template.Labels["app.kubernetes.io/name"]] = true
				case *appsv1.StatefulSet:
					workloads[w.Spec.Template.Labels["app.kubernetes.io/name"]] = true
				}
			}
			for _, w := range []string{"homeserver", "push"} {
				if workloads[w] && !pdbs[w] {
					t.Errorf("%s has no PodDisruptionBudget", w)
				}
			}
		})
	}
}

func hooksText(rel *release.Release) string {
	var b strings.Builder
	for _, h := range rel.Hooks {
		b.WriteString(h.Path + "\n" + h.Manifest)
	}
	return b.String()
}

func checkPod(t *testing.T, o object, spec *corev1.PodSpec, registry string) {
	t.Helper()
	where := o.kind + "/" + o.name
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext not hardened: %+v", where, psc)
	}
	longRunning := o.kind == "Deployment" || o.kind == "StatefulSet"
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		cw := where + " container " + c.Name
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s: no securityContext", cw)
			continue
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s: root filesystem writable", cw)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s: privilege escalation allowed", cw)
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s: capabilities %+v", cw, sc.Capabilities)
		case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
			t.Errorf("%s: seccomp %+v", cw, sc.SeccompProfile)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: memory request and limit required", cw)
		}
		if longRunning && (c.ReadinessProbe == nil || c.LivenessProbe == nil) {
			t.Errorf("%s: readiness and liveness probes required", cw)
		}
		if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") && !strings.Contains(c.Image, "@sha256:") {
			t.Errorf("%s: image %q is latest or untagged", cw, c.Image)
		}
		if registry != "" && !strings.HasPrefix(c.Image, registry+"/") {
			t.Errorf("%s: image %q not from %s", cw, c.Image, registry)
		}
	}
}

func TestDigestsAndRegistry(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	rel, err := render(t, map[string]any{
		"global":     map[string]any{"imageRegistry": "mirror.local:5000"},
		"homeserver": map[string]any{"image": map[string]any{"digest": d}},
	})
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]bool{}
	for _, o := range objects(t, rel) {
		if spec, ok := podSpec(o.obj); ok {
			for _, c := range spec.Containers {
				images[c.Image] = true
			}
		}
	}
	for _, want := range []string{
		"mirror.local:5000/atoll-matrix/atoll-homeserver@" + d,
		"mirror.local:5000/atoll-matrix/atoll-media:0.1.0",
		"mirror.local:5000/atoll-matrix/atollctl:0.1.0",
		"mirror.local:5000/atoll-matrix/postgres:0.1.0",
	} {
		if !images[want] {
			t.Errorf("image %s not rendered; have %v", want, images)
		}
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals string
		want string
	}{
		{"unknown top-level key", "homeservers: {}", "additional properties 'homeservers' not allowed"},
		{"unknown nested key", "homeserver: {replica: 3}", "additional properties 'replica' not allowed"},
		{"latest tag", "push: {image: {tag: latest}}", "/push/image/tag"},
		{"bad digest", "push: {image: {digest: abc}}", "/push/image/digest"},
		{"zero shards", "homeserver: {replicas: 0}", "/homeserver/replicas"},
		{"bad log level", "homeserver: {config: {log: {level: loud}}}", "/homeserver/config/log/level"},
		{"bad bucket mode", "homeserver: {media: {bucketMode: tenant}}", "/homeserver/media/bucketMode"},
		{"short admin token", "global: {adminToken: {value: short}}", "/global/adminToken/value"},
		{"bad database url", "global: {postgres: {inCluster: false, url: mysql://x}}", "/global/postgres/url"},
		{"bad push app type", "push: {apps: {x: {type: gcm}}}", "/push/apps/x/type"},
		{"bad duration", "homeserver: {config: {tenants: {idleEvict: soon}}}", "/homeserver/config/tenants/idleEvict"},
		// Rules a schema cannot express are checked by templates/zz_validation.yaml, all at once.
		{"external database without url", "global: {postgres: {inCluster: false}, redis: {inCluster: false}}", "an external PostgreSQL needs global.postgres.url"},
		{"every problem reported", "global: {postgres: {inCluster: false}, redis: {inCluster: false}}", "an external Redis needs global.redis.url"},
		{"prefix mode without bucket", "homeserver: {media: {bucketMode: prefix}}", "homeserver.media.sharedBucket: required when bucketMode is prefix"},
		{"ingress without host", "homeserver: {ingress: {enabled: true}}", "homeserver.ingress: set host"},
		{"route without gateway", "homeserver: {httpRoute: {enabled: true, host: a.example.org}}", "homeserver.httpRoute.parentRefs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(tc.vals), &vals); err != nil {
				t.Fatal(err)
			}
			_, err := render(t, vals)
			if err == nil {
				t.Fatalf("values accepted: %s", tc.vals)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestSecretsHook(t *testing.T) {
	for _, tc := range []struct {
		file     string
		wantKeys string // "" means no hook
		derive   []string
	}{
		{"homeserver-minimal-values.yaml", "--keys=admin-token,database-password,redis-password,s3-access-key,s3-secret-key", []string{"--derive=database-url=postgres://atoll:{database-password}@atoll-postgres.matrix.svc:5432/atoll?sslmode=disable", "--derive=redis-url=redis://:{redis-password}@atoll-redis.matrix.svc:6379/0"}},
		{"homeserver-secrets-in-helm-values.yaml", "", nil},
		{"homeserver-secrets-externally-values.yaml", "", nil},
		{"postgres-secrets-in-helm-values.yaml", "--keys=admin-token,redis-password,s3-access-key,s3-secret-key", []string{"--derive=redis-url=redis://:{redis-password}@atoll-redis.matrix.svc:6379/0"}},
		{"push-minimal-values.yaml", "", nil},
		{"minio-minimal-values.yaml", "--keys=s3-access-key,s3-secret-key", nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			rel, err := render(t, readValues(t, filepath.Join(chartDir, "ci", tc.file)))
			if err != nil {
				t.Fatal(err)
			}
			var job *batchv1.Job
			weights := map[string]string{}
			for _, o := range objects(t, rel) {
				if o.hook == nil || !strings.Contains(o.source, "secrets-hook") {
					continue
				}
				events := fmt.Sprint(o.hook.Events)
				if events != "[pre-install pre-upgrade]" {
					t.Errorf("%s %s: hook events %s", o.kind, o.name, events)
				}
				if !slices.Contains(o.hook.DeletePolicies, release.HookBeforeHookCreation) {
					t.Errorf("%s: hook not replaced before creation", o.kind)
				}
				weights[o.kind] = fmt.Sprint(o.hook.Weight)
				if j, ok := o.obj.(*batchv1.Job); ok {
					job = j
				}
			}
			if tc.wantKeys == "" {
				if job != nil {
					t.Fatalf("hook job rendered although every credential is supplied: %v", job.Spec.Template.Spec.Containers[0].Args)
				}
				return
			}
			if job == nil {
				t.Fatal("no hook job")
			}
			want := map[string]string{"ServiceAccount": "-10", "Role": "-10", "RoleBinding": "-10", "Job": "-5"}
			for k, w := range want {
				if weights[k] != w {
					t.Errorf("%s hook weight %q, want %s (RBAC before the job)", k, weights[k], w)
				}
			}
			args := job.Spec.Template.Spec.Containers[0].Args
			wantArgs := append([]string{"secrets", "ensure", "--namespace=matrix", "--secret=atoll-atoll-generated", tc.wantKeys}, tc.derive...)
			if !slices.Equal(args, wantArgs) {
				t.Errorf("args\n%q\nwant\n%q", args, wantArgs)
			}
		})
	}
}

func TestRoutesSendMediaToTheSidecar(t *testing.T) {
	rel, err := render(t, readValues(t, filepath.Join(chartDir, "ci", "homeserver-checkov-values.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	mediaPaths := []string{"/_matrix/media/", "/_matrix/client/v1/media/", "/_matrix/federation/v1/media/"}
	var sawIngress, sawRoute bool
	for _, o := range objects(t, rel) {
		switch o.kind {
		case "Ingress":
			sawIngress = true
			ing := o.obj.(interface{ GetName() string })
			_ = ing
			var got map[string]string
			var in struct {
				Spec struct {
					Rules []struct {
						Host string `json:"host"`
						HTTP struct {
							Paths []struct {
								Path    string `json:"path"`
								Backend struct {
									Service struct {
										Port struct {
											Name string `json:"name"`
										} `json:"port"`
									} `json:"service"`
								} `json:"backend"`
							} `json:"paths"`
						} `json:"http"`
					} `json:"rules"`
				} `json:"spec"`
			}
			if err := sigsyaml.Unmarshal(o.raw, &in); err != nil {
				t.Fatal(err)
			}
			var hosts []string
			for _, r := range in.Spec.Rules {
				hosts = append(hosts, r.Host)
				got = map[string]string{}
				for _, p := range r.HTTP.Paths {
					got[p.Path] = p.Backend.Service.Port.Name
				}
				for _, p := range mediaPaths {
					if got[p] != "media" {
						t.Errorf("ingress %s: %s goes to %q", r.Host, p, got[p])
					}
				}
				if got["/"] != "client" {
					t.Errorf("ingress %s: / goes to %q", r.Host, got["/"])
				}
			}
			if !slices.Equal(hosts, []string{"*.matrix.example.org", "chat.clinic.example"}) {
				t.Errorf("ingress hosts %v", hosts)
			}
		case "HTTPRoute":
			sawRoute = true
			var r httpRoute
			strictJSON(t, string(o.raw), &r)
			if len(r.Spec.Rules) != 2 || r.Spec.Rules[0].BackendRefs[0].Port != 8090 || r.Spec.Rules[1].BackendRefs[0].Port != 8008 {
				t.Fatalf("route rules %+v", r.Spec.Rules)
			}
			var got []string
			for _, m := range r.Spec.Rules[0].Matches {
				got = append(got, m.Path.Value)
			}
			if !slices.Equal(got, mediaPaths) {
				t.Errorf("media matches %v", got)
			}
		}
	}
	if !sawIngress || !sawRoute {
		t.Errorf("ingress %v route %v", sawIngress, sawRoute)
	}
}

func TestServiceMonitorsNeedTheOperatorAPI(t *testing.T) {
	install := action.NewInstall(&action.Configuration{})
	install.ClientOnly, install.DryRun, install.ReleaseName, install.Namespace = true, true, "atoll", "matrix"
	rel, err := install.Run(loadChart(t), map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rel.Manifest, "kind: ServiceMonitor") {
		t.Error("ServiceMonitor rendered without monitoring.coreos.com/v1")
	}
	rel, err = render(t, map[string]any{"push": map[string]any{"enabled": true,
		"apps": map[string]any{"org.example.up": map[string]any{"type": "unifiedpush"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(rel.Manifest, "kind: ServiceMonitor"); n != 2 {
		t.Errorf("%d ServiceMonitors, want 2 (homeserver, push)", n)
	}
}

// The rendered config files decode strictly into the binaries' own config types.
func TestConfigsMatchTheBinaries(t *testing.T) {
	rel, err := render(t, readValues(t, filepath.Join(chartDir, "ci", "homeserver-minimal-values.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	push, err := render(t, readValues(t, filepath.Join(chartDir, "ci", "push-secrets-externally-values.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]string{}
	for _, o := range append(objects(t, rel), objects(t, push)...) {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok {
			for k, v := range cm.Data {
				data[k] = v
			}
		}
	}
	decode := func(name string, v any) {
		t.Helper()
		dec := yaml.NewDecoder(strings.NewReader(data[name]))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
			t.Errorf("%s: %v\n%s", name, err, data[name])
		}
	}
	var hs hsconfig.Config
	decode("homeserver.yaml", &hs)
	if hs.Database.URLFile != "/etc/atoll/credentials/database-url" || hs.Listen.Client != ":8008" || hs.Database.MaxConns != 20 {
		t.Errorf("homeserver config %+v", hs)
	}
	var pc pushconfig.Config
	decode("push.yaml", &pc)
	if pc.Listen != ":8095" || pc.Apps["org.example.ios"] == nil || pc.Apps["org.example.ios"].APNs.KeyID != "ABC123DEFG" {
		t.Errorf("push config %+v", pc)
	}
	media, err := mediaconfig.Parse([]byte(data["media.yaml"]))
	if err != nil {
		t.Errorf("media.yaml: %v\n%s", err, data["media.yaml"])
	}
	if media.HomeserverURL != "http://127.0.0.1:8081" || media.HomeserverTokenFile != "/etc/atoll/credentials/admin-token" || hs.Media.URL != "http://127.0.0.1:8090" {
		t.Errorf("media sidecar and shard do not point at each other: media %q %q, shard %q", media.HomeserverURL, media.HomeserverTokenFile, hs.Media.URL)
	}
	if len(hs.Push.AllowedHosts) == 0 || !hs.Push.AllowHTTP {
		t.Errorf("shard push config %+v does not allow the in-cluster gateway", hs.Push)
	}
}

func TestLint(t *testing.T) {
	for _, file := range append([]string{""}, ciFiles(t)...) {
		name := "defaults"
		if file != "" {
			name = filepath.Base(file)
		}
		t.Run(name, func(t *testing.T) {
			var vals map[string]any
			if file != "" {
				vals = readValues(t, file)
			}
			res := lint.All(chartDir, vals, "matrix", false)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
		})
	}
}

// values.yaml and values.schema.json are generated from source/ (make chart).
func TestGeneratedFilesAreCurrent(t *testing.T) {
	f, err := chartgen.Generate(filepath.Join(chartDir, "source"))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"values.yaml": f.Values, "values.schema.json": f.Schema} {
		got, err := os.ReadFile(filepath.Join(chartDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run make chart (go run ./cmd/atoll-chartgen)", name)
		}
	}
}

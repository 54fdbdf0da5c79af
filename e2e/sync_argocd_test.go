package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	helmrelease "helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubectlApply pipes manifests to `kubectl apply` in a namespace.
func kubectlApply(t *testing.T, ns, manifests string) {
	t.Helper()
	cmd := exec.Command(env.kubectl, "--kubeconfig", env.kubeconfig, "-n", ns, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifests)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// TestArgoCDPath brings the same stack up the way ArgoCD does: `helm template` (a client-only
// render), the pre-install hooks applied first in weight order as PreSync hooks (Jobs waited
// for, then deleted as their hook-succeeded policy says), then every other manifest with
// `kubectl apply`; no Helm release exists. It runs in its own namespace beside the Helm install
// and checks that the stack becomes ready and serves a tenant.
func TestArgoCDPath(t *testing.T) {
	ns := env.namespace + "-argocd"
	ctx := context.Background()
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespaceIn(context.Background(), os.Stderr, ns)
		}
	})
	nss := env.cs.CoreV1().Namespaces()
	if _, err := nss.Get(ctx, ns, metav1.GetOptions{}); err == nil {
		t.Fatalf("namespace %s exists: scripts/e2e.sh deletes it before a run", ns)
	}
	if _, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// helm template
	ch, err := loader.Load(env.chart)
	if err != nil {
		t.Fatal(err)
	}
	in := action.NewInstall(&action.Configuration{})
	in.DryRun, in.ClientOnly, in.Replace = true, true, true
	in.ReleaseName, in.Namespace = release, ns
	rel, err := in.RunWithContext(ctx, ch, env.vals)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}

	// PreSync: the pre-install hooks by weight (then name, as ArgoCD orders a wave).
	var hooks []*helmrelease.Hook
	for _, h := range rel.Hooks {
		for _, e := range h.Events {
			if e == helmrelease.HookPreInstall {
				hooks = append(hooks, h)
				break
			}
		}
	}
	sort.SliceStable(hooks, func(i, j int) bool {
		if hooks[i].Weight != hooks[j].Weight {
			return hooks[i].Weight < hooks[j].Weight
		}
		return hooks[i].Name < hooks[j].Name
	})
	var succeeded []*helmrelease.Hook
	for _, h := range hooks {
		kubectlApply(t, ns, h.Manifest)
		if h.Kind == "Job" {
			waitJob(t, ns, h.Name)
		}
		for _, p := range h.DeletePolicies {
			if p == helmrelease.HookSucceeded {
				succeeded = append(succeeded, h)
			}
		}
		t.Logf("PreSync hook %s/%s (weight %d) applied", h.Kind, h.Name, h.Weight)
	}
	for _, h := range succeeded {
		out, err := exec.Command(env.kubectl, "--kubeconfig", env.kubeconfig, "-n", ns, "delete", "--ignore-not-found", "--wait=false", strings.ToLower(h.Kind), h.Name).CombinedOutput()
		if err != nil {
			t.Errorf("delete hook %s/%s: %v\n%s", h.Kind, h.Name, err, out)
		}
	}

	// Sync: everything else.
	kubectlApply(t, ns, rel.Manifest)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	deadline := time.Now()
	for {
		what, err := stackStateIn(rctx, ns)
		if err == nil {
			t.Logf("ready after %s: %s", time.Since(deadline).Round(time.Second), what)
			break
		}
		if err != errNotYet {
			t.Fatal(err)
		}
		if rctx.Err() != nil {
			t.Fatalf("not ready within 10m: %s", what)
		}
		time.Sleep(3 * time.Second)
	}

	// The stack serves: a tenant through atollctl, a user, a message.
	shards := podsOfIn(t, ns, "homeserver")
	fw := portForwardIn(t, ns, "pod/"+shards[0].Name, 8081, 8008)
	suffix := time.Now().Format("150405")
	tn := tenant{id: "e2e_argocd_" + suffix, serverName: "argocd" + suffix + ".e2e.test", addr: fw[8008]}
	atollctl(t, fw[8081], adminTokenFileIn(t, ns), "create", "--id", tn.id, "--server-name", tn.serverName, "--registration", "open")
	u := register(t, tn, "dora")
	room, _ := u.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"})["room_id"].(string)
	u.send(room, "synced by ArgoCD")
	u.waitMessage(room, u.userID, "synced by ArgoCD")
}

func waitJob(t *testing.T, ns, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		j, err := env.cs.BatchV1().Jobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			if j.Status.Succeeded > 0 {
				return
			}
			for _, c := range j.Status.Conditions {
				if c.Type == "Failed" && c.Status == corev1.ConditionTrue {
					var b bytes.Buffer
					dumpNamespaceIn(context.Background(), &b, ns)
					t.Fatalf("hook Job %s failed: %s\n%s", name, c.Message, b.String())
				}
			}
		}
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("hook Job %s did not complete within 5m", name)
}

package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	helmrelease "helm.sh/helm/v3/pkg/release"
)

// TestPodsReady: every workload of the release is ready and no pod is failing.
func TestPodsReady(t *testing.T) {
	dumpOnFailure(t)
	what, err := stackState(context.Background())
	if err != nil {
		t.Fatalf("stack not ready: %v (%s)", err, what)
	}
	t.Logf("ready: %s", what)
	for _, component := range []string{"homeserver", "push", "postgres", "redis", "minio"} {
		t.Logf("%s: %d running pod(s)", component, len(podsOf(t, component)))
	}
}

// TestHelmTest runs `helm test` on the release.
func TestHelmTest(t *testing.T) {
	dumpOnFailure(t)
	rt := action.NewReleaseTesting(env.helm)
	rt.Namespace = env.namespace
	rt.Timeout = 3 * time.Minute
	rel, err := rt.Run(release)
	var logs bytes.Buffer
	if rel != nil {
		for _, h := range rel.Hooks {
			for _, e := range h.Events {
				if e == helmrelease.HookTest {
					t.Logf("test hook %s: %s", h.Name, h.LastRun.Phase)
				}
			}
		}
		if lerr := rt.GetPodLogs(&logs, rel); lerr == nil && logs.Len() > 0 {
			t.Logf("test pod logs:\n%s", logs.String())
		}
	}
	if err != nil {
		t.Fatalf("helm test %s: %v", release, err)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

func bump(ch *chart.Chart, suffix string) {
	ch.Metadata.Version += suffix
	for _, d := range ch.Dependencies() {
		bump(d, suffix)
	}
}

type loadResult struct {
	Requests int      `json:"requests"`
	Failures int      `json:"failures"`
	Errors   []string `json:"errors"`
}

func loadCall(t *testing.T, method, addr, path string) loadResult {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+path, nil)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("load client %s: %v", path, err)
	}
	defer resp.Body.Close()
	var r loadResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("load client %s: %v", path, err)
	}
	return r
}

// TestUpgradeUnderLoad upgrades the release to a new chart version with a changed shard
// configuration, which replaces every shard pod, while an in-cluster client (e2e/loadclient)
// sends and syncs through the shards' Service; not one of its requests may fail.
func TestUpgradeUnderLoad(t *testing.T) {
	dumpOnFailure(t)
	shards := podsOf(t, "homeserver")
	fw := portForward(t, "pod/"+shards[0].Name, 8081, 8008)
	suffix := time.Now().Format("150405")
	tn := tenant{id: "e2e_upgrade_" + suffix, serverName: "upgrade" + suffix + ".e2e.test", addr: fw[8008]}
	atollctl(t, fw[8081], adminTokenFile(t), "create", "--id", tn.id, "--server-name", tn.serverName, "--registration", "open")
	u := register(t, tn, "loader")
	room, _ := u.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"})["room_id"].(string)

	load := runHelper(t, "e2e-load", "loadclient", []string{
		"-url", fmt.Sprintf("http://%s-homeserver.%s.svc:8008", release, env.namespace),
		"-host", tn.serverName, "-token", u.token, "-room", room,
	}, false)
	deadline := time.Now().Add(time.Minute)
	for {
		r := loadCall(t, "GET", load, "/result")
		if r.Failures > 0 {
			t.Fatalf("load client failing before the upgrade: %d of %d requests: %s", r.Failures, r.Requests, strings.Join(r.Errors, "\n"))
		}
		if r.Requests >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("load client made only %d requests in a minute", r.Requests)
		}
		time.Sleep(time.Second)
	}

	ch, err := loader.Load(env.chart)
	if err != nil {
		t.Fatal(err)
	}
	// A new release of the chart with a changed shard configuration: the shards' config
	// checksum changes, so every shard pod is replaced, one at a time, while the load runs.
	// (Pod templates carry no chart version: the datastores are not restarted by an upgrade
	// that does not change them.)
	from := ch.Metadata.Version
	bump(ch, "-e2e.upgrade")
	before := map[string]string{}
	for _, p := range podsOf(t, "homeserver") {
		before[p.Name] = string(p.UID)
	}
	vals := chartutil.Values(env.vals).AsMap()
	vals = chartutil.CoalesceTables(map[string]any{"homeserver": map[string]any{"config": map[string]any{"log": map[string]any{"level": "debug"}}}}, vals)
	up := action.NewUpgrade(env.helm)
	up.Namespace = env.namespace
	up.Wait = true
	up.Timeout = 10 * time.Minute
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	rel, err := up.RunWithContext(ctx, release, ch, vals)
	if err != nil {
		t.Fatalf("helm upgrade %s -> %s: %v", from, ch.Metadata.Version, err)
	}
	if err := waitReady(ctx, nil); err != nil {
		t.Fatalf("after the upgrade: %v", err)
	}
	t.Logf("upgraded %s -> %s (revision %d) in %s", from, ch.Metadata.Version, rel.Version, time.Since(start).Round(time.Second))
	for _, p := range podsOf(t, "homeserver") {
		if before[p.Name] == string(p.UID) {
			t.Errorf("shard pod %s was not replaced by the upgrade", p.Name)
		}
	}
	time.Sleep(5 * time.Second)
	r := loadCall(t, "POST", load, "/stop")
	t.Logf("load client: %d requests, %d failed", r.Requests, r.Failures)
	if r.Failures > 0 {
		t.Errorf("%d of %d requests failed during the upgrade:\n%s", r.Failures, r.Requests, strings.Join(r.Errors, "\n"))
	}
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const release = "atoll"

// env is what TestMain set up; tests read it, never change it.
var env struct {
	kubeconfig string
	kubectl    string
	namespace  string
	chart      string
	values     []string
	vals       map[string]any // the merged values of the install
	registry   string
	cs         kubernetes.Interface
	helm       *action.Configuration
	atollctl   string // binary built from this checkout
	tmp        string
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	if os.Getenv("ATOLL_E2E") != "1" {
		fmt.Println("e2e: skipped (set ATOLL_E2E=1, or run make e2e; see e2e/doc.go)")
		os.Exit(0)
	}
	code, err := setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	if code == 0 {
		code = m.Run()
	}
	os.RemoveAll(env.tmp)
	os.Exit(code)
}

func setup() (int, error) {
	env.kubeconfig = os.Getenv("ATOLL_E2E_KUBECONFIG")
	env.chart = os.Getenv("ATOLL_E2E_CHART")
	if env.kubeconfig == "" || env.chart == "" {
		return 1, fmt.Errorf("ATOLL_E2E_KUBECONFIG and ATOLL_E2E_CHART are required (see e2e/doc.go)")
	}
	env.kubectl = getenv("ATOLL_E2E_KUBECTL", "kubectl")
	env.namespace = getenv("ATOLL_E2E_NAMESPACE", "atoll-e2e")
	env.registry = os.Getenv("ATOLL_E2E_REGISTRY")
	for _, f := range strings.Split(os.Getenv("ATOLL_E2E_VALUES"), ",") {
		if f != "" {
			env.values = append(env.values, f)
		}
	}
	readyTimeout, err := time.ParseDuration(getenv("ATOLL_E2E_READY_TIMEOUT", "10m"))
	if err != nil {
		return 1, fmt.Errorf("ATOLL_E2E_READY_TIMEOUT: %w", err)
	}
	os.Setenv("KUBECONFIG", env.kubeconfig)

	cfg, err := clientcmd.BuildConfigFromFlags("", env.kubeconfig)
	if err != nil {
		return 1, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	if env.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return 1, err
	}
	if env.tmp, err = os.MkdirTemp("", "atoll-e2e-"); err != nil {
		return 1, err
	}
	start := time.Now()
	if env.atollctl = os.Getenv("ATOLL_E2E_ATOLLCTL"); env.atollctl == "" {
		env.atollctl = filepath.Join(env.tmp, "atollctl")
		build := exec.Command("go", "build", "-o", env.atollctl, "github.com/atoll-matrix/atoll/cmd/atollctl")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return 1, fmt.Errorf("build atollctl: %w", err)
		}
	}

	ctx := context.Background()
	if err := freshNamespace(ctx); err != nil {
		return 1, err
	}
	settings := cli.New()
	settings.KubeConfig = env.kubeconfig
	settings.SetNamespace(env.namespace)
	env.helm = new(action.Configuration)
	if err := env.helm.Init(settings.RESTClientGetter(), env.namespace, "secret", func(string, ...any) {}); err != nil {
		return 1, err
	}
	vals, err := chartValues(settings)
	if err != nil {
		return 1, err
	}
	env.vals = vals
	ch, err := loader.Load(env.chart)
	if err != nil {
		return 1, err
	}
	fmt.Fprintf(os.Stderr, "e2e: installing %s %s into %s (values: %s)\n", ch.Name(), ch.Metadata.Version, env.namespace, strings.Join(env.values, ", "))

	// The install (which waits for the pre-install hook) and the watch run side by side: the
	// watch cancels the install when a pod cannot come up, instead of waiting for a timeout.
	ictx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	installErr := make(chan error, 1)
	go func() {
		in := action.NewInstall(env.helm)
		in.ReleaseName = release
		in.Namespace = env.namespace
		in.Timeout = readyTimeout
		_, err := in.RunWithContext(ictx, ch, vals)
		installErr <- err
	}()
	if err := waitReady(ictx, installErr); err != nil {
		cancel()
		fmt.Fprintf(os.Stderr, "\ne2e: the stack did not come up: %v\n\n", err)
		dumpNamespace(context.Background(), os.Stderr)
		return 1, nil
	}
	fmt.Fprintf(os.Stderr, "e2e: stack ready %s after setup started\n", time.Since(start).Round(time.Second))
	return 0, nil
}

func chartValues(settings *cli.EnvSettings) (map[string]any, error) {
	o := values.Options{ValueFiles: append([]string{}, env.values...)}
	o.ValueFiles = append(o.ValueFiles, filepath.Join("testdata", "kind-values.yaml"))
	if env.registry != "" {
		o.Values = append(o.Values, "global.imageRegistry="+env.registry)
	}
	return o.MergeValues(getter.All(settings))
}

func freshNamespace(ctx context.Context) error {
	nss := env.cs.CoreV1().Namespaces()
	if _, err := nss.Get(ctx, env.namespace, metav1.GetOptions{}); err == nil {
		fmt.Fprintf(os.Stderr, "e2e: deleting the namespace %s left by an earlier run\n", env.namespace)
		if err := nss.Delete(ctx, env.namespace, metav1.DeleteOptions{}); err != nil {
			return err
		}
		deadline := time.Now().Add(3 * time.Minute)
		for {
			if _, err := nss.Get(ctx, env.namespace, metav1.GetOptions{}); err != nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("namespace %s still exists after 3m", env.namespace)
			}
			time.Sleep(2 * time.Second)
		}
	}
	_, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: env.namespace}}, metav1.CreateOptions{})
	return err
}

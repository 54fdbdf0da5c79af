package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/atoll-matrix/atoll/internal/secretgen"
)

// secretsCmd runs "atollctl secrets ensure --namespace N --secret NAME --keys a,b
// [--derive key=template]...": the chart's pre-install/pre-upgrade hook, which adds missing
// credentials to a Secret and never changes existing ones.
func secretsCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "ensure" {
		return errors.New("usage: atollctl secrets ensure --namespace N --secret NAME --keys a,b [--derive key=template-with-{a}]")
	}
	fs := flag.NewFlagSet("atollctl secrets ensure", flag.ContinueOnError)
	namespace := fs.String("namespace", "", "namespace of the Secret")
	secret := fs.String("secret", "", "name of the Secret")
	keys := fs.String("keys", "", "comma-separated keys to generate when missing")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster service account)")
	derive := map[string]string{}
	fs.Func("derive", "key=template: a key computed from generated keys ({name} placeholders); repeatable", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q is not key=template", s)
		}
		derive[k] = v
		return nil
	})
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := secretsRESTConfig(*kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("secrets ensure: client: %w", err)
	}
	req := secretgen.Request{
		Namespace: *namespace,
		Secret:    *secret,
		Derive:    derive,
		Labels:    map[string]string{"app.kubernetes.io/part-of": "atoll", "app.kubernetes.io/managed-by": "atollctl"},
	}
	if *keys != "" {
		req.Keys = strings.Split(*keys, ",")
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	_, err = secretgen.Ensure(ctx, cs, log, req)
	return err
}

func secretsRESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("secrets ensure: in-cluster config (use --kubeconfig outside a pod): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("secrets ensure: kubeconfig: %w", err)
	}
	return cfg, nil
}

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Waiting reasons that never clear by themselves on an air-gapped cluster.
var fatalWaiting = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// maxRestarts is how many restarts of one container count as a crash loop. Not fewer: the
// media sidecar exits (and is restarted) while PostgreSQL is still starting.
const maxRestarts = 5

// podProblem reports why a pod will not become ready by itself, or "".
func podProblem(p *corev1.Pod) string {
	if p.Status.Phase == corev1.PodFailed {
		return fmt.Sprintf("pod %s failed: %s %s", p.Name, p.Status.Reason, p.Status.Message)
	}
	statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, cs := range statuses {
		if w := cs.State.Waiting; w != nil && fatalWaiting[w.Reason] {
			// ErrImagePull can be transient on a registry; here there is no registry.
			return fmt.Sprintf("pod %s container %s: %s: %s", p.Name, cs.Name, w.Reason, w.Message)
		}
		if cs.RestartCount >= maxRestarts {
			return fmt.Sprintf("pod %s container %s restarted %d times (crash loop)", p.Name, cs.Name, cs.RestartCount)
		}
	}
	return ""
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// stackState checks every workload in the namespace: nil when all are ready, errNotYet while
// they are coming up, another error when one cannot come up.
var errNotYet = errors.New("not ready yet")

func stackState(ctx context.Context) (string, error) { return stackStateIn(ctx, env.namespace) }

func stackStateIn(ctx context.Context, ns string) (string, error) {
	pods, err := env.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", errNotYet // the API server may be busy; keep polling
	}
	var waiting []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if prob := podProblem(p); prob != "" {
			return "", errors.New(prob)
		}
		if p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		if !podReady(p) {
			waiting = append(waiting, p.Name)
		}
	}
	sts, err := env.cs.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", errNotYet
	}
	deps, err := env.cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", errNotYet
	}
	var workloads []string
	for _, s := range sts.Items {
		if !statefulSetReady(&s) {
			waiting = append(waiting, "statefulset/"+s.Name)
		}
		workloads = append(workloads, "statefulset/"+s.Name)
	}
	for _, d := range deps.Items {
		if !deploymentReady(&d) {
			waiting = append(waiting, "deployment/"+d.Name)
		}
		workloads = append(workloads, "deployment/"+d.Name)
	}
	if len(workloads) == 0 || len(waiting) > 0 {
		sort.Strings(waiting)
		return strings.Join(waiting, " "), errNotYet
	}
	return strings.Join(workloads, " "), nil
}

func statefulSetReady(s *appsv1.StatefulSet) bool {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	return s.Status.ObservedGeneration >= s.Generation && s.Status.ReadyReplicas == want &&
		s.Status.UpdatedReplicas == want && s.Status.CurrentRevision == s.Status.UpdateRevision
}

func deploymentReady(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return d.Status.ObservedGeneration >= d.Generation && d.Status.ReadyReplicas == want &&
		d.Status.UpdatedReplicas == want && d.Status.Replicas == want
}

// waitReady polls until the install has returned and every workload is ready. installErr
// delivers the install's result (nil for no install to wait for).
func waitReady(ctx context.Context, installErr <-chan error) error {
	installed := installErr == nil
	last := ""
	for {
		if !installed {
			select {
			case err := <-installErr:
				if err != nil {
					// Prefer the pod-level cause when there is one.
					if _, serr := stackState(context.Background()); serr != nil && serr != errNotYet {
						return fmt.Errorf("helm install: %v; %w", err, serr)
					}
					return fmt.Errorf("helm install: %w", err)
				}
				installed = true
				fmt.Fprintln(os.Stderr, "e2e: helm install returned; waiting for the workloads")
			default:
			}
		}
		what, err := stackState(ctx)
		switch {
		case err == nil && installed:
			fmt.Fprintf(os.Stderr, "e2e: ready: %s\n", what)
			return nil
		case err != nil && err != errNotYet:
			return err
		}
		if what != last && what != "" {
			fmt.Fprintf(os.Stderr, "e2e: waiting for %s\n", what)
			last = what
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready before the deadline (ATOLL_E2E_READY_TIMEOUT); still waiting for: %s", last)
		case <-time.After(3 * time.Second):
		}
	}
}

// dumpNamespace prints every pod that is not ready or succeeded: its state, its events and
// its containers' logs (the previous instance too, for a restarted container).
func dumpNamespace(ctx context.Context, w io.Writer) { dumpNamespaceIn(ctx, w, env.namespace) }

func dumpNamespaceIn(ctx context.Context, w io.Writer, ns string) {
	pods, err := env.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(w, "list pods: %v\n", err)
		return
	}
	fmt.Fprintf(w, "=== pods in %s\n", ns)
	for _, p := range pods.Items {
		fmt.Fprintf(w, "  %-45s %-10s ready=%v\n", p.Name, p.Status.Phase, podReady(&p))
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded || (podReady(p) && podProblem(p) == "") {
			continue
		}
		fmt.Fprintf(w, "\n=== pod %s (%s)\n", p.Name, p.Status.Phase)
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				fmt.Fprintf(w, "  condition %s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
			}
		}
		statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
		for _, cs := range statuses {
			fmt.Fprintf(w, "  container %s image=%s ready=%v restarts=%d %s\n", cs.Name, cs.Image, cs.Ready, cs.RestartCount, stateString(cs.State))
			if cs.LastTerminationState.Terminated != nil {
				fmt.Fprintf(w, "    last: %s\n", stateString(cs.LastTerminationState))
			}
		}
		evs, err := env.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
		if err == nil {
			for _, e := range evs.Items {
				fmt.Fprintf(w, "  event %s %s: %s\n", e.Type, e.Reason, e.Message)
			}
		}
		for _, cs := range statuses {
			if cs.State.Running == nil && cs.State.Terminated == nil && cs.LastTerminationState.Terminated == nil {
				continue // never started: no logs
			}
			printLogs(ctx, w, ns, p.Name, cs.Name, false)
			if cs.RestartCount > 0 {
				printLogs(ctx, w, ns, p.Name, cs.Name, true)
			}
		}
	}
}

func stateString(s corev1.ContainerState) string {
	switch {
	case s.Waiting != nil:
		return fmt.Sprintf("waiting: %s %s", s.Waiting.Reason, s.Waiting.Message)
	case s.Running != nil:
		return "running since " + s.Running.StartedAt.Format(time.RFC3339)
	case s.Terminated != nil:
		return fmt.Sprintf("terminated: exit %d %s %s", s.Terminated.ExitCode, s.Terminated.Reason, s.Terminated.Message)
	}
	return "unknown"
}

func printLogs(ctx context.Context, w io.Writer, ns, pod, container string, previous bool) {
	tail := int64(80)
	b, err := env.cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, Previous: previous, TailLines: &tail}).DoRaw(ctx)
	which := "logs"
	if previous {
		which = "logs of the previous instance"
	}
	fmt.Fprintf(w, "--- %s/%s %s (last %d lines)\n", pod, container, which, tail)
	if err != nil {
		fmt.Fprintf(w, "(%v)\n", err)
		return
	}
	w.Write(b)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		fmt.Fprintln(w)
	}
}

// dumpOnFailure prints the namespace's unhealthy pods when the test fails.
func dumpOnFailure(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespace(context.Background(), os.Stderr)
		}
	})
}

// podsOf lists the release's pods of one component (app.kubernetes.io/name), sorted by name.
func podsOf(t *testing.T, component string) []corev1.Pod {
	t.Helper()
	return podsOfIn(t, env.namespace, component)
}

func podsOfIn(t *testing.T, ns, component string) []corev1.Pod {
	t.Helper()
	pods, err := env.cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/name=" + component,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) == 0 {
		t.Fatalf("no running %s pods in %s", component, ns)
	}
	return out
}

var forwardLine = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)`)

// portForward forwards loopback ports to a pod's ports with kubectl and returns the local
// port for each remote one. The forward ends with the test.
func portForward(t *testing.T, target string, ports ...int) map[int]string {
	t.Helper()
	return portForwardIn(t, env.namespace, target, ports...)
}

func portForwardIn(t *testing.T, ns, target string, ports ...int) map[int]string {
	t.Helper()
	args := []string{"--kubeconfig", env.kubeconfig, "-n", ns, "port-forward", "--address", "127.0.0.1", target}
	for _, p := range ports {
		args = append(args, fmt.Sprintf(":%d", p))
	}
	cmd := exec.Command(env.kubectl, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	got := map[int]string{}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := forwardLine.FindStringSubmatch(sc.Text()); m != nil {
				var remote int
				fmt.Sscan(m[2], &remote)
				if _, ok := got[remote]; !ok {
					got[remote] = "127.0.0.1:" + m[1]
					if len(got) == len(ports) {
						close(found)
					}
				}
			}
		}
	}()
	select {
	case <-found:
		return got
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl port-forward %s %v: no forwarding within 30s", target, ports)
		return nil
	}
}

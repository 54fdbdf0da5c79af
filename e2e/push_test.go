package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fakePushName is the fake provider's Deployment and Service; testdata/kind-values.yaml allows
// its host in the push gateway's UnifiedPush app.
const fakePushName = "fake-push"

// startFakePush runs e2e/fakepush in the release namespace behind the Service fake-push and
// returns a loopback address forwarded to it.
func startFakePush(t *testing.T) string {
	return runHelper(t, fakePushName, "fakepush", nil, true)
}

// runHelper runs one of the suite's helper programs (e2e/<program>, loaded into the cluster by
// scripts/e2e.sh) as a one-pod Deployment name in the release namespace, optionally behind a
// Service of the same name, and returns a loopback address forwarded to its port 8080.
func runHelper(t *testing.T, name, program string, args []string, service bool) string {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app.kubernetes.io/name": name}
	image := "atoll-e2e/" + program + ":e2e"
	if env.registry != "" {
		image = env.registry + "/" + image
	}
	one := int32(1)
	yes, no := true, false
	uid := int64(65532)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					Containers: []corev1.Container{{
						Name: program, Image: image, ImagePullPolicy: corev1.PullIfNotPresent, Args: args,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("http")}}},
						SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
					}},
				},
			},
		},
	}
	if _, err := env.cs.AppsV1().Deployments(env.namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if service {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")}}},
		}
		if _, err := env.cs.CoreV1().Services(env.namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		d, err := env.cs.AppsV1().Deployments(env.namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && d.Status.ReadyReplicas == 1 {
			break
		}
		pods, _ := env.cs.CoreV1().Pods(env.namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
		for i := range pods.Items {
			if prob := podProblem(&pods.Items[i]); prob != "" {
				t.Fatalf("%s: %s", name, prob)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 2m", name)
		}
		time.Sleep(2 * time.Second)
	}
	return portForward(t, "deployment/"+name, 8080)[8080]
}

// waitPush polls the fake provider until a notification mentioning eventID arrived.
func waitPush(t *testing.T, addr, eventID string) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last []byte
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/received")
		if err == nil {
			last, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			var got []struct {
				Path string          `json:"path"`
				Body json.RawMessage `json:"body"`
			}
			if json.Unmarshal(last, &got) == nil {
				for _, m := range got {
					if strings.Contains(string(m.Body), eventID) {
						return fmt.Sprintf("%s %s", m.Path, m.Body)
					}
				}
			}
		}
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("no push for %s reached the fake provider within 90s; it received: %s", eventID, last)
	return ""
}

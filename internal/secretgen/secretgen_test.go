package secretgen_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/atoll-matrix/atoll/internal/secretgen"
)

func TestEnsureIsIdempotent(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	cs := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "gen", Namespace: "ns"},
		Data:       map[string][]byte{"admin-token": []byte("kept-as-it-is")},
	})
	req := secretgen.Request{
		Namespace: "ns", Secret: "gen",
		Keys:   []string{"admin-token", "database-password"},
		Derive: map[string]string{"database-url": "postgres://atoll:{database-password}@db:5432/atoll"},
	}
	res, err := secretgen.Ensure(ctx, cs, log, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Created || strings.Join(res.Added, ",") != "database-password,database-url" {
		t.Errorf("first run %+v", res)
	}
	s, err := cs.CoreV1().Secrets("ns").Get(ctx, "gen", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Data["admin-token"]) != "kept-as-it-is" {
		t.Errorf("existing key changed to %q", s.Data["admin-token"])
	}
	pw := string(s.Data["database-password"])
	if len(pw) != secretgen.Length {
		t.Errorf("password %q", pw)
	}
	if got := string(s.Data["database-url"]); got != "postgres://atoll:"+pw+"@db:5432/atoll" {
		t.Errorf("derived url %q", got)
	}
	res, err = secretgen.Ensure(ctx, cs, log, req)
	if err != nil || res.Created || len(res.Added) != 0 {
		t.Errorf("second run %+v %v", res, err)
	}
	again, _ := cs.CoreV1().Secrets("ns").Get(ctx, "gen", metav1.GetOptions{})
	if string(again.Data["database-password"]) != pw {
		t.Error("second run changed a generated value")
	}
}

func TestEnsureCreates(t *testing.T) {
	cs := fake.NewClientset()
	res, err := secretgen.Ensure(context.Background(), cs, slog.New(slog.DiscardHandler), secretgen.Request{Namespace: "ns", Secret: "gen", Keys: []string{"a", "b"}})
	if err != nil || !res.Created || len(res.Added) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	s, _ := cs.CoreV1().Secrets("ns").Get(context.Background(), "gen", metav1.GetOptions{})
	if string(s.Data["a"]) == string(s.Data["b"]) {
		t.Error("two generated values are equal")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  secretgen.Request
		want string
	}{
		{"no names", secretgen.Request{Keys: []string{"a"}}, "namespace and secret are required"},
		{"no keys", secretgen.Request{Namespace: "n", Secret: "s"}, "no keys"},
		{"unknown placeholder", secretgen.Request{Namespace: "n", Secret: "s", Derive: map[string]string{"u": "x{pw}"}}, "{pw} is not one of the generated keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestRandomAlphabet(t *testing.T) {
	v, err := secretgen.Random(200)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range v {
		if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", r) {
			t.Fatalf("unexpected %q in %q", r, v)
		}
	}
}

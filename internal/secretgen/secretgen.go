// Package secretgen creates the credentials an Atoll install needs and nobody supplied: it
// adds missing keys with random values to one Kubernetes Secret and never changes a key
// that exists, so running it again (every helm upgrade) is a no-op.
package secretgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Length is the number of characters of a generated value.
const Length = 32

// alphabet is URL-safe so values can be put into connection URLs unescaped.
const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// Request says which Secret to complete.
type Request struct {
	Namespace string
	Secret    string
	Keys      []string          // random values, generated when missing
	Derive    map[string]string // key -> template with {key} placeholders; computed from the other keys when missing
	Labels    map[string]string
}

var placeholder = regexp.MustCompile(`\{([a-z0-9-]+)\}`)

// Validate checks names and that every placeholder names a key that will exist.
func (r Request) Validate() error {
	var errs []error
	if r.Namespace == "" || r.Secret == "" {
		errs = append(errs, errors.New("namespace and secret are required"))
	}
	if len(r.Keys) == 0 && len(r.Derive) == 0 {
		errs = append(errs, errors.New("no keys to ensure"))
	}
	known := map[string]bool{}
	for _, k := range r.Keys {
		known[k] = true
	}
	for k, tmpl := range r.Derive {
		for _, m := range placeholder.FindAllStringSubmatch(tmpl, -1) {
			if !known[m[1]] {
				errs = append(errs, fmt.Errorf("derive %s: {%s} is not one of the generated keys", k, m[1]))
			}
		}
	}
	return errors.Join(errs...)
}

// Result reports what Ensure changed.
type Result struct {
	Created bool     // the Secret did not exist
	Added   []string // keys added, sorted
}

// Ensure makes the Secret hold every requested key. Existing keys are kept as they are.
func Ensure(ctx context.Context, cs kubernetes.Interface, log *slog.Logger, r Request) (Result, error) {
	if err := r.Validate(); err != nil {
		return Result{}, fmt.Errorf("ensure secret: %w", err)
	}
	secrets := cs.CoreV1().Secrets(r.Namespace)
	for attempt := 0; ; attempt++ {
		cur, err := secrets.Get(ctx, r.Secret, metav1.GetOptions{})
		created := false
		switch {
		case apierrors.IsNotFound(err):
			created = true
			cur = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: r.Secret, Namespace: r.Namespace, Labels: r.Labels},
				Type:       corev1.SecretTypeOpaque,
			}
		case err != nil:
			return Result{}, fmt.Errorf("get secret %s/%s: %w", r.Namespace, r.Secret, err)
		}
		next := cur.DeepCopy()
		added, err := fill(next, r)
		if err != nil {
			return Result{}, err
		}
		if len(added) == 0 {
			log.Info("secret complete", "namespace", r.Namespace, "secret", r.Secret)
			return Result{}, nil
		}
		if created {
			_, err = secrets.Create(ctx, next, metav1.CreateOptions{})
		} else {
			_, err = secrets.Update(ctx, next, metav1.UpdateOptions{})
		}
		if (apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err)) && attempt < 5 {
			continue // someone else wrote it first: start again from what is there
		}
		if err != nil {
			return Result{}, fmt.Errorf("write secret %s/%s: %w", r.Namespace, r.Secret, err)
		}
		log.Info("secret completed", "namespace", r.Namespace, "secret", r.Secret, "created", created, "added_keys", strings.Join(added, ","))
		return Result{Created: created, Added: added}, nil
	}
}

// fill adds the missing keys to s and returns their names.
func fill(s *corev1.Secret, r Request) ([]string, error) {
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
	var added []string
	for _, k := range r.Keys {
		if _, ok := s.Data[k]; ok {
			continue
		}
		v, err := Random(Length)
		if err != nil {
			return nil, err
		}
		s.Data[k] = []byte(v)
		added = append(added, k)
	}
	for k, tmpl := range r.Derive {
		if _, ok := s.Data[k]; ok {
			continue
		}
		s.Data[k] = []byte(placeholder.ReplaceAllStringFunc(tmpl, func(m string) string {
			return string(s.Data[m[1:len(m)-1]])
		}))
		added = append(added, k)
	}
	sort.Strings(added)
	return added, nil
}

// Random returns n characters from [A-Za-z0-9] drawn from crypto/rand without bias.
func Random(n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("random: %w", err)
		}
		for _, b := range buf {
			if int(b) < 256-256%len(alphabet) && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// mediaDo sends a request to the media sidecar of the client's shard, as the ingress does for
// /_matrix/media/ and /_matrix/client/v1/media/.
func (c *mxClient) mediaDo(method, path, contentType string, body []byte) (int, []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.tenant.media+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Host = c.tenant.serverName
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s (Host %s): %v", method, path, c.tenant.serverName, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (c *mxClient) upload(body []byte, contentType string) string {
	c.t.Helper()
	code, b := c.mediaDo("POST", "/_matrix/media/v3/upload?filename=e2e.txt", contentType, body)
	if code != http.StatusOK {
		c.t.Fatalf("upload as %s: %d %s", c.userID, code, b)
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.ContentURI == "" {
		c.t.Fatalf("upload as %s: %s", c.userID, b)
	}
	return out.ContentURI
}

func (c *mxClient) download(server, id string) []byte {
	c.t.Helper()
	code, b := c.mediaDo("GET", "/_matrix/client/v1/media/download/"+url.PathEscape(server)+"/"+url.PathEscape(id), "", nil)
	if code != http.StatusOK {
		c.t.Fatalf("download mxc://%s/%s as %s: %d %s", server, id, c.userID, code, b)
	}
	return b
}

// checkObject asserts the object is in the in-cluster MinIO, with the credentials the hook
// generated, through a port-forward to the MinIO pod.
func checkObject(t *testing.T, bucket, key string, size int64) {
	t.Helper()
	secret, err := env.cs.CoreV1().Secrets(env.namespace).Get(context.Background(), release+"-atoll-generated", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods := podsOf(t, "minio")
	addr := portForward(t, "pod/"+pods[0].Name, 9000)[9000]
	mc, err := minio.New(addr, &minio.Options{
		Creds: credentials.NewStaticV4(string(secret.Data["s3-access-key"]), string(secret.Data["s3-secret-key"]), ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	info, err := mc.StatObject(context.Background(), bucket, key, minio.StatObjectOptions{})
	if err != nil {
		var names []string
		for o := range mc.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
			names = append(names, o.Key)
		}
		t.Fatalf("object %s/%s: %v (objects in the bucket: %v)", bucket, key, err, names)
	}
	if info.Size != size {
		t.Errorf("object %s/%s is %d bytes, want %d", bucket, key, info.Size, size)
	}
	t.Logf("s3://%s/%s: %d bytes", bucket, key, info.Size)
}

// Command loadclient is the e2e suite's in-cluster Matrix client for the upgrade test: it sends
// a message and syncs, over and over, through the shards' Service (so it keeps working while
// pods are replaced, as a client behind an ingress would) and counts every failed request.
//
//	loadclient -url http://atoll-homeserver.ns.svc:8008 -host alpha.example -token T -room !r:alpha.example
//
// It serves its results on :8080: GET /result answers {"requests", "failures", "errors"} so far;
// POST /stop ends the loop and answers the final result.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"sync"
	"time"
)

type result struct {
	Requests int      `json:"requests"`
	Failures int      `json:"failures"`
	Errors   []string `json:"errors"` // the first 50
}

func main() {
	base := flag.String("url", "", "client API base URL")
	host := flag.String("host", "", "Host header: the tenant's server name")
	token := flag.String("token", "", "access token")
	room := flag.String("room", "", "room ID to send to")
	interval := flag.Duration("interval", 200*time.Millisecond, "pause between rounds")
	flag.Parse()

	var mu sync.Mutex
	var res result
	stop := make(chan struct{})
	done := make(chan struct{})
	record := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Requests++
		if err != nil {
			res.Failures++
			if len(res.Errors) < 50 {
				res.Errors = append(res.Errors, time.Now().UTC().Format(time.RFC3339Nano)+" "+err.Error())
			}
			log.Print(err)
		}
	}
	client := &http.Client{Timeout: 30 * time.Second}
	do := func(method, path string, body []byte, key string) ([]byte, error) {
		req, err := http.NewRequest(method, *base+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Host = *host
		req.Header.Set("Authorization", "Bearer "+*token)
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			// The transaction ID makes the PUT idempotent; this lets the transport resend it on a
			// kept-alive connection the server closed, as it does for a GET.
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return b, nil
	}

	go func() {
		defer close(done)
		since := ""
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			txn := fmt.Sprintf("load%d-%d", time.Now().UnixNano(), i)
			body, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("load %d", i)})
			_, err := do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(*room)+"/send/m.room.message/"+txn, body, txn)
			record(err)
			path := "/_matrix/client/v3/sync?timeout=0"
			if since != "" {
				path += "&since=" + url.QueryEscape(since)
			}
			b, err := do("GET", path, nil, "")
			if err == nil {
				var s struct {
					NextBatch string `json:"next_batch"`
				}
				if jerr := json.Unmarshal(b, &s); jerr != nil || s.NextBatch == "" {
					err = fmt.Errorf("sync: no next_batch: %.200s", b)
				} else {
					since = s.NextBatch
				}
			}
			record(err)
			time.Sleep(*interval)
		}
	}()

	answer := func(w http.ResponseWriter) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(res)
	}
	var once sync.Once
	http.HandleFunc("GET /result", func(w http.ResponseWriter, r *http.Request) { answer(w) })
	http.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(stop) })
		<-done
		answer(w)
	})
	http.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	log.Fatal(http.ListenAndServe(":8080", nil))
}

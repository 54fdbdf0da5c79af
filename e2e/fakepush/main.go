// Command fakepush is the e2e suite's push provider: a UnifiedPush distributor that accepts
// every POST and lists what it received. scripts/e2e.sh builds it into the image
// atoll.local/atoll-e2e/fakepush and the suite runs it in the release namespace.
//
//	POST /push/<anything>   record the body, answer 200
//	GET  /received          JSON array of {"path", "body"} in arrival order
//	GET  /health            200
package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"sync"
)

type message struct {
	Path string          `json:"path"`
	Body json.RawMessage `json:"body"`
}

func main() {
	addr := ":8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	var mu sync.Mutex
	received := []message{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /push/", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !json.Valid(b) {
			b, _ = json.Marshal(string(b))
		}
		mu.Lock()
		received = append(received, message{Path: r.URL.Path, Body: b})
		mu.Unlock()
		log.Printf("push to %s (%d bytes)", r.URL.Path, len(b))
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("GET /received", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(received)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	log.Printf("fakepush listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}

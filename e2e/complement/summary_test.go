package complement_test

import (
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/e2e/complement"
)

const stream = `{"Action":"start","Package":"github.com/matrix-org/complement/tests/csapi"}
{"Action":"run","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestA"}
{"Action":"run","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestA/sub"}
{"Action":"output","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestA/sub","Output":"    client.go:615: [CSAPI] GET hs1/_matrix/client/v3/rooms/!abc:hs1/hierarchy => 404 Not Found (3ms)\n"}
{"Action":"output","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestA/sub","Output":"    x_test.go:12: \u001b[31mCSAPI.MustDo GET http://127.0.0.1:32801/_matrix/client/v3/rooms/!abc:hs1/hierarchy returned non-2xx code: 404 Not Found - body: {}\u001b[39m\n"}
{"Action":"fail","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestA/sub","Elapsed":0.5}
{"Action":"fail","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestA","Elapsed":1}
{"Action":"run","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestB"}
{"Action":"pass","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestB","Elapsed":1}
{"Action":"run","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestC"}
{"Action":"skip","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestC","Elapsed":0}
{"Action":"run","Package":"github.com/matrix-org/complement/tests/csapi","Test":"TestD"}
{"Action":"fail","Package":"github.com/matrix-org/complement/tests/csapi","Elapsed":60}
`

func TestRead(t *testing.T) {
	var r complement.Run
	if err := r.Read(strings.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	top, sub := r.Count("")
	if top != (complement.Totals{Pass: 1, Fail: 1, Skip: 1, NoResult: 1}) || sub != (complement.Totals{Fail: 1}) {
		t.Fatalf("totals: top %+v sub %+v", top, sub)
	}
	groups := r.FailureGroups()
	want := "CSAPI.MustDo GET /_matrix/client/v3/rooms/{}/hierarchy returned non-2xx code: 404 Not Found"
	if len(groups) != 2 || groups[0].Failure != want {
		t.Fatalf("groups: %+v", groups)
	}
	if r.NotFound["GET /_matrix/client/v3/rooms/{}/hierarchy"] != 1 {
		t.Fatalf("not found: %v", r.NotFound)
	}
	var b strings.Builder
	if err := r.WriteMarkdown(&b, complement.Meta{Complement: "v0"}, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| **all** | **1** | **2** | **1** | **4** |") {
		t.Fatalf("summary:\n%s", b.String())
	}
}

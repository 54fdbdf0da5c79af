package mxhttp_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/internal/mxhttp"
)

type sample struct {
	Name    string            `json:"name"`
	Count   int               `json:"count"`
	Tags    []string          `json:"tags"`
	Nested  map[string]any    `json:"nested"`
	Strings map[string]string `json:"strings"`
}

func TestDecodeJSON(t *testing.T) {
	cases := []struct {
		name, body, errcode string
	}{
		{"object", `{"name":"a","count":2}`, ""},
		{"empty body is an empty object", ``, ""},
		{"not JSON", `{nope`, "M_NOT_JSON"},
		{"array", `[1]`, "M_BAD_JSON"},
		{"string", `"x"`, "M_BAD_JSON"},
		{"wrong type", `{"count":"two"}`, "M_BAD_JSON"},
		{"too large", `{"name":"` + strings.Repeat("a", mxhttp.MaxBody) + `"}`, "M_TOO_LARGE"},
		{"trailing garbage", `{} {}`, "M_NOT_JSON"},
		{"invalid UTF-8", "{\"name\":\"\xff\"}", "M_NOT_JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			var v sample
			err := mxhttp.DecodeJSON(r, &v)
			if tc.errcode == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var me *mxhttp.Error
			if !errors.As(err, &me) {
				t.Fatalf("error %v is not a Matrix error", err)
			}
			if got := string(me.Body.(interface{ Error() string }).Error()); !strings.HasPrefix(got, tc.errcode) {
				t.Fatalf("got %s, want %s", got, tc.errcode)
			}
		})
	}
}

// FuzzDecodeJSON: any body decodes or yields a client error; nothing panics or becomes a 500.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"name":"x","count":1,"tags":["a"],"nested":{"a":[1,{"b":null}]}}`, `[`, `{"count":1e999}`,
		`{"strings":{"a":1}}`, "\xff\xfe", `{"name":"\ud800"}`, `null`, `{"count":-1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/", strings.NewReader(string(body)))
		var v sample
		err := mxhttp.DecodeJSON(r, &v)
		if err == nil {
			return
		}
		var me *mxhttp.Error
		if !errors.As(err, &me) || me.Status < 400 || me.Status >= 500 {
			t.Fatalf("decode error %v is not a 4xx Matrix error", err)
		}
	})
}

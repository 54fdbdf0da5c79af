package clientapi

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSortChildren: space children are ordered by a valid order string, then by the
// child event's timestamp, then by room ID, as the spec asks.
func TestSortChildren(t *testing.T) {
	child := func(id, order string, ts int64) SpaceChild {
		c, _ := json.Marshal(map[string]any{"via": []string{"x.test"}, "order": order})
		return SpaceChild{Type: "m.space.child", StateKey: id, Content: c, OriginServerTS: ts}
	}
	tests := []struct {
		name string
		in   []SpaceChild
		want []string
	}{
		{"order first", []SpaceChild{child("!b", "", 1), child("!a", "z", 5), child("!c", "a", 9)}, []string{"!c", "!a", "!b"}},
		{"then timestamp", []SpaceChild{child("!a", "", 5), child("!b", "", 1)}, []string{"!b", "!a"}},
		{"then room ID", []SpaceChild{child("!b", "", 1), child("!a", "", 1)}, []string{"!a", "!b"}},
		{"invalid order ignored", []SpaceChild{child("!a", "\x01bad", 1), child("!b", "m", 2)}, []string{"!b", "!a"}},
		{"overlong order ignored", []SpaceChild{child("!a", strings.Repeat("a", 51), 1), child("!b", "m", 2)}, []string{"!b", "!a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sortChildren(tc.in)
			for i, id := range tc.want {
				if tc.in[i].StateKey != id {
					t.Fatalf("position %d = %s, want %s", i, tc.in[i].StateKey, id)
				}
			}
		})
	}
}

package clientapi

import (
	"crypto/rand"
	"encoding/json"
	"math/big"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/atoll-matrix/atoll/homeserver/storage"
)

const alphanum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randomString(n int) string {
	b := make([]byte, n)
	for i := range b {
		x, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphanum))))
		b[i] = alphanum[x.Int64()]
	}
	return string(b)
}

// dummyHash is a bcrypt hash to compare against when a user does not exist, so that login
// takes as long either way.
func (s *Server) dummyHash() []byte {
	s.dummyOnce.Do(func() {
		s.dummy, _ = bcrypt.GenerateFromPassword([]byte("atoll-dummy"), s.opts.BcryptCost)
	})
	return s.dummy
}

// ClientEvent is an event as the Client-Server API returns it.
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

// clientEvent converts a stored event. viewer is the requesting (user, device), which sees its
// own transaction IDs; withRoomID keeps room_id (omitted inside /sync's rooms map).
func clientEvent(e storage.EventRow, viewerUser, viewerDevice string, withRoomID bool) ClientEvent {
	var pdu struct {
		Content  json.RawMessage `json:"content"`
		Redacts  string          `json:"redacts"`
		Unsigned map[string]any  `json:"unsigned"`
	}
	_ = json.Unmarshal(e.JSON, &pdu)
	if len(pdu.Content) == 0 || string(pdu.Content) == "null" {
		pdu.Content = json.RawMessage("{}")
	}
	ce := ClientEvent{
		Content:        pdu.Content,
		EventID:        e.EventID,
		OriginServerTS: e.OriginServerTS,
		Sender:         e.Sender,
		StateKey:       e.StateKey,
		Type:           e.Type,
		Redacts:        pdu.Redacts,
		Unsigned:       map[string]any{},
	}
	if ce.Type == "m.room.redaction" && ce.Redacts == "" {
		var c struct {
			Redacts string `json:"redacts"`
		}
		_ = json.Unmarshal(pdu.Content, &c)
		ce.Redacts = c.Redacts
	}
	if withRoomID {
		ce.RoomID = e.RoomID
	}
	for k, v := range pdu.Unsigned {
		if k == "invite_room_state" || k == "knock_room_state" {
			ce.Unsigned[k] = v
		}
	}
	ce.Unsigned["age"] = time.Now().UnixMilli() - e.OriginServerTS
	if e.TxnID != "" && e.Sender == viewerUser && e.TxnDevice == viewerDevice {
		ce.Unsigned["transaction_id"] = e.TxnID
	}
	if e.RedactedBecause != "" {
		ce.Unsigned["redacted_because"] = map[string]any{"event_id": e.RedactedBecause, "type": "m.room.redaction", "sender": e.Sender, "content": map[string]any{}}
	}
	return ce
}

func clientEvents(rows []storage.EventRow, viewerUser, viewerDevice string, withRoomID bool) []ClientEvent {
	out := make([]ClientEvent, 0, len(rows))
	for _, r := range rows {
		out = append(out, clientEvent(r, viewerUser, viewerDevice, withRoomID))
	}
	return out
}

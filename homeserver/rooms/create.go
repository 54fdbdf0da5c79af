package rooms

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// InitialStateEvent is a state event of a createRoom request.
type InitialStateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateOptions are the fields of a createRoom request.
type CreateOptions struct {
	Creator    string
	Version    gomatrixserverlib.RoomVersion
	Preset     string
	Visibility string
	Name       string
	Topic      string
	Alias      string // full alias, already validated as local
	Invite     []string
	// RemoteInvite are invitees on other servers: they get the trusted preset's power like
	// local invitees, but their invites go out through the federation invite API afterwards.
	RemoteInvite              []string
	IsDirect                  bool
	InitialState              []InitialStateEvent
	CreationContent           json.RawMessage
	PowerLevelContentOverride json.RawMessage
	// Predecessor, when set, links the new room to the room it upgrades.
	Predecessor *Predecessor
}

// Predecessor points at the room an upgraded room replaces.
type Predecessor struct {
	RoomID  string `json:"room_id"`
	EventID string `json:"event_id,omitempty"`
}

// Presets of createRoom.
const (
	PresetPrivateChat        = "private_chat"
	PresetTrustedPrivateChat = "trusted_private_chat"
	PresetPublicChat         = "public_chat"
)

// ErrAliasInUse is returned when the requested alias exists.
var ErrAliasInUse = errors.New("room alias in use")

const idChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

func randomID(n int) string {
	b := make([]byte, n)
	for i := range b {
		x, _ := rand.Int(rand.Reader, big.NewInt(int64(len(idChars))))
		b[i] = idChars[x.Int64()]
	}
	return string(b)
}

func strp(s string) *string { return &s }

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("{}")
	}
	return b
}

// CreateRoom creates a room with the events createRoom specifies, in one transaction.
func (e *Engine) CreateRoom(ctx context.Context, h *Host, o CreateOptions) (string, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(o.Version)
	if err != nil {
		return "", ErrUnsupportedVersion
	}
	preset := o.Preset
	if preset == "" {
		preset = PresetPrivateChat
		if o.Visibility == "public" {
			preset = PresetPublicChat
		}
	}
	joinRule, historyVis, guestAccess := spec.Invite, "shared", "can_join"
	switch preset {
	case PresetPublicChat:
		joinRule, guestAccess = spec.Public, "forbidden"
	case PresetPrivateChat, PresetTrustedPrivateChat:
	default:
		return "", &BadEventError{Reason: fmt.Sprintf("unknown preset %q", preset)}
	}

	createContent := map[string]any{}
	if len(o.CreationContent) > 0 {
		if err := json.Unmarshal(o.CreationContent, &createContent); err != nil {
			return "", &BadEventError{Reason: "creation_content must be an object"}
		}
	}
	createContent["room_version"] = string(o.Version)
	if verImpl.CreatorInCreateEvent() {
		createContent["creator"] = o.Creator
	} else {
		delete(createContent, "creator")
	}
	if o.Predecessor != nil {
		createContent["predecessor"] = o.Predecessor
	}
	var additionalCreators []string
	if verImpl.PrivilegedCreators() && preset == PresetTrustedPrivateChat {
		additionalCreators = append(append(additionalCreators, o.Invite...), o.RemoteInvite...)
		if len(additionalCreators) > 0 {
			createContent["additional_creators"] = additionalCreators
		}
	}

	users := map[string]int64{}
	if !verImpl.PrivilegedCreators() {
		users[o.Creator] = 100
		if preset == PresetTrustedPrivateChat {
			for _, inv := range append(append([]string{}, o.Invite...), o.RemoteInvite...) {
				users[inv] = 100
			}
		}
	}
	pl := map[string]any{
		"users":          users,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         0,
		"events": map[string]int64{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]int64{"room": 50},
	}
	if len(o.PowerLevelContentOverride) > 0 {
		var override map[string]any
		if err := json.Unmarshal(o.PowerLevelContentOverride, &override); err != nil {
			return "", &BadEventError{Reason: "power_level_content_override must be an object"}
		}
		for k, v := range override {
			pl[k] = v
		}
	}

	type step struct {
		typ      string
		stateKey *string
		content  json.RawMessage
	}
	steps := []step{
		{spec.MRoomCreate, strp(""), mustJSON(createContent)},
		{spec.MRoomMember, strp(o.Creator), mustJSON(map[string]any{"membership": spec.Join})},
		{spec.MRoomPowerLevels, strp(""), mustJSON(pl)},
	}
	if o.Alias != "" {
		steps = append(steps, step{spec.MRoomCanonicalAlias, strp(""), mustJSON(map[string]string{"alias": o.Alias})})
	}
	steps = append(steps,
		step{spec.MRoomJoinRules, strp(""), mustJSON(map[string]string{"join_rule": joinRule})},
		step{spec.MRoomHistoryVisibility, strp(""), mustJSON(map[string]string{"history_visibility": historyVis})},
	)
	if guestAccess != "" {
		steps = append(steps, step{"m.room.guest_access", strp(""), mustJSON(map[string]string{"guest_access": guestAccess})})
	}
	for _, s := range o.InitialState {
		if s.Type == spec.MRoomCreate {
			continue
		}
		steps = append(steps, step{s.Type, strp(s.StateKey), s.Content})
	}
	if o.Name != "" {
		steps = append(steps, step{spec.MRoomName, strp(""), mustJSON(map[string]string{"name": o.Name})})
	}
	if o.Topic != "" {
		steps = append(steps, step{spec.MRoomTopic, strp(""), mustJSON(map[string]string{"topic": o.Topic})})
	}
	for _, inv := range o.Invite {
		c := map[string]any{"membership": spec.Invite}
		if o.IsDirect {
			c["is_direct"] = true
		}
		steps = append(steps, step{spec.MRoomMember, strp(inv), mustJSON(c)})
	}

	roomID := ""
	if !verImpl.DomainlessRoomIDs() {
		roomID = fmt.Sprintf("!%s:%s", randomID(18), h.ServerName)
	}
	var persisted []Persisted
	err = h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		persisted = persisted[:0]
		if o.Alias != "" {
			if _, _, err := storage.AliasRoom(ctx, q, o.Alias); err == nil {
				return ErrAliasInUse
			}
		}
		w := &writer{engine: e, host: h, q: q, verImpl: verImpl, state: map[storage.StateKeyTuple]gomatrixserverlib.PDU{}, loaded: true,
			room: storage.Room{RoomID: roomID, Version: string(o.Version), Creator: o.Creator, Extremities: []string{}}}
		for _, s := range steps {
			p, err := w.send(ctx, Request{RoomID: w.room.RoomID, Sender: o.Creator, Type: s.typ, StateKey: s.stateKey, Content: s.content})
			if err != nil {
				return fmt.Errorf("%s event: %w", s.typ, err)
			}
			persisted = append(persisted, p)
		}
		roomID = w.room.RoomID
		if o.Alias != "" {
			if err := storage.InsertAlias(ctx, q, o.Alias, roomID, o.Creator); err != nil {
				if errors.Is(err, storage.ErrExists) {
					return ErrAliasInUse
				}
				return err
			}
		}
		if o.Visibility == "public" {
			if err := storage.SetPublished(ctx, q, roomID, true); err != nil {
				return err
			}
		}
		return w.finish(ctx)
	})
	if err != nil {
		return "", err
	}
	e.publish(persisted)
	return roomID, nil
}

// Now is the engine's clock, for callers stamping related rows.
func (e *Engine) Now() time.Time { return e.now() }

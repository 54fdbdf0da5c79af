package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

type transaction struct {
	Origin         spec.ServerName         `json:"origin"`
	OriginServerTS spec.Timestamp          `json:"origin_server_ts"`
	PDUs           []json.RawMessage       `json:"pdus"`
	EDUs           []gomatrixserverlib.EDU `json:"edus"`
}

type pduResult struct {
	Error string `json:"error,omitempty"`
}

// send handles PUT /send/{txnID}: PDUs are checked (hashes, signatures, auth rules) and
// placed in their rooms one by one; EDUs update typing, receipts, device lists and to-device.
func (s *Server) send(w http.ResponseWriter, r *http.Request, req *request) error {
	txnID := r.PathValue("txnID")
	var txn transaction
	if err := decode(req, &txn); err != nil {
		return err
	}
	if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
		return mxhttp.BadJSON("a transaction carries at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs)
	}
	if txn.Origin != "" && txn.Origin != req.Origin {
		return mxhttp.Forbidden("transaction origin does not match the signing server")
	}
	// A retried transaction is answered without applying it twice.
	var seen bool
	err := req.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		tag, err := q.Exec(r.Context(), `INSERT INTO federation_inbound_txns (origin, txn_id, received_ts) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, string(req.Origin), txnID, time.Now().UnixMilli())
		seen = err == nil && tag.RowsAffected() == 0
		return err
	})
	if err != nil {
		return err
	}
	results := map[string]pduResult{}
	if !seen {
		for _, raw := range txn.PDUs {
			id, res := s.receivePDU(r.Context(), req.T, req.Origin, raw)
			if id != "" {
				results[id] = res
			}
		}
		for _, edu := range txn.EDUs {
			s.receiveEDU(r.Context(), req.T, req.Origin, edu)
		}
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"pdus": results})
}

// receivePDU checks and persists one PDU, fetching missing prev events from the origin.
func (s *Server) receivePDU(ctx context.Context, t *clientapi.Tenant, origin spec.ServerName, raw json.RawMessage) (string, pduResult) {
	var header struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(raw, &header); err != nil {
		return "", pduResult{}
	}
	verImpl, err := rooms.RoomVersion(ctx, t.Host, header.RoomID)
	if err != nil {
		// A room we are not in: nothing to do with it (the spec lets us drop it).
		return "", pduResult{}
	}
	ev, err := s.verifyPDU(ctx, verImpl, raw)
	if err != nil {
		s.fed.pdus.WithLabelValues("invalid").Inc()
		return eventIDOf(verImpl, raw), pduResult{Error: err.Error()}
	}
	outcome, err := s.engine.PersistRemote(ctx, t.Host, ev, origin)
	var missing *rooms.MissingEventsError
	if errors.As(err, &missing) {
		if ferr := s.fetchMissing(ctx, t, origin, verImpl, ev); ferr != nil {
			return ev.EventID(), pduResult{Error: "missing prev or auth events: " + ferr.Error()}
		}
		outcome, err = s.engine.PersistRemote(ctx, t.Host, ev, origin)
	}
	if err != nil {
		s.log.WarnContext(ctx, "inbound PDU not persisted", "tenant", t.TenantID, "origin", origin, "event_id", ev.EventID(), "err", err)
		return ev.EventID(), pduResult{Error: err.Error()}
	}
	s.fed.pdus.WithLabelValues(string(outcome)).Inc()
	if outcome == rooms.Rejected {
		return ev.EventID(), pduResult{Error: "event failed the auth rules"}
	}
	return ev.EventID(), pduResult{}
}

func eventIDOf(verImpl gomatrixserverlib.IRoomVersion, raw json.RawMessage) string {
	var withID struct {
		EventID string `json:"event_id"`
	}
	if json.Unmarshal(raw, &withID) == nil && withID.EventID != "" {
		return withID.EventID
	}
	// Room versions 3+ derive the ID from the hash; a parse gives it even when checks fail.
	if ev, err := verImpl.NewEventFromTrustedJSON(raw, false); err == nil {
		return ev.EventID()
	}
	return ""
}

// verifyPDU parses untrusted JSON (checking the content hash, redacting on mismatch as the
// spec says) and verifies the sending servers' signatures.
func (s *Server) verifyPDU(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, raw json.RawMessage) (gomatrixserverlib.PDU, error) {
	if len(raw) > 65536 {
		return nil, errors.New("event exceeds 65536 bytes")
	}
	ev, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, err
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, s.keyRing, rooms.UserIDForSender); err != nil {
		return nil, err
	}
	return ev, nil
}

// fetchMissing asks the origin for the events between our forward extremities and ev, and
// persists them oldest first. Auth events it cannot place are stored as outliers.
func (s *Server) fetchMissing(ctx context.Context, t *clientapi.Tenant, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU) error {
	var room storage.Room
	if err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		room, err = storage.GetRoom(ctx, q, ev.RoomID().String())
		return err
	}); err != nil {
		return err
	}
	client := s.Client(t.Host)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := client.LookupMissingEvents(ctx, t.ServerName, origin, ev.RoomID().String(), fclient.MissingEvents{
		Limit: 20, EarliestEvents: room.Extremities, LatestEvents: []string{ev.EventID()},
	}, verImpl.Version())
	if err != nil {
		return err
	}
	var events []gomatrixserverlib.PDU
	for _, raw := range resp.Events.UntrustedEvents(verImpl.Version()) {
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, raw, s.keyRing, rooms.UserIDForSender); err != nil {
			continue
		}
		events = append(events, raw)
	}
	// Oldest first, by depth.
	for i := 1; i < len(events); i++ {
		for j := i; j > 0 && events[j].Depth() < events[j-1].Depth(); j-- {
			events[j], events[j-1] = events[j-1], events[j]
		}
	}
	for _, m := range events {
		if _, err := s.engine.PersistRemote(ctx, t.Host, m, origin); err != nil {
			var missing *rooms.MissingEventsError
			if errors.As(err, &missing) {
				// Still a gap (more than the limit behind): the auth chain from /event_auth lets
				// the event be checked; its prev events stay unknown.
				return s.fetchAuthChain(ctx, t, origin, verImpl, ev)
			}
			return err
		}
	}
	return nil
}

// fetchAuthChain stores ev's auth chain as outliers.
func (s *Server) fetchAuthChain(ctx context.Context, t *clientapi.Tenant, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU) error {
	resp, err := s.Client(t.Host).GetEventAuth(ctx, t.ServerName, origin, verImpl.Version(), ev.RoomID().String(), ev.EventID())
	if err != nil {
		return err
	}
	var chain []gomatrixserverlib.PDU
	for _, a := range resp.AuthEvents.UntrustedEvents(verImpl.Version()) {
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, a, s.keyRing, rooms.UserIDForSender); err == nil {
			chain = append(chain, a)
		}
	}
	return s.engine.StoreOutliers(ctx, t.Host, chain, origin)
}

// receiveEDU applies an ephemeral event from origin; EDUs about another server's users are
// ignored.
func (s *Server) receiveEDU(ctx context.Context, t *clientapi.Tenant, origin spec.ServerName, edu gomatrixserverlib.EDU) {
	fromOrigin := func(user string) bool {
		u, err := spec.NewUserID(user, true)
		return err == nil && u.Domain() == origin
	}
	switch edu.Type {
	case spec.MTyping:
		var c struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
			Typing bool   `json:"typing"`
		}
		if json.Unmarshal(edu.Content, &c) != nil || !fromOrigin(c.UserID) {
			return
		}
		if s.typing != nil {
			s.typing.Set(t.TenantID, c.RoomID, c.UserID, c.Typing, 30*time.Second)
		}
	case spec.MReceipt:
		var c map[string]map[string]map[string]struct {
			Data     map[string]any `json:"data"`
			EventIDs []string       `json:"event_ids"`
		}
		if json.Unmarshal(edu.Content, &c) != nil {
			return
		}
		_ = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
			for roomID, types := range c {
				for typ, users := range types {
					if typ != "m.read" {
						continue
					}
					for user, rc := range users {
						if !fromOrigin(user) || len(rc.EventIDs) == 0 {
							continue
						}
						thread, _ := rc.Data["thread_id"].(string)
						if _, err := storage.PutReceipt(ctx, q, storage.Receipt{RoomID: roomID, Type: typ, UserID: user, ThreadID: thread,
							EventID: rc.EventIDs[0], TS: time.Now().UnixMilli()}); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
	case spec.MPresence:
		if !s.receivePresence(ctx, t, origin, json.RawMessage(edu.Content)) {
			return
		}
	case spec.MDeviceListUpdate, "m.signing_key_update":
		var c struct {
			UserID string `json:"user_id"`
		}
		if json.Unmarshal(edu.Content, &c) != nil || !fromOrigin(c.UserID) {
			return
		}
		_ = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
			_, err := storage.MarkDeviceListChanged(ctx, q, c.UserID)
			return err
		})
	case spec.MDirectToDevice:
		var c struct {
			Sender    string                                `json:"sender"`
			Type      string                                `json:"type"`
			MessageID string                                `json:"message_id"`
			Messages  map[string]map[string]json.RawMessage `json:"messages"`
		}
		if json.Unmarshal(edu.Content, &c) != nil || !fromOrigin(c.Sender) {
			return
		}
		_ = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
			for user, devices := range c.Messages {
				u, err := spec.NewUserID(user, true)
				if err != nil || u.Domain() != t.ServerName {
					continue
				}
				for dev, content := range devices {
					targets := []string{dev}
					if dev == "*" {
						devs, err := storage.ListDevices(ctx, q, user)
						if err != nil {
							return err
						}
						targets = targets[:0]
						for _, d := range devs {
							targets = append(targets, d.DeviceID)
						}
					}
					for _, d := range targets {
						if _, err := storage.QueueToDevice(ctx, q, user, d, c.Sender, c.Type, content); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
	default:
		return
	}
	if s.notify != nil {
		s.notify(t.TenantID)
	}
}

package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// End-to-end encryption across servers: the resident side answers other servers' key
// queries, key claims and device list requests for the tenant's own users; the client side
// (clientapi.RemoteKeys) asks other servers and queues device list updates and to-device
// messages for them.

// maxEDUContent keeps an EDU under the spec's 64 KiB limit with room for its envelope.
const maxEDUContent = 60 << 10

var _ clientapi.RemoteKeys = (*Server)(nil)

// localUser reports whether userID is a valid user ID of tenant t.
func localUser(t *clientapi.Tenant, userID string) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && u.Domain() == t.ServerName
}

// userKeysQuery answers POST /user/keys/query for the tenant's users; others are left out.
func (s *Server) userKeysQuery(w http.ResponseWriter, r *http.Request, req *request) error {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := decode(req, &body); err != nil {
		return err
	}
	if body.DeviceKeys == nil {
		return mxhttp.MissingParam("device_keys is required")
	}
	users := map[string][]string{}
	for u, devs := range body.DeviceKeys {
		if localUser(req.T, u) {
			users[u] = devs
		}
	}
	resp := clientapi.KeysQueryResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	ctx := r.Context()
	err := req.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		return clientapi.LocalKeys(ctx, q, users, "", &resp)
	})
	if err != nil {
		return fmt.Errorf("federation keys query: %w", err)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{
		"device_keys":       resp.DeviceKeys,
		"master_keys":       resp.MasterKeys,
		"self_signing_keys": resp.SelfSigningKeys,
	})
}

// userKeysClaim answers POST /user/keys/claim for the tenant's users' devices.
func (s *Server) userKeysClaim(w http.ResponseWriter, r *http.Request, req *request) error {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := decode(req, &body); err != nil {
		return err
	}
	if body.OneTimeKeys == nil {
		return mxhttp.MissingParam("one_time_keys is required")
	}
	users := map[string]map[string]string{}
	for u, devs := range body.OneTimeKeys {
		if localUser(req.T, u) {
			users[u] = devs
		}
	}
	ctx := r.Context()
	var claimed map[string]map[string]map[string]json.RawMessage
	err := req.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		claimed, err = clientapi.ClaimLocalKeys(ctx, q, users)
		return err
	})
	if err != nil {
		return fmt.Errorf("federation keys claim: %w", err)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"one_time_keys": claimed})
}

// deviceListStream returns the newest device list position of a user and the one before,
// 0 when there is none: the stream_id and prev_id other servers chain updates by.
func deviceListStream(ctx context.Context, q pgdb.DBTX, userID string) (last, prev int64, err error) {
	rows, err := q.Query(ctx, `SELECT stream_pos FROM device_list_changes WHERE user_id = $1 ORDER BY stream_pos DESC LIMIT 2`, userID)
	if err != nil {
		return 0, 0, fmt.Errorf("device list stream of %s: %w", userID, err)
	}
	pos, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, 0, fmt.Errorf("device list stream of %s: %w", userID, err)
	}
	if len(pos) > 0 {
		last = pos[0]
	}
	if len(pos) > 1 {
		prev = pos[1]
	}
	return last, prev, nil
}

// userDevice is one entry of GET /user/devices.
type userDevice struct {
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	Keys        json.RawMessage `json:"keys"`
}

// deviceEntry splits a keys/query device object into its keys (unsigned removed) and the
// display name kept in unsigned.
func deviceEntry(deviceID string, raw json.RawMessage) (userDevice, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return userDevice{}, fmt.Errorf("device %s keys: %w", deviceID, err)
	}
	d := userDevice{DeviceID: deviceID}
	if u, ok := obj["unsigned"]; ok {
		var unsigned struct {
			Name string `json:"device_display_name"`
		}
		_ = json.Unmarshal(u, &unsigned)
		d.DisplayName = unsigned.Name
		delete(obj, "unsigned")
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return userDevice{}, fmt.Errorf("device %s keys: %w", deviceID, err)
	}
	d.Keys = b
	return d, nil
}

// userDevices answers GET /user/devices/{userID}: the user's devices with keys, the stream
// position of the list and the master and self-signing keys.
func (s *Server) userDevices(w http.ResponseWriter, r *http.Request, req *request) error {
	userID := r.PathValue("userID")
	if !localUser(req.T, userID) {
		return mxhttp.InvalidParam("user is not on this server")
	}
	ctx := r.Context()
	resp := clientapi.KeysQueryResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	var streamID int64
	err := req.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if err := clientapi.LocalKeys(ctx, q, map[string][]string{userID: nil}, "", &resp); err != nil {
			return err
		}
		var err error
		streamID, _, err = deviceListStream(ctx, q, userID)
		return err
	})
	if err != nil {
		return fmt.Errorf("federation user devices: %w", err)
	}
	out := struct {
		UserID         string          `json:"user_id"`
		StreamID       int64           `json:"stream_id"`
		Devices        []userDevice    `json:"devices"`
		MasterKey      json.RawMessage `json:"master_key,omitempty"`
		SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
	}{UserID: userID, StreamID: streamID, Devices: []userDevice{},
		MasterKey: resp.MasterKeys[userID], SelfSigningKey: resp.SelfSigningKeys[userID]}
	for id, raw := range resp.DeviceKeys[userID] {
		d, err := deviceEntry(id, raw)
		if err != nil {
			return err
		}
		out.Devices = append(out.Devices, d)
	}
	return mxhttp.JSON(w, http.StatusOK, out)
}

// fedRequest sends a signed federation request as tenant t and decodes the answer.
func (s *Server) fedRequest(ctx context.Context, t *clientapi.Tenant, server, method, path string, body, out any) error {
	fr := fclient.NewFederationRequest(method, t.ServerName, spec.ServerName(server), path)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	if err := fr.Sign(t.ServerName, t.KeyID, t.Key); err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	hr, err := fr.HTTPRequest()
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if err := s.Client(t.Host).DoRequestAndParseResponse(ctx, hr.WithContext(ctx), out); err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, path, server, err)
	}
	return nil
}

// onServer reports whether userID belongs to server.
func onServer(userID, server string) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && string(u.Domain()) == server
}

// QueryKeys asks server for its users' device and cross-signing keys. The key objects are
// kept as received, so their signatures still verify; users of other servers in the answer
// are dropped.
func (s *Server) QueryKeys(ctx context.Context, t *clientapi.Tenant, server string, users map[string][]string) (clientapi.KeysQueryResponse, error) {
	body := map[string]map[string][]string{"device_keys": {}}
	for u, devs := range users {
		if devs == nil {
			devs = []string{}
		}
		body["device_keys"][u] = devs
	}
	var got clientapi.KeysQueryResponse
	if err := s.fedRequest(ctx, t, server, http.MethodPost, "/_matrix/federation/v1/user/keys/query", body, &got); err != nil {
		return clientapi.KeysQueryResponse{}, err
	}
	out := clientapi.KeysQueryResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
	}
	for u, devs := range got.DeviceKeys {
		if onServer(u, server) {
			out.DeviceKeys[u] = devs
		}
	}
	for u, k := range got.MasterKeys {
		if onServer(u, server) {
			out.MasterKeys[u] = k
		}
	}
	for u, k := range got.SelfSigningKeys {
		if onServer(u, server) {
			out.SelfSigningKeys[u] = k
		}
	}
	return out, nil
}

// ClaimKeys claims one-time keys of server's users' devices.
func (s *Server) ClaimKeys(ctx context.Context, t *clientapi.Tenant, server string, devices map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var got struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := s.fedRequest(ctx, t, server, http.MethodPost, "/_matrix/federation/v1/user/keys/claim",
		map[string]any{"one_time_keys": devices}, &got); err != nil {
		return nil, err
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	for u, devs := range got.OneTimeKeys {
		if onServer(u, server) {
			out[u] = devs
		}
	}
	return out, nil
}

// SendToDevice queues to-device messages for users of server as m.direct_to_device EDUs: one
// for the whole request, or one per user when that would be too large.
func (s *Server) SendToDevice(ctx context.Context, t *clientapi.Tenant, server, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error {
	type content struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	batches := []map[string]map[string]json.RawMessage{messages}
	if b, err := json.Marshal(messages); err != nil {
		return fmt.Errorf("to-device messages: %w", err)
	} else if len(b) > maxEDUContent {
		batches = batches[:0]
		for u, devs := range messages {
			batches = append(batches, map[string]map[string]json.RawMessage{u: devs})
		}
	}
	for i, msgs := range batches {
		id := messageID
		if len(batches) > 1 {
			id = fmt.Sprintf("%s:%d", messageID, i)
		}
		b, err := json.Marshal(content{Sender: sender, Type: eventType, MessageID: id, Messages: msgs})
		if err != nil {
			return fmt.Errorf("to-device EDU: %w", err)
		}
		if len(b) > maxEDUContent {
			return mxhttp.TooLarge("to-device messages for one user exceed the federation limit")
		}
		edu := gomatrixserverlib.EDU{Type: spec.MDirectToDevice, Origin: string(t.ServerName), Destination: server, Content: b}
		if err := s.EnqueueEDU(ctx, t.Host, []string{server}, edu); err != nil {
			return fmt.Errorf("queue to-device EDU for %s: %w", server, err)
		}
	}
	return nil
}

// deviceListUpdate is the content of an m.device_list_update EDU.
type deviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// DeviceListChanged queues m.device_list_update EDUs (and m.signing_key_update for
// cross-signing changes) for every other server with a user sharing a room with userID.
func (s *Server) DeviceListChanged(ctx context.Context, t *clientapi.Tenant, userID string, deviceIDs []string, deleted, crossSigning bool) error {
	var servers []string
	var updates []deviceListUpdate
	var signing map[string]json.RawMessage
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		shared, err := storage.SharedRoomUsers(ctx, q, userID)
		if err != nil {
			return err
		}
		seen := map[string]bool{string(t.ServerName): true}
		for _, u := range shared {
			_, srv, ok := strings.Cut(u, ":")
			if ok && !seen[srv] {
				seen[srv] = true
				servers = append(servers, srv)
			}
		}
		if len(servers) == 0 {
			return nil
		}
		streamID, prevID, err := deviceListStream(ctx, q, userID)
		if err != nil {
			return err
		}
		var prev []int64
		if prevID > 0 {
			prev = []int64{prevID}
		}
		keys := clientapi.KeysQueryResponse{
			DeviceKeys:      map[string]map[string]json.RawMessage{},
			MasterKeys:      map[string]json.RawMessage{},
			SelfSigningKeys: map[string]json.RawMessage{},
			UserSigningKeys: map[string]json.RawMessage{},
		}
		if err := clientapi.LocalKeys(ctx, q, map[string][]string{userID: nil}, "", &keys); err != nil {
			return err
		}
		names := map[string]string{}
		devs, err := storage.ListDevices(ctx, q, userID)
		if err != nil {
			return err
		}
		for _, d := range devs {
			names[d.DeviceID] = d.DisplayName
		}
		one := func(id string, gone bool) error {
			up := deviceListUpdate{UserID: userID, DeviceID: id, StreamID: streamID, PrevID: prev, Deleted: gone}
			if raw, ok := keys.DeviceKeys[userID][id]; ok && !gone {
				d, err := deviceEntry(id, raw)
				if err != nil {
					return err
				}
				up.Keys = d.Keys
			}
			if !gone {
				up.DisplayName = names[id]
			}
			updates = append(updates, up)
			return nil
		}
		switch {
		case len(deviceIDs) > 0:
			for _, id := range deviceIDs {
				_, exists := names[id]
				if err := one(id, deleted || !exists); err != nil {
					return err
				}
			}
		default:
			// No device named: every device the user has now; when devices went away
			// unnamed, one update without a device, which makes the receiver refetch.
			for _, d := range devs {
				if err := one(d.DeviceID, false); err != nil {
					return err
				}
			}
			if deleted && len(devs) == 0 {
				updates = append(updates, deviceListUpdate{UserID: userID, StreamID: streamID, PrevID: prev, Deleted: true})
			}
		}
		if crossSigning {
			signing = map[string]json.RawMessage{}
			if k, ok := keys.MasterKeys[userID]; ok {
				signing["master_key"] = k
			}
			if k, ok := keys.SelfSigningKeys[userID]; ok {
				signing["self_signing_key"] = k
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("device list update of %s: %w", userID, err)
	}
	if len(servers) == 0 {
		return nil
	}
	var errs []error
	for _, up := range updates {
		b, err := json.Marshal(up)
		if err != nil {
			return fmt.Errorf("device list update of %s: %w", userID, err)
		}
		errs = append(errs, s.EnqueueEDU(ctx, t.Host, servers, gomatrixserverlib.EDU{Type: spec.MDeviceListUpdate, Origin: string(t.ServerName), Content: b}))
	}
	if signing != nil {
		c := map[string]any{"user_id": userID}
		for k, v := range signing {
			c[k] = v
		}
		b, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("signing key update of %s: %w", userID, err)
		}
		errs = append(errs, s.EnqueueEDU(ctx, t.Host, servers, gomatrixserverlib.EDU{Type: "m.signing_key_update", Origin: string(t.ServerName), Content: b}))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("queue device list update of %s: %w", userID, err)
	}
	return nil
}

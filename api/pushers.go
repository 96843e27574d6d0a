package api

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/pusher"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
	"sort"
	"strings"
	"unicode/utf8"
)

// Pushers (spec: client-server API, "Push Notifications", GET /pushers
// and POST /pushers/set). The pusher package delivers to them.
func (s *Server) pusherRoutes() []route {
	return []route{
		{"GET", v3 + "/pushers", s.getPushers, authRequired, rateNone},
		{"POST", v3 + "/pushers/set", s.setPusher, authRequired, rateNone},
	}
}

// PusherChanges hears of changes to a user's pushers, so that delivery
// starts, changes and stops with them; *pusher.Sender is one.
type PusherChanges interface {
	PushersChanged(ctx context.Context, user roomdag.UserID) error
}

// Limits of POST /pushers/set (spec: app_id at most 64 characters,
// pushkey at most 512 bytes).
const (
	maxAppIDChars  = 64
	maxPushKeySize = 512
)

type pusherJSON struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

func (s *Server) getPushers(r *http.Request) (any, error) {
	ps, err := s.store.Pushers(r.Context(), requester(r).UserID)
	if err != nil {
		return nil, err
	}
	out := struct {
		Pushers []pusherJSON `json:"pushers"`
	}{Pushers: make([]pusherJSON, 0, len(ps))}
	for _, p := range ps {
		out.Pushers = append(out.Pushers, pusherJSON{PushKey: p.PushKey, Kind: p.Kind, AppID: p.AppID,
			AppDisplayName: p.AppDisplayName, DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag,
			Lang: p.Lang, Data: p.Data})
	}
	return out, nil
}

// pusherBody is a POST /pushers/set body, read field by field: kind null
// (delete) differs from kind absent (an error).
type pusherBody map[string]json.RawMessage

// str reads a string field: ok is false when it is absent or null.
func (b pusherBody) str(key string) (v string, ok bool, err error) {
	raw, present := b[key]
	if !present || string(raw) == "null" {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false, httpapi.BadJSON("%s must be a string", key)
	}
	return v, true, nil
}

func (s *Server) setPusher(r *http.Request) (any, error) {
	var b pusherBody
	if err := httpapi.DecodeJSON(r, &b); err != nil {
		return nil, err
	}
	rq := requester(r)
	ctx := r.Context()
	fields := map[string]string{}
	var missing []string
	for _, k := range []string{"kind", "app_id", "pushkey", "app_display_name", "device_display_name", "lang", "profile_tag"} {
		v, ok, err := b.str(k)
		if err != nil {
			return nil, err
		}
		if ok {
			fields[k] = v
		}
	}
	_, kindGiven := b["kind"]
	if !kindGiven {
		missing = append(missing, "kind")
	}
	for _, k := range []string{"app_id", "pushkey"} {
		if _, ok := fields[k]; !ok {
			missing = append(missing, k)
		}
	}
	kind, deleting := fields["kind"], kindGiven && string(b["kind"]) == "null"
	if kindGiven && !deleting && kind == "" {
		return nil, httpapi.InvalidParam("kind must be \"http\", or null to delete the pusher")
	}
	if !deleting {
		for _, k := range []string{"app_display_name", "device_display_name", "lang"} {
			if _, ok := fields[k]; !ok {
				missing = append(missing, k)
			}
		}
		if raw, ok := b["data"]; !ok || string(raw) == "null" {
			missing = append(missing, "data")
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, httpapi.MissingParam("Missing parameters: %s", strings.Join(missing, ", "))
	}
	appID, pushKey := fields["app_id"], fields["pushkey"]
	if appID == "" || utf8.RuneCountInString(appID) > maxAppIDChars {
		return nil, httpapi.InvalidParam("app_id must be 1 to %d characters long", maxAppIDChars)
	}
	if pushKey == "" || len(pushKey) > maxPushKeySize {
		return nil, httpapi.InvalidParam("pushkey must be 1 to %d bytes long", maxPushKeySize)
	}
	if deleting {
		if err := s.store.DeletePusher(ctx, rq.UserID, appID, pushKey); err != nil {
			return nil, err
		}
		return struct{}{}, s.pushersChanged(ctx, rq.UserID)
	}
	switch kind {
	case "http":
	case "email":
		return nil, httpapi.InvalidParam("email pushers are not supported by this server: use an http pusher")
	default:
		return nil, httpapi.InvalidParam("unknown pusher kind %q: only \"http\" is supported", kind)
	}
	if _, err := pusher.ParseHTTPData(b["data"]); err != nil {
		switch {
		case errors.Is(err, pusher.ErrMissingURL):
			return nil, httpapi.MissingParam("%v", err)
		case errors.Is(err, pusher.ErrDataNotObject):
			return nil, httpapi.BadJSON("%v", err)
		}
		return nil, httpapi.InvalidParam("%v", err)
	}
	var appendPusher bool
	if raw, ok := b["append"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &appendPusher); err != nil {
			return nil, httpapi.BadJSON("append must be a boolean")
		}
	}
	removed, err := s.store.SetPusher(ctx, storage.Pusher{
		User: rq.UserID, DeviceID: rq.DeviceID, Kind: kind, AppID: appID, PushKey: pushKey,
		AppDisplayName: fields["app_display_name"], DeviceDisplayName: fields["device_display_name"],
		ProfileTag: fields["profile_tag"], Lang: fields["lang"], Data: b["data"],
		PushKeyTS: s.clock.Now().UnixMilli(),
	}, appendPusher)
	if err != nil {
		return nil, err
	}
	for _, u := range append(removed, rq.UserID) {
		if err := s.pushersChanged(ctx, u); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

// pushersChanged tells delivery, if the server delivers, that a user's
// pushers changed.
func (s *Server) pushersChanged(ctx context.Context, user roomdag.UserID) error {
	if s.cfg.Pushers == nil {
		return nil
	}
	return s.cfg.Pushers.PushersChanged(ctx, user)
}

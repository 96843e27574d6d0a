package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// The compliance archive's part of the client API (package compliance):
// media uploads and downloads and history reads are recorded in the
// request's path, before the answer, so that no read goes unrecorded;
// and the archive's admin API, for server admins only.

const complianceAdmin = "/_persistentchat/admin/v1/compliance"

func (s *Server) complianceRoutes() []route {
	if s.cfg.Compliance == nil {
		return nil
	}
	return []route{
		{method: http.MethodGet, path: complianceAdmin + "/status", handler: s.complianceStatus, auth: authRequired},
		{method: http.MethodPost, path: complianceAdmin + "/verify", handler: s.complianceVerify, auth: authRequired},
		{method: http.MethodGet, path: complianceAdmin + "/export", handler: s.complianceExport, auth: authRequired},
	}
}

// auditKind is the record kind a route's successful requests leave in
// the archive, "" for none.
func auditKind(rt route) string {
	p := rt.path
	switch {
	case strings.HasSuffix(p, "/upload") || strings.Contains(p, "/upload/"):
		return compliance.KindMediaUpload
	case strings.Contains(p, "/download/") || strings.Contains(p, "/thumbnail/"):
		return compliance.KindMediaDownload
	case strings.HasSuffix(p, "/messages") || strings.Contains(p, "/context/") || strings.HasSuffix(p, "/search"):
		return compliance.KindHistoryRead
	}
	return ""
}

// audited records each successful request of h as a record of kind:
// who, which room, and what was read or stored (the path, the query's
// range, a search's request, the content URI).
func (s *Server) audited(kind string, h httpapi.Func) httpapi.Func {
	return func(r *http.Request) (any, error) {
		var body []byte
		if strings.HasSuffix(r.URL.Path, "/search") {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				return nil, err
			}
			body, r.Body = b, io.NopCloser(bytes.NewReader(b))
		}
		resp, err := h(r)
		if err != nil {
			return resp, err
		}
		var actor roomdag.UserID
		if rq := requester(r); rq != nil {
			actor = rq.UserID
		}
		room := roomdag.RoomID(httpapi.PathParam(r, "roomId"))
		p := map[string]any{"method": r.Method, "path": r.URL.Path}
		if q := r.URL.Query(); len(q) > 0 {
			qm := map[string]string{}
			for k := range q {
				if k != "access_token" {
					qm[k] = q.Get(k)
				}
			}
			p["query"] = qm
		}
		if id := httpapi.PathParam(r, "eventId"); id != "" {
			p["event_id"] = id
		}
		if srv, id := httpapi.PathParam(r, "serverName"), httpapi.PathParam(r, "mediaId"); id != "" {
			p["uri"] = "mxc://" + srv + "/" + id
		}
		if m, ok := resp.(map[string]string); ok && m["content_uri"] != "" {
			p["uri"] = m["content_uri"]
		}
		if m, ok := resp.(map[string]any); ok {
			if u, ok := m["content_uri"].(string); ok {
				p["uri"] = u
			}
			for _, k := range []string{"start", "end"} {
				if v, ok := m[k]; ok {
					p[k] = v
				}
			}
		}
		if body != nil && json.Valid(body) {
			p["request"] = json.RawMessage(body)
		}
		if err := s.cfg.Compliance.Recorder.Record(r.Context(), kind, actor, room, p); err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// complianceAdminOnly refuses everyone but server admins.
func (s *Server) complianceAdminOnly(r *http.Request) (roomdag.UserID, error) {
	u, err := s.store.User(r.Context(), requester(r).UserID)
	if err != nil {
		return "", err
	}
	if !u.Admin {
		return "", httpapi.Forbidden("You are not a server admin")
	}
	return requester(r).UserID, nil
}

// GET /_persistentchat/admin/v1/compliance/status
func (s *Server) complianceStatus(r *http.Request) (any, error) {
	if _, err := s.complianceAdminOnly(r); err != nil {
		return nil, err
	}
	return s.cfg.Compliance.Status(r.Context())
}

// POST /_persistentchat/admin/v1/compliance/verify?from=N
func (s *Server) complianceVerify(r *http.Request) (any, error) {
	admin, err := s.complianceAdminOnly(r)
	if err != nil {
		return nil, err
	}
	var from int64
	if f := r.URL.Query().Get("from"); f != "" {
		if from, err = strconv.ParseInt(f, 10, 64); err != nil || from < 0 {
			return nil, httpapi.InvalidParam("from must be a record number")
		}
	}
	rep, err := s.cfg.Compliance.Verify(r.Context(), admin, "admin_api", from)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ok": rep.OK(), "records": rep.Records, "checkpoints": rep.Checkpoints, "head": rep.Head,
		"bad_seq": rep.BadSeq, "problem": rep.Problem}, nil
}

// GET /_persistentchat/admin/v1/compliance/export?user=&room=&from=&to=&format=
// streams the export; from and to are RFC 3339 times or ms since the
// epoch.
func (s *Server) complianceExport(r *http.Request) (any, error) {
	admin, err := s.complianceAdminOnly(r)
	if err != nil {
		return nil, err
	}
	v := r.URL.Query()
	q := compliance.Query{Format: v.Get("format")}
	if q.Format == "" {
		q.Format = "jsonl"
	}
	ok := false
	for _, f := range compliance.Formats {
		ok = ok || f == q.Format
	}
	if !ok {
		return nil, httpapi.InvalidParam("format must be one of %s", strings.Join(compliance.Formats, ", "))
	}
	if u := v.Get("user"); u != "" {
		id, err := roomdag.ParseUserID(u)
		if err != nil {
			return nil, httpapi.InvalidParam("malformed user ID")
		}
		q.Actor = string(id)
	}
	if rm := v.Get("room"); rm != "" {
		id, err := roomdag.ParseRoomID(rm)
		if err != nil {
			return nil, httpapi.InvalidParam("malformed room ID")
		}
		q.Room = string(id)
	}
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		if t := v.Get(p.name); t != "" {
			tm, err := compliance.ParseTime(t)
			if err != nil {
				return nil, httpapi.InvalidParam("%s: %v", p.name, err)
			}
			*p.to = tm
		}
	}
	// Fail before the first byte when there is nothing sealed to export.
	if _, err := s.cfg.Compliance.Store.ComplianceCheckpointCovering(r.Context(), 0, true); err != nil {
		return nil, httpapi.NotFound("the archive has no checkpoint yet")
	}
	return exportBody{s: s, admin: admin, q: q}, nil
}

// exportBody streams an export as the response.
type exportBody struct {
	s     *Server
	admin roomdag.UserID
	q     compliance.Query
}

func (e exportBody) WriteBody(w http.ResponseWriter, r *http.Request) {
	ct := map[string]string{"jsonl": "application/jsonl", "csv": "text/csv; charset=utf-8",
		"eml": "application/mbox", "xml": "application/xml"}[e.q.Format]
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", `attachment; filename="compliance-export.`+e.q.Format+`"`)
	if _, err := e.s.cfg.Compliance.Export(r.Context(), e.admin, "admin_api", w, e.q); err != nil {
		// Headers are gone; the missing manifest tells the recipient the
		// export is incomplete.
		e.s.log.Error("compliance export", "err", err, "user", string(e.admin))
	}
}

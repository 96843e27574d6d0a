package api

import (
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/media"
	"net/http"
	"strconv"
	"strings"
)

// URL previews (spec: GET /_matrix/client/v1/media/preview_url), served
// only when url_preview_enabled is set; otherwise the paths are unknown
// (404 M_UNRECOGNIZED), as in Synapse. The deprecated
// /_matrix/media/v3/preview_url is served too: like /_matrix/media/v3/config
// it needs an access token, so the freeze of unauthenticated media does
// not concern it.

func (s *Server) previewRoutes(repo *media.Repository) []route {
	if s.cfg.URLPreview == nil {
		return nil
	}
	cfg := *s.cfg.URLPreview
	cfg.ServerName = s.cfg.ServerName
	p := &previewAPI{previewer: media.NewPreviewer(cfg, repo, s.clock)}
	return []route{
		{method: http.MethodGet, path: v1 + "/media/preview_url", handler: p.previewURL, auth: authRequired},
		{method: http.MethodGet, path: mediaV3 + "/preview_url", handler: p.previewURL, auth: authRequired},
	}
}

type previewAPI struct {
	previewer *media.Previewer
}

// GET /_matrix/client/v1/media/preview_url?url=&ts=
// ts is checked and otherwise ignored: the server may answer with a newer
// preview than asked for (spec), and it keeps only the newest.
func (p *previewAPI) previewURL(r *http.Request) (any, error) {
	q := r.URL.Query()
	raw := q.Get("url")
	if raw == "" {
		return nil, httpapi.MissingParam("url is required")
	}
	if ts := q.Get("ts"); ts != "" {
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			return nil, httpapi.InvalidParam("ts must be an integer (milliseconds since the epoch)")
		}
	}
	og, err := p.previewer.Preview(r.Context(), requester(r).UserID, raw)
	switch {
	case errors.Is(err, media.ErrBadURL):
		return nil, httpapi.InvalidParam("url must be an absolute http or https URL")
	case errors.Is(err, media.ErrBlockedIP):
		// Synapse's answer, errcode and message alike.
		return nil, httpapi.Errorf(http.StatusForbidden, httpapi.CodeUnknown, "IP address blocked")
	case errors.Is(err, media.ErrFetch):
		return nil, httpapi.Errorf(http.StatusBadGateway, httpapi.CodeUnknown, "Failed to download content: %s",
			strings.TrimPrefix(err.Error(), media.ErrFetch.Error()+": "))
	case err != nil:
		return nil, err
	}
	return og, nil
}

package api

import (
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"
)

// Content repository (spec: client-server API, "Content repository"):
// uploads under /_matrix/media/v3 and /v1, authenticated downloads,
// thumbnails and the upload limit under /_matrix/client/v1/media.
//
// The deprecated unauthenticated /_matrix/media/v3/download and
// /thumbnail follow Synapse's enable_authenticated_media (Config
// AuthenticatedMedia): while it is on, media uploaded while it was on is
// served only through the authenticated endpoints, and these answer 404
// M_NOT_FOUND for it, as Synapse does (the spec's "freeze"); media uploaded
// before (while it was off, or before the server recorded it) stays
// reachable. With it off they serve everything.
//
// Downloads keep the uploader's Content-Type (spec v1.12, MSC2701), with
// Synapse's one change: a charset for text types that lack one. The
// disposition is inline only for the spec's allow-list of types, else
// attachment, and the sandboxing headers make a browser render nothing
// active on the server's origin whatever the type says.

const (
	mediaV3 = "/_matrix/media/v3"
	mediaV1 = "/_matrix/media/v1"

	// mediaCSP is the spec's recommended policy for served content.
	mediaCSP = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"
)

// inlineTypes may be served with Content-Disposition: inline; anything
// else is served as application/octet-stream, as an attachment (spec
// v1.12: "Serving inline content").
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// mediaAPI serves the media routes from one repository.
type mediaAPI struct {
	s    *Server
	repo *media.Repository
}

func (s *Server) mediaRoutes() []route {
	if s.cfg.MediaDir == "" {
		return nil
	}
	m := &mediaAPI{s: s, repo: s.media}
	const id = "/{serverName}/{mediaId}"
	return append([]route{
		{method: http.MethodPost, path: mediaV3 + "/upload", handler: m.upload, auth: authRequired},
		{method: http.MethodPost, path: mediaV1 + "/create", handler: m.create, auth: authRequired},
		{method: http.MethodPut, path: mediaV3 + "/upload" + id, handler: m.uploadTo, auth: authRequired},
		{method: http.MethodGet, path: v1 + "/media/config", handler: m.config, auth: authRequired},
		{method: http.MethodGet, path: mediaV3 + "/config", handler: m.config, auth: authRequired},
		{method: http.MethodGet, path: v1 + "/media/download" + id, handler: m.download(media.Authenticated), auth: authRequired},
		{method: http.MethodGet, path: v1 + "/media/download" + id + "/{fileName}", handler: m.download(media.Authenticated), auth: authRequired},
		{method: http.MethodGet, path: v1 + "/media/thumbnail" + id, handler: m.thumbnail(media.Authenticated), auth: authRequired},
		{method: http.MethodGet, path: mediaV3 + "/download" + id, handler: m.download(media.Unauthenticated)},
		{method: http.MethodGet, path: mediaV3 + "/download" + id + "/{fileName}", handler: m.download(media.Unauthenticated)},
		{method: http.MethodGet, path: mediaV3 + "/thumbnail" + id, handler: m.thumbnail(media.Unauthenticated)},
	}, s.previewRoutes(m.repo)...)
}

// bodyLimit is the request body limit of a route: MaxUploadSize for
// uploads, MaxRequestSize (JSON) for everything else. The MaxBytesReader
// that wrap puts in place cuts an upload at the limit even when the
// client sent no Content-Length; the repository checks again as it
// streams.
func (s *Server) bodyLimit(path string) int64 {
	if isUpload(path) && s.cfg.MaxUploadSize > 0 {
		return s.cfg.MaxUploadSize
	}
	return s.cfg.MaxRequestSize
}

// POST /_matrix/media/v3/upload?filename=
func (m *mediaAPI) upload(r *http.Request) (any, error) {
	ctype, name, err := uploadMeta(r)
	if err != nil {
		return nil, err
	}
	id, err := m.repo.Upload(r.Context(), requester(r).UserID, ctype, name, r.Body, r.ContentLength)
	if err != nil {
		return nil, mediaError(err)
	}
	return map[string]string{"content_uri": media.URI(m.s.cfg.ServerName, id)}, nil
}

// POST /_matrix/media/v1/create
func (m *mediaAPI) create(r *http.Request) (any, error) {
	id, expires, err := m.repo.Create(r.Context(), requester(r).UserID)
	if err != nil {
		return nil, mediaError(err)
	}
	return map[string]any{"content_uri": media.URI(m.s.cfg.ServerName, id), "unused_expires_at": expires}, nil
}

// PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
func (m *mediaAPI) uploadTo(r *http.Request) (any, error) {
	id, err := m.localID(r)
	if err != nil {
		return nil, err
	}
	ctype, name, err := uploadMeta(r)
	if err != nil {
		return nil, err
	}
	if err := m.repo.Fill(r.Context(), id, requester(r).UserID, ctype, name, r.Body, r.ContentLength); err != nil {
		return nil, mediaError(err)
	}
	return struct{}{}, nil
}

// GET /_matrix/client/v1/media/config
func (m *mediaAPI) config(r *http.Request) (any, error) {
	return map[string]int64{"m.upload.size": m.repo.MaxUploadSize()}, nil
}

// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}],
// and the deprecated /_matrix/media/v3/download (media.Unauthenticated).
func (m *mediaAPI) download(access media.Access) httpapi.Func {
	return func(r *http.Request) (any, error) {
		server, remoteID, err := m.remoteID(r, access)
		if err != nil {
			return nil, err
		}
		var rec *media.Record
		var f *os.File
		if server != "" {
			if rec, f, err = m.repo.OpenRemote(r.Context(), server, remoteID, m.s.cfg.RemoteMedia); err != nil {
				return nil, remoteMediaError(err)
			}
		} else {
			id, err := m.localID(r)
			if err != nil {
				return nil, err
			}
			wait, err := media.WaitQuery(r.URL.Query())
			if err != nil {
				return nil, err
			}
			if rec, f, err = m.repo.Open(r.Context(), id, access, wait); err != nil {
				return nil, mediaError(err)
			}
		}
		name := rec.FileName
		if n := httpapi.PathParam(r, "fileName"); n != "" {
			name = n
		}
		return &mediaFile{f: f, ctype: rec.ContentType, name: name, modTime: time.UnixMilli(rec.CreatedMS), public: access == media.Unauthenticated}, nil
	}
}

// GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}?width&height&method
// (animated is accepted and ignored: thumbnails are still images), and
// the deprecated /_matrix/media/v3/thumbnail (media.Unauthenticated).
func (m *mediaAPI) thumbnail(access media.Access) httpapi.Func {
	return func(r *http.Request) (any, error) { return m.thumbnailFor(r, access) }
}

func (m *mediaAPI) thumbnailFor(r *http.Request, access media.Access) (any, error) {
	server, remoteID, err := m.remoteID(r, access)
	if err != nil {
		return nil, err
	}
	var id media.ID
	if server == "" {
		if id, err = m.localID(r); err != nil {
			return nil, err
		}
	}
	width, height, method, err := media.ThumbnailQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	wait, err := media.WaitQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	var th *media.Thumb
	if server != "" {
		if th, err = m.repo.ThumbnailRemote(r.Context(), server, remoteID, width, height, method, m.s.cfg.RemoteMedia); err != nil {
			return nil, remoteMediaError(err)
		}
	} else if th, err = m.repo.Thumbnail(r.Context(), id, width, height, method, access, wait); err != nil {
		return nil, mediaError(err)
	}
	ext := strings.TrimPrefix(th.ContentType, "image/")
	st, err := th.File.Stat()
	if err != nil {
		th.File.Close()
		return nil, err
	}
	return &mediaFile{f: th.File, ctype: th.ContentType, name: "thumbnail." + ext, modTime: st.ModTime(), public: access == media.Unauthenticated}, nil
}

// remoteID is the server and media ID of an authenticated request for
// another server's media, which the repository fetches (Config
// RemoteMedia) and caches; "" for a request for local media, and for
// every request of the deprecated unauthenticated endpoints (which serve
// local media only).
func (m *mediaAPI) remoteID(r *http.Request, access media.Access) (roomdag.ServerName, media.ID, error) {
	raw := httpapi.PathParam(r, "serverName")
	if access != media.Authenticated || roomdag.ServerName(raw) == m.s.cfg.ServerName {
		return "", "", nil
	}
	id, err := media.ParseID(httpapi.PathParam(r, "mediaId"))
	if err != nil {
		return "", "", httpapi.InvalidParam("media IDs contain only A-Z, a-z, 0-9, '_' and '-'")
	}
	server, err := roomdag.ParseServerName(raw)
	if err != nil {
		return "", "", httpapi.InvalidParam("%q is not a server name", raw)
	}
	return server, id, nil
}

// remoteMediaError maps the errors of fetching remote media: what the
// remote server said (404, 504), and 502 for a server that failed or sent
// more than max_upload_size (M_TOO_LARGE), as Synapse answers.
func remoteMediaError(err error) error {
	switch {
	case errors.Is(err, media.ErrTooLarge):
		return httpapi.Errorf(http.StatusBadGateway, httpapi.CodeTooLarge, "remote media is larger than this server's limit")
	case errors.Is(err, media.ErrRemote):
		return httpapi.Errorf(http.StatusBadGateway, httpapi.CodeUnknown, "could not fetch the media from its server")
	}
	return mediaError(err)
}

// localID takes the media ID of a request for local media; other
// servers' media (remoteID) is not found here.
func (m *mediaAPI) localID(r *http.Request) (media.ID, error) {
	id, err := media.ParseID(httpapi.PathParam(r, "mediaId"))
	if err != nil {
		return "", httpapi.InvalidParam("media IDs contain only A-Z, a-z, 0-9, '_' and '-'")
	}
	if roomdag.ServerName(httpapi.PathParam(r, "serverName")) != m.s.cfg.ServerName {
		return "", httpapi.NotFound("media not found")
	}
	return id, nil
}

// uploadMeta reads an upload's content type and file name. The content
// type is kept as the uploader sent it, byte for byte (spec v1.12: it is
// the source of truth and is served back); it is only checked to be a
// sane header value, since it is written back into responses.
func uploadMeta(r *http.Request) (ctype, name string, err error) {
	ctype = r.Header.Get("Content-Type")
	if ctype == "" {
		// Spec: without one, servers assume application/octet-stream.
		ctype = "application/octet-stream"
	}
	if len(ctype) > 255 {
		return "", "", httpapi.InvalidParam("Content-Type is too long")
	}
	if !saneHeaderValue(ctype) {
		return "", "", httpapi.InvalidParam("Content-Type must be printable ASCII")
	}
	name = r.URL.Query().Get("filename")
	if len(name) > 255 || strings.ContainsAny(name, "\x00\r\n") {
		return "", "", httpapi.InvalidParam("filename must be at most 255 bytes without control characters")
	}
	return ctype, name, nil
}

// mediaError maps the repository's errors to Matrix errors.
func mediaError(err error) error {
	switch {
	case errors.Is(err, media.ErrNotFound):
		return httpapi.NotFound("media not found")
	case errors.Is(err, media.ErrTooLarge):
		return httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "media is too large")
	case errors.Is(err, media.ErrForbidden):
		return httpapi.Forbidden("only the user who created this media ID may upload to it")
	case errors.Is(err, media.ErrCannotOverwrite):
		return httpapi.Errorf(http.StatusConflict, httpapi.CodeCannotOverwriteMedia, "media already uploaded")
	case errors.Is(err, media.ErrNotYetUploaded):
		return httpapi.Errorf(http.StatusGatewayTimeout, httpapi.CodeNotYetUploaded, "media has not been uploaded yet")
	case errors.Is(err, media.ErrTooManyPending):
		return &httpapi.Error{Status: http.StatusTooManyRequests, Code: httpapi.CodeLimitExceeded,
			Message: "too many media IDs awaiting upload", Extra: map[string]any{"retry_after_ms": int64(60_000)}}
	case errors.Is(err, media.ErrNotImage):
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "cannot generate a thumbnail of this content")
	}
	return err
}

// saneHeaderValue: visible ASCII, spaces and tabs, not starting or ending
// with white space (RFC 9110 field-value, without obs-text).
func saneHeaderValue(v string) bool {
	if v == "" || v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c > 0x7e {
			return false
		}
	}
	return true
}

// mediaFile is a download: the file with safe headers.
type mediaFile struct {
	f       *os.File
	ctype   string
	name    string
	modTime time.Time
	// public: served without authentication (the deprecated endpoints),
	// so shared caches may keep it, as they always could.
	public bool
}

func (m *mediaFile) WriteBody(w http.ResponseWriter, r *http.Request) {
	defer m.f.Close()
	h := w.Header()
	ctype, disposition := servedType(m.ctype)
	h.Set("Content-Type", ctype)
	h.Set("Content-Disposition", contentDisposition(disposition, m.name))
	h.Set("Content-Security-Policy", mediaCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	// Content under a media ID never changes; private when it was served
	// to an authenticated user.
	if m.public {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "private, max-age=31536000, immutable")
	}
	// ServeContent answers Range and conditional requests (seeking in
	// video) and sets Content-Length.
	http.ServeContent(w, r, "", m.modTime, m.f)
}

// textTypes get a UTF-8 charset when uploaded without parameters, as
// Synapse does (spec: "adding a charset to text/* content types" is
// within the bounds of serving the uploaded type).
var textTypes = map[string]bool{
	"text/css": true, "text/csv": true, "text/html": true, "text/calendar": true, "text/plain": true,
	"text/javascript": true, "application/json": true, "application/ld+json": true, "application/rtf": true,
	"image/svg+xml": true, "text/xml": true,
}

// servedType is the Content-Type to serve for an uploaded one, and the
// disposition: the uploaded type as it was sent (an unusual or malformed
// one too: the spec says to echo it, and the sandbox, nosniff and
// attachment keep it harmless), inline only when its media type is on
// the allow-list, so a browser never renders uploaded HTML or SVG on the
// server's origin. Media types compare case-insensitively, as in Synapse.
func servedType(uploaded string) (ctype, disposition string) {
	mt, _, _ := strings.Cut(uploaded, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	ctype = uploaded
	if textTypes[strings.ToLower(uploaded)] {
		ctype = uploaded + "; charset=UTF-8"
	}
	if inlineTypes[mt] {
		return ctype, "inline"
	}
	return ctype, "attachment"
}

// contentDisposition formats the header with the file name (RFC 6266):
// a quoted filename for ASCII names, filename* (RFC 5987) otherwise.
func contentDisposition(disposition, name string) string {
	if name == "" {
		return disposition
	}
	if v := mime.FormatMediaType(disposition, map[string]string{"filename": name}); v != "" {
		return v
	}
	return disposition
}

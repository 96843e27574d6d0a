package api

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/persistentchat/homeserver/httpapi"
)

// Request bodies are read against a deadline. http.Server's
// ReadHeaderTimeout cuts clients that are slow to send their headers, but
// nothing else bounds the body: a client that declares Content-Length:
// 100000 and sends a byte every few seconds would hold its connection, a
// file descriptor and a goroutine for as long as it likes, and a few
// hundred such clients, without an account, take the server's
// descriptors. So every request with a body gets a read deadline on its
// connection when its headers are in: BodyTimeout after them for an
// ordinary request, and for a media upload that deadline moved on by one
// second for every MinUploadRate bytes received, so an upload that keeps
// to the minimum rate is never cut, however large it is and however slow
// the link (Apache's mod_reqtimeout does the same; Synapse leaves it to
// the reverse proxy).
//
// A read past the deadline fails; the handler's error is answered 408
// M_UNKNOWN (RFC 9110: the server did not receive a complete request in
// the time it was prepared to wait, which is what a client can act on),
// and net/http closes the connection, since what is left of the body
// cannot be told from a next request. A body that ends before its
// Content-Length, because the client went away, is answered 400 M_UNKNOWN
// the same way. The deadline ends with the body: once it has been read to
// its end, net/http reads the connection only to notice that the client
// hung up, and a deadline then would look like a hang-up and cancel the
// request's context.

// BodyDeadlines wraps the server's whole handler (the client API and
// everything else on its listener) with the read deadlines for request
// bodies described above.
func (s *Server) BodyDeadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || s.cfg.BodyTimeout <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		b := &deadlineBody{body: r.Body, rc: http.NewResponseController(w), start: time.Now(), timeout: s.cfg.BodyTimeout}
		if isUpload(r.URL.Path) {
			b.minRate = s.cfg.MinUploadRate
		}
		// Fails only on connections that cannot have deadlines (none that
		// http.Server makes); then the body is read without one.
		_ = b.rc.SetReadDeadline(b.start.Add(b.timeout))
		r.Body = b
		next.ServeHTTP(w, r)
	})
}

// isUpload reports whether a request path is a media upload, whose body
// may be large (POST /_matrix/media/v3/upload and PUT
// /_matrix/media/v3/upload/{serverName}/{mediaId}).
func isUpload(path string) bool {
	return strings.HasPrefix(path, mediaV3+"/upload")
}

// deadlineBody is a request body read against its connection's deadline.
// It is read by one goroutine at a time, as http.Request.Body is.
type deadlineBody struct {
	body    io.ReadCloser
	rc      *http.ResponseController
	start   time.Time
	timeout time.Duration
	minRate int64 // bytes a second that extend the deadline; 0 for none
	read    int64
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.read += int64(n)
	switch {
	case err == io.EOF:
		// net/http lifts the deadline itself when the body ends (it then
		// reads the connection only to notice a hang-up); none must be
		// set after that.
	case err != nil:
		var ne net.Error
		return n, &bodyError{err: err, timeout: errors.As(err, &ne) && ne.Timeout()}
	case n > 0 && b.minRate > 0:
		extra := time.Duration(b.read/b.minRate)*time.Second + time.Duration(b.read%b.minRate)*time.Second/time.Duration(b.minRate)
		_ = b.rc.SetReadDeadline(b.start.Add(b.timeout + extra))
	}
	return n, err
}

func (b *deadlineBody) Close() error { return b.body.Close() }

// bodyError is a request body that could not be read to its end: the
// client was too slow (timeout), or it went away before sending all of
// it. httpapi.MapError answers it (through MatrixError).
type bodyError struct {
	err     error
	timeout bool
}

func (e *bodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// MatrixError is the answer to a body that could not be read.
func (e *bodyError) MatrixError() *httpapi.Error {
	switch {
	case e.timeout:
		return httpapi.Errorf(http.StatusRequestTimeout, httpapi.CodeUnknown, "the request body did not arrive in time")
	case errors.Is(e.err, io.ErrUnexpectedEOF):
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "the request body ended before its Content-Length")
	}
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "the request body could not be read")
}

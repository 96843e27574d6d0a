// Package media is the media repository (spec: client-server API,
// "Content repository"): uploaded files stored on disk under the SHA-256
// of their content, so identical uploads are stored once; their metadata
// (uploader, type, name, size) in the database; thumbnails made on demand
// and cached on disk. It knows nothing of HTTP: the api package maps its
// errors to Matrix errors and writes the headers.
//
// Layout under the media directory:
//
//	content/ab/cd/abcd…       one file per distinct content (hex SHA-256)
//	thumbnails/ab/abcd…/WxH-method.ext
//	tmp/                      uploads in progress, renamed into content/
package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Errors the api package maps to Matrix errors.
var (
	ErrNotFound        = errors.New("media: not found")
	ErrTooLarge        = errors.New("media: too large")
	ErrForbidden       = errors.New("media: only the creator may upload this media")
	ErrCannotOverwrite = errors.New("media: media already uploaded")
	ErrNotYetUploaded  = errors.New("media: not yet uploaded")
	ErrTooManyPending  = errors.New("media: too many media IDs awaiting upload")
	ErrNotImage        = errors.New("media: cannot thumbnail this content")
)

// Record is one media item's metadata. A record made by Create has no
// content (SHA256 == "") until its upload.
type Record struct {
	ID          ID
	Uploader    roomdag.UserID
	SHA256      string // hex; "" while a created item awaits its upload
	ContentType string
	FileName    string
	Size        int64
	CreatedMS   int64
	// ExpiresMS is when a created item's reservation lapses if nothing was
	// uploaded; 0 for uploaded items.
	ExpiresMS int64
	// Authenticated: created while authenticated media was on
	// (Config.AuthenticatedMedia), so never served without authentication
	// while it still is. Items stored before the server kept this are not.
	Authenticated bool
}

// Pending reports whether the record still awaits its content.
func (r *Record) Pending() bool { return r.SHA256 == "" }

// Store is what the repository needs from storage.
type Store interface {
	// InsertMedia stores a new record; storage.ErrConflict if the ID is taken.
	InsertMedia(ctx context.Context, rec Record) error
	// MediaRecord returns a record, or storage.ErrNotFound.
	MediaRecord(ctx context.Context, id ID) (*Record, error)
	// FillMedia gives a pending record its content: storage.ErrNotFound if
	// there is no such record, storage.ErrConflict if it already has
	// content (so of two racing uploads exactly one wins).
	FillMedia(ctx context.Context, id ID, sha256, contentType, fileName string, size int64) error
	// PendingMedia counts user's records that await content and whose
	// reservation lapses after nowMS.
	PendingMedia(ctx context.Context, user roomdag.UserID, nowMS int64) (int, error)
}

// Config is what the repository needs from the homeserver's configuration.
type Config struct {
	// Dir is the media directory, created on first upload.
	Dir string
	// ThumbnailSizes are the sizes thumbnails are made at; empty means
	// DefaultThumbnailSizes. ThumbnailMemory is the memory, in bytes,
	// that decoding images for thumbnails may take at once; 0 means
	// DefaultThumbnailMemory.
	ThumbnailSizes  []ThumbnailSize
	ThumbnailMemory int64
	// MaxUploadSize is the largest upload accepted, in bytes.
	MaxUploadSize int64
	// AuthenticatedMedia is Synapse's enable_authenticated_media: items
	// created while it is on are marked Authenticated, and Open and
	// Thumbnail refuse them to Unauthenticated requests (ErrNotFound).
	// With it off, every item is served to every request.
	AuthenticatedMedia bool
}

// Access says how a download was asked for.
type Access int

const (
	// Authenticated: through /_matrix/client/v1/media, with an access
	// token (or over federation).
	Authenticated Access = iota
	// Unauthenticated: through the deprecated /_matrix/media/v3 download
	// and thumbnail endpoints.
	Unauthenticated
)

const (
	// unusedLifetime is how long a media ID from Create stays reserved
	// for its upload (spec: unused_expires_at; Synapse uses 24 hours).
	unusedLifetime = 24 * time.Hour
	// maxPending bounds a user's unexpired, unfilled media IDs; the spec
	// asks servers to limit them and answer M_LIMIT_EXCEEDED.
	maxPending = 10
)

// Repository stores and serves media. It is safe for concurrent use.
type Repository struct {
	cfg    Config
	store  Store
	clock  clock.Clock
	random io.Reader

	mu      gosync.Mutex
	waiting map[ID]*waiter // downloads waiting for a created item's upload

	thumbs *thumbnailer

	remoteFetches atomic.Int64 // RemoteFetches
}

type waiter struct {
	ch chan struct{} // closed once the content is there
	n  int           // waiting downloads
}

// New returns a repository over cfg.Dir; it touches the disk only when
// used. random supplies media IDs (crypto/rand in production).
func New(cfg Config, store Store, clk clock.Clock, random io.Reader) *Repository {
	return &Repository{cfg: cfg, store: store, clock: clk, random: random, waiting: map[ID]*waiter{},
		thumbs: newThumbnailer(cfg.ThumbnailSizes, cfg.ThumbnailMemory)}
}

// MaxUploadSize is the largest upload accepted, in bytes.
func (r *Repository) MaxUploadSize() int64 { return r.cfg.MaxUploadSize }

// Upload stores body as a new media item and returns its ID. declared is
// the Content-Length, or -1 if unknown: a declared size past the limit is
// refused before reading, and the limit is enforced again while reading.
func (r *Repository) Upload(ctx context.Context, uploader roomdag.UserID, contentType, fileName string, body io.Reader, declared int64) (ID, error) {
	if declared > r.cfg.MaxUploadSize {
		return "", ErrTooLarge
	}
	sum, size, err := r.storeContent(body)
	if err != nil {
		return "", err
	}
	id, err := newID(r.random)
	if err != nil {
		return "", err
	}
	rec := Record{ID: id, Uploader: uploader, SHA256: sum, ContentType: contentType, FileName: fileName,
		Size: size, CreatedMS: r.clock.Now().UnixMilli(), Authenticated: r.cfg.AuthenticatedMedia}
	if err := r.store.InsertMedia(ctx, rec); err != nil {
		// The content file stays: another record may share it.
		return "", err
	}
	return id, nil
}

// Create reserves a media ID for a later Fill by uploader (spec: POST
// /_matrix/media/v1/create) and returns it with the time, in ms, at which
// the reservation lapses.
func (r *Repository) Create(ctx context.Context, uploader roomdag.UserID) (ID, int64, error) {
	now := r.clock.Now()
	n, err := r.store.PendingMedia(ctx, uploader, now.UnixMilli())
	if err != nil {
		return "", 0, err
	}
	if n >= maxPending {
		return "", 0, ErrTooManyPending
	}
	id, err := newID(r.random)
	if err != nil {
		return "", 0, err
	}
	expires := now.Add(unusedLifetime).UnixMilli()
	// The item is marked when its ID is made, as Synapse does: the upload
	// that fills it does not change it.
	rec := Record{ID: id, Uploader: uploader, CreatedMS: now.UnixMilli(), ExpiresMS: expires, Authenticated: r.cfg.AuthenticatedMedia}
	if err := r.store.InsertMedia(ctx, rec); err != nil {
		return "", 0, err
	}
	return id, expires, nil
}

// Fill uploads the content of a media ID from Create. Only its creator
// may, and only once: ErrForbidden, ErrCannotOverwrite; ErrNotFound for
// an unknown or lapsed ID. Downloads waiting for it are woken.
func (r *Repository) Fill(ctx context.Context, id ID, uploader roomdag.UserID, contentType, fileName string, body io.Reader, declared int64) error {
	rec, err := r.record(ctx, id)
	if err != nil {
		return err
	}
	switch {
	case rec.Uploader != uploader:
		return ErrForbidden
	case !rec.Pending():
		return ErrCannotOverwrite
	case rec.ExpiresMS <= r.clock.Now().UnixMilli():
		return ErrNotFound
	case declared > r.cfg.MaxUploadSize:
		return ErrTooLarge
	}
	sum, size, err := r.storeContent(body)
	if err != nil {
		return err
	}
	err = r.store.FillMedia(ctx, id, sum, contentType, fileName, size)
	switch {
	case errors.Is(err, storage.ErrConflict):
		return ErrCannotOverwrite
	case errors.Is(err, storage.ErrNotFound):
		return ErrNotFound
	case err != nil:
		return err
	}
	r.wake(id)
	return nil
}

// Open returns a media item's record and its content, open for reading;
// the caller closes it. For an item created but not yet uploaded it waits
// up to wait (or until ctx ends) and then fails with ErrNotYetUploaded.
// An Authenticated item asked for Unauthenticated while authenticated
// media is on is ErrNotFound, as in Synapse.
func (r *Repository) Open(ctx context.Context, id ID, access Access, wait time.Duration) (*Record, *os.File, error) {
	rec, err := r.ready(ctx, id, access, wait)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(r.contentPath(rec.SHA256))
	if err != nil {
		return nil, nil, fmt.Errorf("media: content of %s: %w", id, err)
	}
	return rec, f, nil
}

// servable reports whether rec may be served to a request of that access.
func (r *Repository) servable(rec *Record, access Access) bool {
	return access == Authenticated || !r.cfg.AuthenticatedMedia || !rec.Authenticated
}

// ready returns the record of id once it has content, if it may be
// served to a request of that access (decided before waiting, so a refused
// request does not wait either).
func (r *Repository) ready(ctx context.Context, id ID, access Access, wait time.Duration) (*Record, error) {
	rec, err := r.record(ctx, id)
	if err == nil && !r.servable(rec, access) {
		return nil, ErrNotFound
	}
	if err != nil || !rec.Pending() {
		return rec, err
	}
	// Subscribe before looking again, so an upload that lands in between
	// is not missed.
	ch := r.subscribe(id)
	defer r.unsubscribe(id)
	if rec, err = r.record(ctx, id); err != nil || !rec.Pending() {
		return rec, err
	}
	if rec.ExpiresMS <= r.clock.Now().UnixMilli() {
		return nil, ErrNotFound
	}
	select {
	case <-ch:
		return r.record(ctx, id)
	case <-r.clock.After(wait):
		return nil, ErrNotYetUploaded
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *Repository) record(ctx context.Context, id ID) (*Record, error) {
	rec, err := r.store.MediaRecord(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	}
	return rec, err
}

func (r *Repository) subscribe(id ID) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.waiting[id]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		r.waiting[id] = w
	}
	w.n++
	return w.ch
}

func (r *Repository) unsubscribe(id ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.waiting[id]; w != nil {
		if w.n--; w.n == 0 {
			delete(r.waiting, id)
		}
	}
}

// wake is called after a created item's content is committed.
func (r *Repository) wake(id ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.waiting[id]; w != nil {
		close(w.ch)
		delete(r.waiting, id)
	}
}

// storeContent streams body to a temporary file while hashing it, then
// renames it to its content address; if that file exists the copy is
// dropped. Past MaxUploadSize it stops reading and fails with
// ErrTooLarge. The file is synced before the rename, so a record never
// points at content that a crash could lose.
func (r *Repository) storeContent(body io.Reader) (sum string, size int64, err error) {
	tmpDir := filepath.Join(r.cfg.Dir, "tmp")
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return "", 0, err
	}
	f, err := os.CreateTemp(tmpDir, "upload-*")
	if err != nil {
		return "", 0, err
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), io.LimitReader(body, r.cfg.MaxUploadSize+1))
	if err != nil {
		return "", 0, err
	}
	if size > r.cfg.MaxUploadSize {
		return "", 0, ErrTooLarge
	}
	if err = f.Sync(); err != nil {
		return "", 0, err
	}
	err = f.Close()
	f = nil
	if err != nil {
		return "", 0, err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	dst := r.contentPath(sum)
	if _, statErr := os.Stat(dst); statErr == nil {
		os.Remove(tmp) // stored already: keep one copy
		return sum, size, nil
	}
	if err = os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", 0, err
	}
	// Two uploads of the same bytes may race here; rename is atomic and
	// both files hold the same bytes, so either outcome is right.
	if err = os.Rename(tmp, dst); err != nil {
		return "", 0, err
	}
	return sum, size, nil
}

// contentPath is where content with the hex SHA-256 sum lives. sum comes
// from our own hashing, never from a request.
func (r *Repository) contentPath(sum string) string {
	return filepath.Join(r.cfg.Dir, "content", sum[:2], sum[2:4], sum)
}

// RemoveContent deletes the content file with the hex SHA-256 sum, and
// its thumbnails, once no record uses it (the caller, retention's purge,
// has deleted the last in the same step that found it unused). A missing
// file is no error. An upload of the very same bytes that finds the file
// just before it goes would keep a record without content; the purge
// runs rarely and such an upload is one of media that expired, so the
// window is accepted rather than locked.
func (r *Repository) RemoveContent(sum string) error {
	if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
		return fmt.Errorf("media: %q is not a SHA-256 sum", sum)
	}
	err := os.Remove(r.contentPath(sum))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.RemoveAll(filepath.Join(r.cfg.Dir, "thumbnails", sum[:2], sum))
}

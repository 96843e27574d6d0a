package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Remote media: items of other servers, fetched once (over federation,
// by a Fetcher) and then served from this repository as local ones are.
// A cached copy is a record keyed by RemoteID, which no local media ID can
// equal (local IDs never hold '/'), with the content stored like any
// upload's and bounded by MaxUploadSize.

// ErrRemote: the remote server could not be reached or gave an answer
// that is not the media (the api package answers 502).
var ErrRemote = errors.New("media: remote server failed")

// Fetcher fetches a remote server's media.
type Fetcher interface {
	// FetchMedia asks server for its media id. The body, which the caller
	// closes, is the content; ErrNotFound when the server says it has no
	// such item, ErrTooLarge when it says it is too large to serve (or
	// maxSize passes the declared length), ErrNotYetUploaded when it is
	// not uploaded yet, anything else (wrapping ErrRemote) when the
	// server cannot be asked or answers otherwise.
	FetchMedia(ctx context.Context, server roomdag.ServerName, id ID, maxSize int64) (contentType, fileName string, body io.ReadCloser, err error)
}

// RemoteID is the key under which server's media id is cached.
func RemoteID(server roomdag.ServerName, id ID) ID {
	return ID(string(server) + "/" + string(id))
}

// OpenRemote returns server's media id and its content, open for
// reading (the caller closes it): from the cache, or fetched with fetch
// and cached first. Errors are the Fetcher's, and ErrTooLarge for content
// past MaxUploadSize (nothing is cached then).
func (r *Repository) OpenRemote(ctx context.Context, server roomdag.ServerName, id ID, fetch Fetcher) (*Record, *os.File, error) {
	if err := r.cacheRemote(ctx, server, id, fetch); err != nil {
		return nil, nil, err
	}
	return r.Open(ctx, RemoteID(server, id), Authenticated, 0)
}

// ThumbnailRemote is Thumbnail of server's media id, fetched and cached
// first if it is not cached yet.
func (r *Repository) ThumbnailRemote(ctx context.Context, server roomdag.ServerName, id ID, width, height int, method Method, fetch Fetcher) (*Thumb, error) {
	if err := r.cacheRemote(ctx, server, id, fetch); err != nil {
		return nil, err
	}
	return r.Thumbnail(ctx, RemoteID(server, id), width, height, method, Authenticated, 0)
}

// RemoteFetches counts the fetches of remote media made, for tests that
// check a download came from the cache.
func (r *Repository) RemoteFetches() int64 { return r.remoteFetches.Load() }

// cacheRemote makes sure server's media id is in the cache. Two requests
// for the same uncached item may both fetch it; the second record is
// refused (storage.ErrConflict) and the first one kept, with the same
// bytes.
func (r *Repository) cacheRemote(ctx context.Context, server roomdag.ServerName, id ID, fetch Fetcher) error {
	key := RemoteID(server, id)
	if rec, err := r.record(ctx, key); err == nil && !rec.Pending() {
		return nil
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if fetch == nil {
		return ErrNotFound
	}
	r.remoteFetches.Add(1)
	ctype, name, body, err := fetch.FetchMedia(ctx, server, id, r.cfg.MaxUploadSize)
	if err != nil {
		return err
	}
	defer body.Close()
	sum, size, err := r.storeContent(body)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return err
		}
		return fmt.Errorf("%w: reading %s's media: %v", ErrRemote, server, err)
	}
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	rec := Record{ID: key, SHA256: sum, ContentType: ctype, FileName: name, Size: size,
		CreatedMS: r.clock.Now().UnixMilli(), Authenticated: true}
	if err := r.store.InsertMedia(ctx, rec); err != nil && !errors.Is(err, storage.ErrConflict) {
		return err
	}
	return nil
}

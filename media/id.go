package media

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// ID is a validated media ID: the part of mxc://<server>/<id> after the
// server name. It is also part of nothing on disk (files are named by
// their SHA-256), so a bad ID can never name a path.
type ID string

// maxIDLen bounds media IDs from clients; ours are 32 characters.
const maxIDLen = 255

// ErrBadID: a media ID with characters outside [A-Za-z0-9_-] or of a bad
// length.
var ErrBadID = errors.New("media: invalid media ID")

// ParseID checks a media ID from a request. The spec ("Security
// considerations" of the content repository) says to allow only
// alphanumerics, '_' and '-' rather than to deny '.' and '/', so that no
// encoding trick (percent-encoding, UTF-8 overlongs) gets through.
func ParseID(s string) (ID, error) {
	if s == "" || len(s) > maxIDLen {
		return "", ErrBadID
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return "", ErrBadID
		}
	}
	return ID(s), nil
}

// newID makes a random media ID: 24 bytes (192 bits) from random as
// unpadded URL-safe base64, 32 characters of [A-Za-z0-9_-]. Guessing one
// is as hopeless as guessing an access token, which matters because
// knowing the ID is all a local user needs to download.
func newID(random io.Reader) (ID, error) {
	var b [24]byte
	if _, err := io.ReadFull(random, b[:]); err != nil {
		return "", fmt.Errorf("media: random source: %w", err)
	}
	return ID(base64.RawURLEncoding.EncodeToString(b[:])), nil
}

// URI is the mxc:// URI of a media item on server.
func URI(server roomdag.ServerName, id ID) string {
	return "mxc://" + string(server) + "/" + string(id)
}

// ParseURI splits an mxc:// URI into its server name and media ID.
func ParseURI(uri string) (roomdag.ServerName, ID, error) {
	rest, ok := strings.CutPrefix(uri, "mxc://")
	if !ok {
		return "", "", fmt.Errorf("media: %q is not an mxc:// URI", uri)
	}
	server, id, ok := strings.Cut(rest, "/")
	if !ok || server == "" {
		return "", "", fmt.Errorf("media: %q has no media ID", uri)
	}
	mid, err := ParseID(id)
	if err != nil {
		return "", "", err
	}
	return roomdag.ServerName(server), mid, nil
}

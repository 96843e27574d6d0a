package media

import (
	"net/url"
	"strconv"
	"time"

	"github.com/persistentchat/homeserver/httpapi"
)

// The query parameters the client API's and the federation's media
// endpoints share, parsed once for both, with the Matrix errors they
// answer.

// A download waits for a created item's upload this long unless the
// request says otherwise, and never longer than the maximum (spec:
// timeout_ms).
const (
	DefaultWait = 20 * time.Second
	MaxWait     = 120 * time.Second
)

// WaitQuery reads timeout_ms: how long to wait for an upload that has
// not happened yet.
func WaitQuery(q url.Values) (time.Duration, error) {
	v := q.Get("timeout_ms")
	if v == "" {
		return DefaultWait, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, httpapi.InvalidParam("timeout_ms must be a non-negative integer")
	}
	return min(time.Duration(ms)*time.Millisecond, MaxWait), nil
}

// ThumbnailQuery reads a thumbnail request's width and height (required,
// positive integers) and method (scale, the default, or crop).
func ThumbnailQuery(q url.Values) (width, height int, method Method, err error) {
	if width, err = thumbDimension(q.Get("width"), "width"); err != nil {
		return 0, 0, "", err
	}
	if height, err = thumbDimension(q.Get("height"), "height"); err != nil {
		return 0, 0, "", err
	}
	switch q.Get("method") {
	case "", "scale":
		return width, height, Scale, nil
	case "crop":
		return width, height, Crop, nil
	}
	return 0, 0, "", httpapi.InvalidParam("method must be crop or scale")
}

func thumbDimension(v, name string) (int, error) {
	if v == "" {
		return 0, httpapi.MissingParam("%s is required", name)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, httpapi.InvalidParam("%s must be a positive integer", name)
	}
	return int(min(n, 1<<16)), nil
}

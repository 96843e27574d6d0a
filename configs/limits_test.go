package configs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestLoadThumbnailAndBodyLimits: thumbnail_sizes, max_thumbnail_memory,
// request_body_timeout and min_upload_rate are read and checked, each
// problem naming its field and line.
func TestLoadThumbnailAndBodyLimits(t *testing.T) {
	c, err := Load(writeConfig(t, "thumbnail_sizes:\n  - {width: 64, height: 48, method: scale}\n"+
		"max_thumbnail_memory: 64M\nrequest_body_timeout: 5s\nmin_upload_rate: 4K\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ThumbnailSizes) != 1 || c.ThumbnailSizes[0] != (ThumbnailSize{64, 48, "scale"}) ||
		c.MaxThumbnailMemory != 64*MiB || c.RequestBodyTimeout.Std() != 5*time.Second || c.MinUploadRate != 4*KiB {
		t.Errorf("loaded %+v, %v, %v, %v", c.ThumbnailSizes, c.MaxThumbnailMemory, c.RequestBodyTimeout, c.MinUploadRate)
	}

	for _, tc := range []struct {
		name, body, field string
		line              int
		msg               string
	}{
		{"no sizes", "thumbnail_sizes: []\n", "thumbnail_sizes", 1, "at least one"},
		{"zero width", "thumbnail_sizes:\n  - {width: 0, height: 32, method: crop}\n", "thumbnail_sizes[0]", 2, "at least 1"},
		{"no height", "thumbnail_sizes:\n  - {width: 32, method: crop}\n", "thumbnail_sizes[0]", 2, "at least 1"},
		{"bad method", "thumbnail_sizes:\n  - width: 32\n    height: 32\n    method: zoom\n", "thumbnail_sizes[0].method", 4, "crop or scale"},
		{"repeated size", "thumbnail_sizes:\n  - {width: 32, height: 32, method: crop}\n  - {width: 32, height: 32, method: crop}\n", "thumbnail_sizes[1]", 3, "repeats thumbnail_sizes[0]"},
		{"unknown size key", "thumbnail_sizes:\n  - {width: 32, height: 32, method: crop, type: png}\n", "thumbnail_sizes[0].type", 2, "unknown key"},
		{"tiny memory", "max_thumbnail_memory: 512K\n", "max_thumbnail_memory", 1, "at least 1M"},
		{"no body timeout", "request_body_timeout: 0\n", "request_body_timeout", 1, "greater than 0"},
		{"no upload rate", "min_upload_rate: 0\n", "min_upload_rate", 1, "at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tc.body))
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) != 1 {
				t.Fatalf("want one problem, got %v", err)
			}
			p := e.Problems[0]
			if p.Field != tc.field || p.Line != tc.line || !strings.Contains(p.Err.Error(), tc.msg) {
				t.Errorf("got %q at line %d: %v; want %q at line %d containing %q", p.Field, p.Line, p.Err, tc.field, tc.line, tc.msg)
			}
		})
	}
}

package server

import (
	"io"
	"log/slog"

	"github.com/persistentchat/homeserver/configs"
)

// NewLogger returns the logger the configuration asks for, writing to w:
// log_level's least severe level, in log_format's text (key=value pairs)
// or JSON (one object a line) form. The binary logs to standard error
// through it and testserver to the test's log, so tests see the format
// operators get.
func NewLogger(cfg *configs.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.SlogLevel()}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

package compliance

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
)

// Service is what operators and administrators do with the archive:
// status, verify and export, each verify and export itself archived as
// an admin_action. The admin API (api/compliance.go) and the CLI
// (homeserver compliance ...) both call it.
type Service struct {
	Store interface {
		Store
		EventPos(ctx context.Context) (roomdag.StreamPos, error)
	}
	Recorder *Recorder
	Exporter *Exporter
	// Public is the server's verify key, with which checkpoints are
	// checked.
	Public ed25519.PublicKey
}

// Status is what `homeserver compliance status` shows.
type Status struct {
	Records     int64  `json:"records"`
	Bytes       int64  `json:"payload_bytes"`
	FirstSeq    int64  `json:"first_seq"`
	HeadSeq     int64  `json:"head_seq"`
	OldestTS    int64  `json:"oldest_ts"`
	Oldest      string `json:"oldest,omitempty"`
	Queued      int64  `json:"queued"`
	Checkpoints int64  `json:"checkpoints"`
	SealedSeq   int64  `json:"sealed_seq"`
	// ArchivedPos is the event stream position archived; Lag the events
	// committed after it.
	ArchivedPos int64 `json:"archived_pos"`
	Lag         int64 `json:"lag_events"`
	// BackfillLag is the backfilled events (history fetched from other
	// servers, at negative positions) not archived yet.
	BackfillLag int64 `json:"lag_backfilled_events"`
	// ReceivedLag is the events received outside the timeline
	// (outliers, rejected, soft-failed) not archived yet.
	ReceivedLag int64 `json:"lag_received_events"`
	// EncryptedRooms are archived as ciphertext: not readable.
	EncryptedRooms []roomdag.RoomID `json:"encrypted_rooms"`
}

// Status reads the archive's status.
func (s *Service) Status(ctx context.Context) (*Status, error) {
	st, err := s.Store.ComplianceStats(ctx)
	if err != nil {
		return nil, err
	}
	head, err := s.Store.EventPos(ctx)
	if err != nil {
		return nil, err
	}
	enc, err := s.Store.EncryptedRooms(ctx)
	if err != nil {
		return nil, err
	}
	out := &Status{Records: st.Records, Bytes: st.Bytes, FirstSeq: st.FirstSeq, HeadSeq: st.HeadSeq, OldestTS: st.OldestTS,
		Queued: st.Queued, Checkpoints: st.Checkpoints, SealedSeq: st.LastCheckSeq, ArchivedPos: int64(st.Pos),
		Lag: int64(head - st.Pos), BackfillLag: int64(max(st.BackfillPos-st.Lowest, 0)), ReceivedLag: st.Received, EncryptedRooms: append([]roomdag.RoomID{}, enc...)}
	if st.OldestTS != 0 {
		out.Oldest = time.UnixMilli(st.OldestTS).UTC().Format(time.RFC3339)
	}
	return out, nil
}

// Verify records the verification as actor's admin action, then verifies
// the chain from record from.
func (s *Service) Verify(ctx context.Context, actor roomdag.UserID, via string, from int64) (Report, error) {
	if err := s.Recorder.Record(ctx, KindAdminAction, actor, "", map[string]any{"action": "verify", "from": from, "via": via}); err != nil {
		return Report{}, err
	}
	return Verify(ctx, s.Store, s.Exporter.Server, s.Public, from)
}

// Export records the export as actor's admin action, then writes it.
func (s *Service) Export(ctx context.Context, actor roomdag.UserID, via string, w io.Writer, q Query) (*Manifest, error) {
	a := map[string]any{"action": "export", "user": q.Actor, "room": q.Room, "format": q.Format, "via": via}
	if !q.From.IsZero() {
		a["from"] = q.From.UTC().Format(time.RFC3339Nano)
	}
	if !q.To.IsZero() {
		a["to"] = q.To.UTC().Format(time.RFC3339Nano)
	}
	if err := s.Recorder.Record(ctx, KindAdminAction, actor, roomdag.RoomID(q.Room), a); err != nil {
		return nil, err
	}
	return s.Exporter.Export(ctx, w, q)
}

// ParseTime reads an export bound: RFC 3339 (2026-12-02T10:00:00Z), a
// date (2026-12-02, UTC midnight), or milliseconds since the epoch.
func ParseTime(s string) (time.Time, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q is neither RFC 3339, a date nor ms since the epoch", s)
	}
	return t, nil
}

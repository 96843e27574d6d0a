package storage

import "github.com/persistentchat/homeserver/roomdag"

// ReportKind says what a report is about.
type ReportKind string

// Report kinds (spec: "Reporting content").
const (
	ReportEvent ReportKind = "event"
	ReportRoom  ReportKind = "room"
	ReportUser  ReportKind = "user"
)

// Report is a user's report of an event, a room or a user, kept for the
// server's administrators.
type Report struct {
	ID       int64 // assigned when stored
	Kind     ReportKind
	Reporter roomdag.UserID
	// RoomID is set for event and room reports, EventID for event
	// reports, TargetUser for user reports.
	RoomID     roomdag.RoomID
	EventID    roomdag.EventID
	TargetUser roomdag.UserID
	Reason     string
	// Score is the event report's score, from -100 (most offensive) to 0,
	// if the client gave one.
	Score      *int
	ReceivedMS int64
}

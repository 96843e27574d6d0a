// Package httpapi holds what the client-server and server-server APIs share
// at the HTTP edge: the Matrix error type with its error codes, and the
// adapter that turns a handler's (value, error) into a JSON response (spec:
// client-server API, "API Standards"; server-server API, "API standards").
// It knows nothing of routes or authentication: api and federation keep
// their own.
package httpapi

import (
	"fmt"
	"net/http"
)

// Error is a Matrix error: what handlers return for anything a client did
// wrong. Any other error becomes M_UNKNOWN with status 500.
type Error struct {
	Status  int
	Code    string
	Message string
	// Extra fields merged into the body (retry_after_ms, soft_logout, ...).
	Extra map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message) }

// Errorf returns a Matrix error with a formatted message.
func Errorf(status int, code, format string, a ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// Error codes, in one place (spec: client-server API, "Standard error response").
const (
	CodeForbidden    = "M_FORBIDDEN"
	CodeUnknownToken = "M_UNKNOWN_TOKEN"
	// CodeUnauthorized: a federation request is not signed, or not by the
	// server it claims to come from (server-server API, "Request
	// Authentication"), answered with 401.
	CodeUnauthorized           = "M_UNAUTHORIZED"
	CodeMissingToken           = "M_MISSING_TOKEN"
	CodeBadJSON                = "M_BAD_JSON"
	CodeNotJSON                = "M_NOT_JSON"
	CodeNotFound               = "M_NOT_FOUND"
	CodeLimitExceeded          = "M_LIMIT_EXCEEDED"
	CodeUnrecognized           = "M_UNRECOGNIZED"
	CodeUnknown                = "M_UNKNOWN"
	CodeUserInUse              = "M_USER_IN_USE"
	CodeInvalidUsername        = "M_INVALID_USERNAME"
	CodeRoomInUse              = "M_ROOM_IN_USE"
	CodeInvalidParam           = "M_INVALID_PARAM"
	CodeTooLarge               = "M_TOO_LARGE"
	CodeMissingParam           = "M_MISSING_PARAM"
	CodeWeakPassword           = "M_WEAK_PASSWORD"
	CodeUserDeactivated        = "M_USER_DEACTIVATED"
	CodeUnsupportedRoomVersion = "M_UNSUPPORTED_ROOM_VERSION"
	// CodeIncompatibleRoomVersion: a federation request (invite, join)
	// for a room whose version this server does not support.
	CodeIncompatibleRoomVersion = "M_INCOMPATIBLE_ROOM_VERSION"
	CodeGuestAccessForbidden    = "M_GUEST_ACCESS_FORBIDDEN"
	CodeInvalidRoomState        = "M_INVALID_ROOM_STATE"
	CodeCannotOverwriteMedia    = "M_CANNOT_OVERWRITE_MEDIA"
	CodeNotYetUploaded          = "M_NOT_YET_UPLOADED"
	CodeDuplicateAnnotation     = "M_DUPLICATE_ANNOTATION"
	CodeBadState                = "M_BAD_STATE"
	// CodeUnableToGrantJoin: no user of this server who may invite is in
	// the room, so it cannot vouch for a restricted join (the errcode the
	// spec gives make_join for that case; Synapse answers it with 400).
	CodeUnableToGrantJoin = "M_UNABLE_TO_GRANT_JOIN"
	// CodeCannotLeaveServerNoticeRoom: the invite to a server notices room
	// cannot be rejected (Synapse's errcode).
	CodeCannotLeaveServerNoticeRoom = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
)

// CodeInviteBlocked: the invitee blocks invites (spec v1.18, "Invite
// permission", MSC4380).
const CodeInviteBlocked = "M_INVITE_BLOCKED"

// CodeUserLocked and CodeUserSuspended are the errcodes of an account on
// hold (api/moderation.go).
const (
	CodeUserLocked    = "M_USER_LOCKED"
	CodeUserSuspended = "M_USER_SUSPENDED"
)

// Error codes of extensible profiles (spec v1.16, profile.yaml).
const (
	CodeProfileTooLarge = "M_PROFILE_TOO_LARGE"
	CodeKeyTooLarge     = "M_KEY_TOO_LARGE"
)

// Error codes of the password policy (Synapse's, from MSC2000), each with
// status 400; Server.checkPasswordStrength.
const (
	CodePasswordTooShort    = "M_PASSWORD_TOO_SHORT"
	CodePasswordNoDigit     = "M_PASSWORD_NO_DIGIT"
	CodePasswordNoSymbol    = "M_PASSWORD_NO_SYMBOL"
	CodePasswordNoUppercase = "M_PASSWORD_NO_UPPERCASE"
	CodePasswordNoLowercase = "M_PASSWORD_NO_LOWERCASE"
)

// Error codes of the application service extensions (spec: application
// service API, "Client-Server API Extensions").
const (
	CodeExclusive         = "M_EXCLUSIVE"
	CodeUnknownDevice     = "M_UNKNOWN_DEVICE"
	CodeURLNotSet         = "M_URL_NOT_SET"
	CodeBadStatus         = "M_BAD_STATUS"
	CodeConnectionFailed  = "M_CONNECTION_FAILED"
	CodeConnectionTimeout = "M_CONNECTION_TIMEOUT"
)

// Forbidden is 403 M_FORBIDDEN.
func Forbidden(format string, a ...any) *Error {
	return Errorf(http.StatusForbidden, CodeForbidden, format, a...)
}

// BadJSON is 400 M_BAD_JSON: JSON that does not have the expected shape.
func BadJSON(format string, a ...any) *Error {
	return Errorf(http.StatusBadRequest, CodeBadJSON, format, a...)
}

// NotFound is 404 M_NOT_FOUND.
func NotFound(format string, a ...any) *Error {
	return Errorf(http.StatusNotFound, CodeNotFound, format, a...)
}

// InvalidParam is 400 M_INVALID_PARAM.
func InvalidParam(format string, a ...any) *Error {
	return Errorf(http.StatusBadRequest, CodeInvalidParam, format, a...)
}

// MissingParam is 400 M_MISSING_PARAM.
func MissingParam(format string, a ...any) *Error {
	return Errorf(http.StatusBadRequest, CodeMissingParam, format, a...)
}

// Unauthorized is 401 M_UNAUTHORIZED (federation request authentication).
func Unauthorized(format string, a ...any) *Error {
	return Errorf(http.StatusUnauthorized, CodeUnauthorized, format, a...)
}

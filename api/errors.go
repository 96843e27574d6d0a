package api

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

func errorf(status int, code, format string, a ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// Error codes, in one place (spec: client-server API, "Standard error response").
const (
	CodeForbidden              = "M_FORBIDDEN"
	CodeUnknownToken           = "M_UNKNOWN_TOKEN"
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
	CodeGuestAccessForbidden   = "M_GUEST_ACCESS_FORBIDDEN"
	CodeInvalidRoomState       = "M_INVALID_ROOM_STATE"
	CodeCannotOverwriteMedia   = "M_CANNOT_OVERWRITE_MEDIA"
	CodeNotYetUploaded         = "M_NOT_YET_UPLOADED"
	CodeDuplicateAnnotation    = "M_DUPLICATE_ANNOTATION"
	CodeBadState               = "M_BAD_STATE"
	// CodeUnableToGrantJoin: no user of this server who may invite is in
	// the room, so it cannot vouch for a restricted join (the errcode the
	// spec gives make_join for that case; Synapse answers it with 400).
	CodeUnableToGrantJoin = "M_UNABLE_TO_GRANT_JOIN"
	// CodeCannotLeaveServerNoticeRoom: the invite to a server notices room
	// cannot be rejected (Synapse's errcode).
	CodeCannotLeaveServerNoticeRoom = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
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

func forbidden(format string, a ...any) *Error {
	return errorf(http.StatusForbidden, CodeForbidden, format, a...)
}
func badJSON(format string, a ...any) *Error {
	return errorf(http.StatusBadRequest, CodeBadJSON, format, a...)
}
func notFoundErr(format string, a ...any) *Error {
	return errorf(http.StatusNotFound, CodeNotFound, format, a...)
}
func invalidParam(format string, a ...any) *Error {
	return errorf(http.StatusBadRequest, CodeInvalidParam, format, a...)
}
func missingParam(format string, a ...any) *Error {
	return errorf(http.StatusBadRequest, CodeMissingParam, format, a...)
}

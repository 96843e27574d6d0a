package federation

import "github.com/persistentchat/homeserver/httpapi"

// Endpoint is one endpoint of the federation router.
// (The fedread branch declares the same type in inbound.go; whichever
// merges second keeps one.)
type Endpoint struct {
	Method, Path string
	Handler      httpapi.Func
}

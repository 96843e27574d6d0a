package e2ee

import "github.com/persistentchat/homeserver/api"

// Routes are the to-device and dehydrated device endpoints, for
// api.Config.Routes.
func (t *ToDevice) Routes() []api.Route {
	return []api.Route{
		{Method: "PUT", Path: "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}", Handler: t.send},
		{Method: "PUT", Path: DehydratedPrefix, Handler: t.putDehydrated},
		{Method: "GET", Path: DehydratedPrefix, Handler: t.getDehydrated},
		{Method: "DELETE", Path: DehydratedPrefix, Handler: t.deleteDehydrated},
		{Method: "POST", Path: DehydratedPrefix + "/{deviceId}/events", Handler: t.dehydratedEvents},
	}
}

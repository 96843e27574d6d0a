package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/persistentchat/homeserver/roomdag"
)

// Events counts the events persisted to rooms, by origin. It is a
// roomdag.Listener, so the write path tells it of every commit; it is
// made before the rooms (they take their listeners when built), and
// passed to New in Sources.
type Events struct {
	server        roomdag.ServerName
	persisted     *prometheus.CounterVec
	local, remote prometheus.Counter
}

// NewEvents counts events for the server: those whose sender is one of
// its users are local, the rest remote.
func NewEvents(server roomdag.ServerName) *Events {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "events_persisted_total",
		Help: "Events committed to rooms, by origin: local (sent by this server's users) or remote."}, []string{"origin"})
	return &Events{server: server, persisted: v, local: v.WithLabelValues("local"), remote: v.WithLabelValues("remote")}
}

// EventCommitted implements roomdag.Listener: one atomic add, on the
// storage writer's goroutine.
func (e *Events) EventCommitted(ev *roomdag.Event, _ roomdag.StreamPos) {
	if ev.Sender().Server() == e.server {
		e.local.Inc()
	} else {
		e.remote.Inc()
	}
}

// Interface guard.
var _ roomdag.Listener = (*Events)(nil)

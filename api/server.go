// Package api is the client-server API: routes, authentication,
// user-interactive auth and one file of handlers per area of the spec.
package api

import (
	"context"
	"github.com/persistentchat/homeserver/compliance"
	"log/slog"
	"net/http"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
)

// Config is what the API needs from the homeserver's configuration.
type Config struct {
	// Compliance, when set, is the compliance archive: media access and
	// history reads are recorded, and its admin API is served
	// (compliance.go). Nil: compliance is off.
	Compliance *compliance.Service
	ServerName roomdag.ServerName
	// BaseURL is the client API's public URL, for /.well-known/matrix/client.
	BaseURL string
	// Registration: open (EnableRegistration), by token (RequiresToken with
	// Tokens), or neither. SharedSecret enables /_synapse/admin/v1/register.
	EnableRegistration bool
	RequiresToken      bool
	Tokens             []string
	SharedSecret       string
	BcryptCost         int
	// PasswordPolicy applies to passwords chosen at registration and at
	// password changes.
	PasswordPolicy     PasswordPolicy
	DefaultRoomVersion string
	MaxRequestSize     int64
	// BodyTimeout is how long a request body may take to arrive; media
	// uploads get longer while they keep to MinUploadRate bytes a second
	// (api/body.go).
	BodyTimeout   time.Duration
	MinUploadRate int64
	// ThumbnailSizes and ThumbnailMemory configure thumbnails
	// (media.Config).
	ThumbnailSizes  []media.ThumbnailSize
	ThumbnailMemory int64
	// AccessTokenLifetime applies to sessions that asked for a refresh
	// token; 0 means their access tokens do not expire.
	AccessTokenLifetime time.Duration
	RateLimited         bool
	RateLimits          map[string]RateLimit // "message", "login", "login_account", "login_failed", "registration"
	// SharedRateLimits keeps the rate limits' buckets in the database, for
	// several processes serving the client API on one database
	// (api/ratelimit.go); unset, each process counts on its own.
	SharedRateLimits bool
	// MediaDir is the media repository's directory; "" turns the media
	// endpoints off. MaxUploadSize bounds one upload, in bytes.
	MediaDir      string
	MaxUploadSize int64
	// AuthenticatedMedia is enable_authenticated_media (api/media.go).
	AuthenticatedMedia bool
	// RemoteMedia fetches other servers' media for the authenticated
	// download and thumbnail endpoints (over federation); nil: other
	// servers' media is not found.
	RemoteMedia media.Fetcher
	// Backfill fetches history older than what this server holds of a
	// room from the other servers in it (federation.Backfiller): /messages
	// asks it when paging back reaches the oldest event held. Nil: history
	// ends there.
	Backfill Backfiller
	// RemoteJoins joins rooms this server is not in and resolves other
	// servers' aliases, over federation; nil: those are not found.
	RemoteJoins RemoteJoiner
	// URLPreview configures GET /media/preview_url; nil turns it off.
	URLPreview *media.PreviewConfig
	// AppServices is application service support; nil when the server
	// has none configured.
	AppServices AppServices
	// Pushers hears of changes to pushers (api/pushers.go); nil when
	// nothing delivers to push gateways.
	Pushers PusherChanges
	// ServerNotices configures server notices (api/servernotices.go);
	// nil turns them off.
	ServerNotices *ServerNoticesConfig
	// EncryptionByDefault is encryption_enabled_by_default_for_room_type
	// (EncryptionAll, EncryptionInvite, EncryptionOff; api/encryption.go),
	// and RefuseRoomEncryption refuses m.room.encryption in rooms.
	EncryptionByDefault  string
	RefuseRoomEncryption bool
	// Routes are served beside the API's own, by other packages
	// (api/extroutes.go).
	Routes []Route
	// Erasure, if set, is asked before an account is deactivated with
	// erase: true (api/deactivate.go); an error it returns refuses the
	// request. Nil allows every erasure.
	Erasure ErasureGuard
}

// ErasureGuard says whether an account may be erased.
type ErasureGuard interface {
	// CheckErasure returns nil when user's account may be erased, else
	// the Matrix error that refuses it.
	CheckErasure(ctx context.Context, user roomdag.UserID) error
}

// Server serves the client-server API.
type Server struct {
	cfg    Config
	store  Store
	rooms  *roomdag.Rooms
	sync   *sync.Syncer
	clock  clock.Clock
	log    *slog.Logger
	http   *httpapi.Adapter
	limits *limiter
	uia    *uiaSessions
	random randomSource
	// upgrades carries out room upgrades (api/roomupgrade.go).
	upgrades *upgrader
	// media is the media repository, nil when MediaDir is "".
	media *media.Repository

	notices   serverNotices
	seen      gosync.Map // user|device -> time.Time of the last last-seen write
	dummyOnce gosync.Once
	dummy     string
	// passwordChecks counts bcrypt comparisons (PasswordChecks).
	passwordChecks atomic.Uint64
}

// NewServer wires the API. random supplies IDs and tokens.
func NewServer(cfg Config, store Store, rooms *roomdag.Rooms, syncer *sync.Syncer, clk clock.Clock, log *slog.Logger, random randomSource) *Server {
	classes := map[rateClass]RateLimit{
		rateMessage:      cfg.RateLimits["message"],
		rateLogin:        cfg.RateLimits["login"],
		rateRegistration: cfg.RateLimits["registration"],
		rateLoginAccount: cfg.RateLimits["login_account"],
		rateLoginFailed:  cfg.RateLimits["login_failed"],
	}
	s := &Server{
		cfg: cfg, store: store, rooms: rooms, sync: syncer, clock: clk, log: log, random: random,
		http:   httpapi.NewAdapter(log, mapError),
		limits: newLimiter(cfg.RateLimited, clk, classes, sharedLimits(cfg, store)),
		uia:    newUIASessions(clk, store),
	}
	s.upgrades = &upgrader{store: store, rooms: rooms, clock: clk, log: log, server: cfg.ServerName,
		firstEvents: s.firstEvents, roomID: s.localRoomID,
		accountDataChanged: func(user roomdag.UserID, pos int64) { s.sync.Notifier().AccountDataChanged(user, pos) },
		copyPushRules:      s.copyRoomPushRules,
		calls:              map[roomdag.RoomID]*upgradeCall{}}
	if cfg.MediaDir != "" {
		s.media = media.New(media.Config{Dir: cfg.MediaDir, MaxUploadSize: cfg.MaxUploadSize,
			AuthenticatedMedia: cfg.AuthenticatedMedia, ThumbnailSizes: cfg.ThumbnailSizes, ThumbnailMemory: cfg.ThumbnailMemory}, store, clk, random)
	}
	return s
}

// sharedLimits is the store, if the config asks for shared rate limits.
func sharedLimits(cfg Config, store Store) sharedBuckets {
	if !cfg.SharedRateLimits {
		return nil
	}
	return store
}

// Media is the media repository, nil when the media endpoints are off;
// tests read its ThumbnailStats.
func (s *Server) Media() *media.Repository { return s.media }

// Handler returns the HTTP handler for every client-server route.
// middlewares wrap every request first, within the router, so they see
// the route chi chose once the request is served (the metrics do).
func (s *Server) Handler(middlewares ...func(http.Handler) http.Handler) http.Handler {
	r := chi.NewRouter()
	r.Use(middlewares...)
	r.Use(CORS)
	tables := [][]route{
		s.discoveryRoutes(), s.accountRoutes(), s.deactivateRoutes(), s.roomRoutes(), s.historyRoutes(),
		s.profileRoutes(), s.accountDataRoutes(), s.directoryRoutes(), s.syncRoutes(), s.pushRuleRoutes(),
		s.receiptRoutes(),
		s.publicRoomRoutes(), s.tagRoutes(), s.userDirectoryRoutes(), s.summaryRoutes(),
		s.notificationRoutes(), s.feedRoutes(), s.pusherRoutes(),
		s.hierarchyRoutes(), s.presenceRoutes(), s.reportRoutes(),
		s.appServiceRoutes(),
		s.relationRoutes(),
		s.searchRoutes(),
		s.mediaRoutes(),
		s.serverNoticeRoutes(), s.moderationRoutes(),
		s.mutualRoomRoutes(),
		s.extraRoutes(),
		s.complianceRoutes(),
	}
	for _, table := range tables {
		for _, rt := range table {
			if kind := auditKind(rt); kind != "" && s.cfg.Compliance != nil {
				rt.handler = s.audited(kind, rt.handler)
			}
			h := s.wrap(rt)
			paths := []string{rt.path}
			// Older bots still use the r0 prefix; it is the same API.
			if strings.HasPrefix(rt.path, v3+"/") {
				paths = append(paths, r0+strings.TrimPrefix(rt.path, v3))
			}
			for _, p := range paths {
				r.Method(rt.method, p, h)
				// Every GET answers HEAD too, as Synapse's resources do
				// (HTTP: "HEAD is identical to GET except that the server
				// MUST NOT send content"); health checks and load
				// balancers probe with it. net/http drops the body and
				// keeps the headers, Content-Length included.
				if rt.method == http.MethodGet {
					r.Method(http.MethodHead, p, h)
				}
			}
		}
	}
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		s.writeError(w, req, httpapi.Errorf(http.StatusNotFound, httpapi.CodeUnrecognized, "unrecognized request"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		s.writeError(w, req, httpapi.Errorf(http.StatusMethodNotAllowed, httpapi.CodeUnrecognized, "method not allowed"))
	})
	return r
}

// CORS lets browser clients (Element Web) call the API from any origin, as
// the spec requires ("Web Browser Clients"), and answers their preflights
// (OPTIONS) on every /_matrix and /.well-known path. The server wraps the
// federation API's handler in it too.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS") // as Synapse
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions && strings.HasPrefix(r.URL.Path, "/_matrix") || r.Method == http.MethodOptions && strings.HasPrefix(r.URL.Path, "/.well-known") {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

const (
	v3 = "/_matrix/client/v3"
	v1 = "/_matrix/client/v1"
	r0 = "/_matrix/client/r0"
)

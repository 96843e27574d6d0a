// Package server assembles a homeserver from its configuration: storage,
// the room write path, sync, the client API and the key server. The binary
// (cmd/homeserver) and the test helper (testserver) both start it here, so
// tests run exactly what operators run.
package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/api"
	"github.com/persistentchat/homeserver/appservice"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/cluster"
	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/e2ee"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/metrics"
	"github.com/persistentchat/homeserver/netguard"
	"github.com/persistentchat/homeserver/push"
	"github.com/persistentchat/homeserver/pusher"
	"github.com/persistentchat/homeserver/retention"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/postgres"
	"github.com/persistentchat/homeserver/storage/sqlstore"
	"github.com/persistentchat/homeserver/streamworker"
	"github.com/persistentchat/homeserver/sync"
)

// Version is reported by the federation version endpoint.
const Version = "0.1.0"

// Homeserver is a running server's parts.
type Homeserver struct {
	cfg      *configs.Config
	db       *sqlstore.DB
	http     *http.Server
	listener net.Listener
	log      *slog.Logger
	// The federation listener, over TLS; fedHTTP nil when
	// federation_listen is empty.
	fedHTTP     *http.Server
	fedListener net.Listener
	// Federation is the outbound federation transport, and Keyring the
	// other servers' keys fetched through it; exposed for tests.
	Federation *federation.HTTPClient
	Keyring    *federation.Keyring
	// FedTxns serves inbound transactions; tests read its Stats.
	FedTxns *federation.Transactions
	// FedSender sends local events and EDUs to other servers; tests
	// read its Stats.
	FedSender *federation.Sender
	// DeviceLists queues local device-list changes for other servers
	// (m.device_list_update, m.signing_key_update); tests wait on its
	// Loop.
	DeviceLists *federation.DeviceListSender
	// Rooms is the write path and Syncer the /sync assembly, exposed for
	// benchmarks and tests.
	Rooms  *roomdag.Rooms
	Syncer *sync.Syncer
	// CrossSigning holds users' cross-signing keys and signatures; the
	// key server's /keys/query asks it (e2ee.CrossSigningKeys), tests too.
	CrossSigning *e2ee.CrossSigning
	// Notifications is the push rule worker; tests wait on it with
	// Wait(ctx, pos) instead of sleeping.
	Notifications *push.Worker
	// AppServices pushes events to the application services; tests wait
	// on it with Delivered instead of sleeping.
	AppServices *appservice.Service
	// Pushers delivers notifications to push gateways; tests wait on it
	// with WaitStats instead of sleeping.
	Pushers *pusher.Sender
	// Media is the media repository; tests read its ThumbnailStats.
	Media *media.Repository
	// API is the client-server API; tests read its PasswordChecks.
	API *api.Server
	// ToDevice serves to-device messages; inbound federation hands it
	// m.direct_to_device EDUs (ReceiveEDU).
	ToDevice *e2ee.ToDevice
	// Holds are the legal holds; Retention the purge jobs, nil when
	// retention is off (tests wait on its WaitStats).
	Holds     *retention.Holds
	Retention *retention.Purger
	// Compliance is the compliance archiver, nil when compliance is off;
	// tests wait on it with Wait(ctx, pos). ComplianceRecorder queues
	// the records that are not events (nil: off).
	Compliance         *compliance.Archiver
	ComplianceRecorder *compliance.Recorder
	key                roomdag.SigningKey

	// leases are those the background workers run under, one per kind
	// of worker.
	leases []*streamworker.Holder
	// dbLeases are this process's leases in the database, on PostgreSQL;
	// nil on SQLite, whose one process holds every lease (Always).
	dbLeases *postgres.Leases

	fresh  freshConns
	open   openConns
	health *health

	// The metrics and their listener; nil when metrics are off.
	metrics         *metrics.Metrics
	metricsHTTP     *http.Server
	metricsListener net.Listener

	// Listening to the other processes sharing the database (cluster.go);
	// nil on SQLite.
	stopListen func()
	listening  chan struct{} // closed when the listener has stopped
	listenHold listenHold
}

// openConns counts the client API's open connections, for OpenConns.
type openConns struct {
	mu      gosync.Mutex
	conns   map[net.Conn]struct{}
	changed chan struct{} // closed and replaced on every change
}

func (o *openConns) track(c net.Conn, state http.ConnState) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conns == nil {
		o.conns = map[net.Conn]struct{}{}
	}
	switch state {
	case http.StateNew:
		o.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(o.conns, c)
	default:
		return
	}
	if o.changed != nil {
		close(o.changed)
		o.changed = nil
	}
}

// OpenConns is how many client API connections are open now.
func (hs *Homeserver) OpenConns() int {
	hs.open.mu.Lock()
	defer hs.open.mu.Unlock()
	return len(hs.open.conns)
}

// WaitOpenConns waits until at most n client API connections are open,
// or ctx ends.
func (hs *Homeserver) WaitOpenConns(ctx context.Context, n int) error {
	for {
		hs.open.mu.Lock()
		if len(hs.open.conns) <= n {
			hs.open.mu.Unlock()
			return nil
		}
		if hs.open.changed == nil {
			hs.open.changed = make(chan struct{})
		}
		ch := hs.open.changed
		hs.open.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d connections still open, want at most %d: %w", hs.OpenConns(), n, ctx.Err())
		}
	}
}

// freshConns tracks connections accepted that have not sent a request
// yet. http.Server.Shutdown waits up to 5 s for such a connection before
// treating it as idle; Shutdown closes them at once instead, since no
// request on them has been read.
type freshConns struct {
	mu    gosync.Mutex
	conns map[net.Conn]struct{}
}

func (f *freshConns) track(c net.Conn, state http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state == http.StateNew {
		if f.conns == nil {
			f.conns = map[net.Conn]struct{}{}
		}
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.Close()
		delete(f.conns, c)
	}
}

// New opens storage and builds every part, listening on cfg.Listen.
func New(cfg *configs.Config, log *slog.Logger, clk clock.Clock) (*Homeserver, error) {
	v, ok := roomdag.LookupRoomVersion(cfg.DefaultRoomVersion)
	if !ok {
		return nil, fmt.Errorf("default_room_version %q is not supported by this server", cfg.DefaultRoomVersion)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	key, err := LoadOrCreateKey(cfg.SigningKeyPath(), roomdag.ServerName(cfg.ServerName))
	if err != nil {
		return nil, err
	}
	db, err := OpenStore(cfg, log)
	if err != nil {
		return nil, err
	}
	hs := &Homeserver{cfg: cfg, db: db, log: log}
	if cfg.Database.Name == configs.EnginePostgres {
		// Several processes may share the database: each worker runs in
		// the one that holds its lease.
		hs.dbLeases, err = postgres.OpenLeases(postgres.Options{DSN: cfg.Database.Postgres().DSN.Reveal()}, cfg.Database.LeaseDuration())
		if err != nil {
			db.Close()
			return nil, err
		}
		log.Info("worker leases", "holder", hs.dbLeases.Holder(), "duration", hs.dbLeases.Duration().String())
	}
	if err := hs.build(key, v, clk); err != nil {
		hs.stopFollowing()
		hs.closeLeases()
		db.Close()
		return nil, err
	}
	return hs, nil
}

func (hs *Homeserver) build(key roomdag.SigningKey, v *roomdag.RoomVersion, clk clock.Clock) error {
	ctx := context.Background()
	cfg, db, log := hs.cfg, hs.db, hs.log
	// A bad registration file stops start-up, naming the file and field.
	registry, err := appservice.Load(cfg.AppServiceConfigFiles, roomdag.ServerName(cfg.ServerName))
	if err != nil {
		return err
	}
	evPos, err := db.EventPos(ctx)
	if err != nil {
		return err
	}
	adPos, err := db.AccountDataPos(ctx)
	if err != nil {
		return err
	}
	members, err := db.Members(ctx, roomdag.MembershipJoin, roomdag.MembershipInvite, roomdag.MembershipKnock)
	if err != nil {
		return err
	}
	notifyPos, err := db.NotifyPos(ctx)
	if err != nil {
		return err
	}
	tdPos, err := db.ToDevicePos(ctx)
	if err != nil {
		return err
	}
	server := roomdag.ServerName(cfg.ServerName)
	notifier := sync.NewNotifier(server, sync.Token{Events: evPos, AccountData: adPos, Notifications: notifyPos, ToDevice: tdPos}, members)
	// The worker hears of commits only as a wake-up signal; it reads the
	// events back from storage, so none is lost across a restart.
	// The worker wakes both /sync and the pushers. The pushers read room
	// names through the write path (hs.Rooms, set below, before they start).
	deny, allow := cfg.IPRanges() // ip_range_blacklist: pushers choose their URLs
	hs.Pushers = pusher.NewSender(db, pusher.RoomStatesFunc(func(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error) {
		return hs.Rooms.State(ctx, id)
	}), clk, log, netguard.Guard{Deny: deny, Allow: allow}, hs.lease("pushers", clk))
	hs.Notifications = push.NewWorker(db, push.Wakers{notifier, hs.Pushers}, server, clk, log, hs.lease("notifications", clk))
	// The services' ephemeral fan-out reads current room state through
	// the write path, which is built next with the services among its
	// listeners.
	var rooms *roomdag.Rooms
	hs.AppServices = appservice.New(registry, db, appservice.RoomStatesFunc(func(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error) {
		return rooms.State(ctx, id)
	}), clk, log, nil, hs.lease("appservices", clk))
	// The federation sender queues each local event for the servers in
	// its room; it reads room state through the write path too.
	roomStates := federation.StateSourceFunc(func(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error) {
		return rooms.State(ctx, id)
	})
	hs.Federation = federationClient(cfg, key, clk)
	// Servers the room's ACL denies are sent none of its events.
	hs.FedSender = federation.NewSender(federation.SenderOptions{Server: server, Store: db, Client: hs.Federation,
		Destinations: federation.JoinedServers{Server: server, Rooms: roomStates, ServerAllowed: func(st roomdag.StateMap, s roomdag.ServerName) bool {
			return roomdag.ServerAllowed(st, s)
		}}, Rooms: roomStates,
		Holder: hs.lease("federation_sender", clk), Presence: cfg.Presence.Federate, Clock: clk, Log: log})
	listeners := []roomdag.Listener{notifier, hs.Notifications, hs.AppServices, hs.FedSender}
	hs.key = key
	if cc := cfg.Compliance; cc.Enabled {
		// Redactions keep what they remove where the archiver, which
		// runs after commit, can read it.
		db.SetKeepUnredacted(true)
		hs.Compliance = compliance.NewArchiver(db, key, clk, log, hs.lease("compliance", clk), compliance.Options{
			CheckpointRecords: cc.CheckpointRecords, CheckpointInterval: cc.CheckpointInterval.Std()})
		hs.ComplianceRecorder = compliance.NewRecorder(db, clk, hs.Compliance.Notify)
		listeners = append(listeners, hs.Compliance)
	}
	var events *metrics.Events
	if cfg.Metrics.Enabled {
		events = metrics.NewEvents(server)
		listeners = append(listeners, events)
	}
	rooms = roomdag.NewRooms(db, key, clk, rand.Reader, cfg.Caches.Rooms, listeners...)
	hs.Rooms = rooms
	// Every presence change, from PUT /presence, /sync or the offline
	// timeout, reaches the services with receive_ephemeral.
	// On a database other processes share, the follower applies their
	// changes here (cluster.go), and typing is stored, so that every
	// process numbers it alike (sync/typingshared.go).
	var follower *cluster.Follower
	var shared sync.Shared
	if db.Shared() {
		shared.Typing = db
		shared.Activity = activityFunc(func(user roomdag.UserID, connected bool) {
			follower.PresenceActivity(user, connected)
		})
	}
	// End-to-end encryption: the key server is read by /sync and serves
	// its endpoints behind the client API's authentication.
	// Cross-signing checks signatures against the key server's device
	// keys and announces its changes on the device-list stream.
	hs.CrossSigning = e2ee.NewCrossSigning(db, e2ee.StoreDeviceKeys{Store: db}, db)
	// Remote users' keys come from their servers, over the outbound
	// federation transport (signed, IP deny-list).
	// Other servers' users' device lists are cached, filled by their
	// EDUs (FedTxns below), a gap resynced from the origin's
	// /user/devices (e2ee/devicelistfed.go); /keys/query answers from the
	// cache while it is kept current.
	devUpdates := e2ee.NewDeviceListUpdates(server, db, federation.UserKeys{Client: hs.Federation}, notifier, log)
	e2 := e2ee.New(e2ee.Config{Server: server, Store: db, CrossSigning: hs.CrossSigning,
		Remote: federation.UserKeys{Client: hs.Federation}, Cache: db, Resync: devUpdates, Current: notifier.Current, Log: log})
	// Local device-list changes go to the servers sharing a room with
	// the user, through the sender's queues (federation/devicelists.go);
	// the commit hook wakes it (follow).
	var rescan time.Duration
	if db.Shared() {
		rescan = 5 * time.Second // other processes' changes
	}
	hs.DeviceLists = federation.NewDeviceListSender(federation.DeviceListOptions{Server: server, Store: db, Keys: e2.Keys(),
		Destinations: federation.JoinedServers{Server: server, Rooms: roomStates}, Sender: hs.FedSender,
		Holder: hs.lease("device_list_sender", clk), Rescan: rescan, Clock: clk, Log: log})
	syncer := sync.NewSyncer(db, hs.Rooms, notifier, clk, log, cfg.BackchatDefault, cfg.BackchatMax, cfg.Presence.Enabled, presenceTee{hs.AppServices, hs.FedSender}, shared, e2.Keys())
	hs.Syncer = syncer
	follower = hs.follow(evPos, notifier, push.Wakers{notifier, hs.Pushers})
	tokens := make([]string, len(cfg.RegistrationTokens))
	for i, t := range cfg.RegistrationTokens {
		tokens[i] = t.Reveal()
	}
	// The keyring checks other servers' signatures: on requests, and on
	// the events of rooms joined over federation.
	own := federationKeys(cfg, key)
	keyring := federation.NewKeyring(own, db, hs.Federation, notaries(cfg), clk, log)
	hs.Keyring = keyring
	joiner := &federation.RemoteJoiner{Server: server, Key: key, Client: hs.Federation, Verifier: keyring,
		Rooms: hs.Rooms, Clock: clk, Log: log}
	rl := cfg.RateLimiting
	// hs.Federation, made above, is the outbound federation transport:
	// keys, remote media, and whatever else this server asks of others.
	apiCfg := api.Config{
		ServerName: server, BaseURL: strings.TrimSuffix(cfg.BaseURL(), "/"),
		EnableRegistration: cfg.EnableRegistration, RequiresToken: cfg.RegistrationRequiresToken,
		Tokens: tokens, SharedSecret: cfg.RegistrationSharedSecret.Reveal(), BcryptCost: cfg.BcryptRounds,
		PasswordPolicy:     api.PasswordPolicy(cfg.PasswordConfig.Policy),
		DefaultRoomVersion: v.ID, MaxRequestSize: int64(cfg.MaxRequestSize),
		EncryptionByDefault: cfg.EncryptionEnabledByDefaultForRoomType, RefuseRoomEncryption: refuseRoomEncryption(cfg),
		MediaDir: cfg.MediaDir(), MaxUploadSize: int64(cfg.MaxUploadSize), AuthenticatedMedia: cfg.EnableAuthenticatedMedia,
		RemoteMedia: federation.MediaFetcher{Client: hs.Federation},
		RemoteJoins: joiner,
		// Invites of other servers' users and rejections of their
		// invites (federation/inviteremote.go).
		RemoteMemberships:   &federation.RemoteInviter{RemoteJoiner: joiner, Signatures: keyring},
		URLPreview:          urlPreview(cfg),
		AppServices:         ephemeralTee{hs.AppServices, hs.FedSender},
		Pushers:             hs.Pushers,
		BodyTimeout:         cfg.RequestBodyTimeout.Std(),
		MinUploadRate:       int64(cfg.MinUploadRate),
		ThumbnailSizes:      thumbnailSizes(cfg.ThumbnailSizes),
		ThumbnailMemory:     int64(cfg.MaxThumbnailMemory),
		AccessTokenLifetime: cfg.RefreshableAccessTokenLifetime.Std(),
		RateLimited:         rl.Enabled,
		// On PostgreSQL several processes may serve the client API.
		SharedRateLimits: cfg.Database.Name == configs.EnginePostgres,
		RateLimits: map[string]api.RateLimit{
			"message":       {PerSecond: rl.Message.PerSecond, BurstCount: rl.Message.BurstCount},
			"login":         {PerSecond: rl.Login.PerSecond, BurstCount: rl.Login.BurstCount},
			"login_account": {PerSecond: rl.Login.Account.PerSecond, BurstCount: rl.Login.Account.BurstCount},
			"login_failed":  {PerSecond: rl.Login.FailedAttempts.PerSecond, BurstCount: rl.Login.FailedAttempts.BurstCount},
			"registration":  {PerSecond: rl.Registration.PerSecond, BurstCount: rl.Registration.BurstCount},
		},
	}
	apiCfg.Routes = e2.Routes()
	if sn := cfg.ServerNotices; sn.Enabled() {
		apiCfg.ServerNotices = &api.ServerNoticesConfig{Localpart: sn.SystemMXIDLocalpart,
			DisplayName: sn.SystemMXIDDisplayName, AvatarURL: sn.SystemMXIDAvatarURL,
			RoomName: sn.RoomName, RoomAvatarURL: sn.RoomAvatarURL, RoomTopic: sn.RoomTopic, AutoJoin: sn.AutoJoin}
	}
	// End-to-end encryption: to-device messages and dehydrated devices;
	// remote recipients' messages go out through the federation sender's
	// queues as m.direct_to_device EDUs (inbound ones: FedTxns below).
	hs.ToDevice = e2ee.NewToDevice(db, server, hs.FedSender, e2.Keys(), clk, log)
	apiCfg.Routes = append(apiCfg.Routes, hs.ToDevice.Routes()...)
	// Legal holds exist whether or not retention is on: they also stop
	// erasure. The compliance archive, when on, records the holds made
	// and released (retention.AdminActionRecorder); the purge jobs purge
	// the archive's records of the rooms they purge
	// (compliance.ArchivePurge, below).
	var adminActions retention.AdminActionRecorder
	if hs.ComplianceRecorder != nil {
		adminActions = archivedAdminActions{hs.ComplianceRecorder}
	}
	hs.Holds = retention.NewHolds(db, clk, log, adminActions)
	apiCfg.Erasure = hs.Holds
	for _, rt := range retention.NewAPI(hs.Holds, db, requesterID).Routes() {
		apiCfg.Routes = append(apiCfg.Routes, api.Route{Method: rt.Method, Path: rt.Path, Handler: rt.Handler})
	}
	// Cross-signing and key backup (e2ee/crosssign.go, e2ee/backup.go).
	apiCfg.Routes = append(apiCfg.Routes, hs.CrossSigning.Routes()...)
	apiCfg.Routes = append(apiCfg.Routes, e2ee.NewKeyBackup(db).Routes()...)
	if hs.Compliance != nil {
		apiCfg.Compliance = hs.ComplianceService()
	}
	// PDUs go into the DAG through roomdag.Rooms.Receive, which announces
	// the live ones to the same listeners as local events (/sync, push,
	// appservices, compliance); what they lack is fetched from their
	// origin over the outbound transport. /messages backfills through
	// the same.
	pdus := &federation.RoomPDUs{Server: server, Rooms: hs.Rooms, Store: db, Client: hs.Federation, Verifier: keyring, Log: log}
	apiCfg.Backfill = federation.Backfiller{PDUs: pdus}
	if hs.Compliance != nil {
		// Backfilled events are not announced to the listeners: wake the
		// archiver for them.
		apiCfg.Backfill = archivedBackfill{apiCfg.Backfill, hs.Compliance.Notify}
	}
	client := api.NewServer(apiCfg, db, hs.Rooms, syncer, clk, log, rand.Reader)
	hs.API = client
	if err := client.ResumeDeactivations(ctx); err != nil {
		return err
	}
	hs.health = &health{db: db, log: log, timeout: healthTimeout}
	// Off, no metric is counted: the routers get no middleware and the
	// write path no listener.
	var middlewares []func(http.Handler) http.Handler
	if cfg.Metrics.Enabled {
		hs.metrics = metrics.New(metrics.Sources{Events: events,
			Head:        func() roomdag.StreamPos { return notifier.Current().Events },
			SyncWaiters: syncer.Parked, Workers: metrics.WorkersFunc(hs.workerPositions), Pools: db,
			Leases: metrics.LeasesFunc(hs.leaseHolds)})
		middlewares = append(middlewares, hs.metrics.Middleware)
		mmux := http.NewServeMux()
		mmux.Handle("GET /metrics", hs.metrics.Handler())
		mmux.Handle("GET /health", hs.health)
		hs.metricsHTTP = &http.Server{Handler: mmux, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	}
	// The federation and key APIs have their own router, so their paths
	// get 404 and 405 of their own rather than the client API's; browsers
	// may preflight them too.
	mux := http.NewServeMux()
	mux.Handle("GET /health", hs.health) // HEAD too
	// Every federation endpoint but the key and version ones is signed
	// by its origin (federation/auth.go).
	fedAuth := federation.NewAuthenticator(server, keyring, int64(cfg.MaxRequestSize),
		func(s roomdag.ServerName) bool { return cfg.FederationAllowed(string(s)) })
	publicGet, publicPost := client.PublicRoomsHandlers()
	inbound := federation.NewInbound(federation.InboundOptions{Server: server, Store: db, Rooms: hs.Rooms, Auth: fedAuth,
		Media: client.Media(), PublicRoomsGet: publicGet, PublicRoomsPost: publicPost, Clock: clk, Log: log})
	hs.FedTxns = federation.NewTransactions(federation.TxnOptions{Server: server, Auth: fedAuth, Store: db, Rooms: hs.Rooms,
		PDUs: pdus, Ephemeral: syncer, Clock: clk, Log: log,
		// To-device messages are about no room: no server ACL applies.
		EDUs: map[string]federation.EDUHandler{"m.direct_to_device": hs.ToDevice.ReceiveEDU,
			"m.device_list_update": devUpdates.HandleDeviceListUpdate, "m.signing_key_update": devUpdates.HandleSigningKeyUpdate},
		ServerAllowed: func(st roomdag.StateMap, s roomdag.ServerName) bool { return roomdag.ServerAllowed(st, s) },
		OriginUp:      hs.FedSender.ServerUp})
	fedRoutes := append(inbound.Routes(), hs.FedTxns.Routes()...)
	// Joins, leaves and knocks of other servers' users (federation/joins.go).
	// The events they take in go on to the room's other servers too.
	handshakes := federation.NewHandshakes(inbound, hs.Rooms, key, keyring)
	handshakes.Forward = hs.FedSender.Forward
	fedRoutes = append(fedRoutes, handshakes.Routes()...)
	// Invites from other servers' users (federation/invite.go).
	fedRoutes = append(fedRoutes, federation.NewInvites(federation.InviteOptions{Key: key, Rooms: hs.Rooms, Users: db,
		Verifier: keyring, Auth: fedAuth, Log: log, InvitesBlocked: func(ctx context.Context, u roomdag.UserID) (bool, error) {
			return sync.InvitesBlocked(ctx, db, u)
		}}).Routes()...)
	// End-to-end keys of local users, for other servers (e2ee/fedkeys.go).
	for _, rt := range e2.Keys().FederationRoutes() {
		fedRoutes = append(fedRoutes, federation.Endpoint{Method: rt.Method, Path: rt.Path, Handler: fedAuth.Wrap(rt.Handler)})
	}
	fed := api.CORS(federation.NewKeyServer(own, keyring, clk, log, Version).Handler(fedRoutes, middlewares...))
	// The federation endpoints stay on the client listener too: clients
	// and tools read the keys and version there, and a server without a
	// federation listener still publishes its keys.
	mux.Handle("/_matrix/federation/", fed)
	mux.Handle("/_matrix/key/", fed)
	if cfg.FederationListen != "" {
		tlsCfg, err := federationTLS(cfg)
		if err != nil {
			return err
		}
		fmux := http.NewServeMux()
		fmux.Handle("/_matrix/federation/", fed)
		fmux.Handle("/_matrix/key/", fed)
		hs.fedHTTP = &http.Server{
			Handler:           client.BodyDeadlines(fmux),
			TLSConfig:         tlsCfg,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			// As the client API's: a connection that sent no request is
			// closed at once on shutdown.
			ConnState: hs.fresh.track,
		}
	}
	if follower != nil {
		middlewares = append(middlewares, barrier(follower, log))
	}
	mux.Handle("/", client.Handler(middlewares...))
	hs.Media = client.Media()
	if rc := cfg.Retention; rc.Enabled {
		pc := retention.PurgerConfig{Server: server, Lease: hs.lease("retention", clk),
			Policy: retention.Policy{DefaultMin: rc.DefaultPolicy.MinLifetime.Std(), DefaultMax: rc.DefaultPolicy.MaxLifetime.Std(),
				AllowedMin: rc.AllowedLifetimeMin.Std(), AllowedMax: rc.AllowedLifetimeMax.Std()}}
		for _, j := range rc.PurgeJobs {
			pc.Jobs = append(pc.Jobs, retention.Job{Shortest: j.ShortestMaxLifetime.Std(), Longest: j.LongestMaxLifetime.Std(), Interval: j.Interval.Std()})
		}
		if hs.Media != nil {
			pc.Files = hs.Media
		}
		if hs.Compliance != nil {
			pc.Archive = compliance.ArchivePurge{Store: db, Held: hs.Holds.Held}
		}
		hs.Retention = retention.NewPurger(pc, db, hs.Holds, clk, log)
	}
	var handler http.Handler = mux
	if cfg.XForwarded {
		handler = forwardedFor(handler)
	}
	hs.http = &http.Server{
		// Headers must arrive within ReadHeaderTimeout, bodies within
		// request_body_timeout (api/body.go).
		Handler:           client.BodyDeadlines(handler),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState: func(c net.Conn, state http.ConnState) {
			hs.fresh.track(c, state)
			hs.open.track(c, state)
		},
	}
	for _, l := range hs.leases {
		if err := l.Start(ctx); err != nil {
			hs.stopWorkers()
			return err
		}
	}
	if err := hs.Notifications.Start(ctx); err != nil {
		hs.stopWorkers()
		return err
	}
	if err := hs.AppServices.Start(ctx); err != nil {
		hs.stopWorkers()
		return err
	}
	if err := hs.FedSender.Start(ctx); err != nil {
		hs.stopWorkers()
		return err
	}
	if err := hs.DeviceLists.Start(ctx); err != nil {
		hs.stopWorkers()
		return err
	}
	if hs.Compliance != nil {
		if err := hs.Compliance.Start(ctx); err != nil {
			hs.stopWorkers()
			return err
		}
	}
	// Last: it starts nothing when it fails.
	if err := hs.Pushers.Start(ctx); err != nil {
		hs.stopWorkers()
		return err
	}
	if hs.Retention != nil {
		hs.Retention.Start()
	}
	return nil
}

// lease makes the holder of a background worker's lease. On SQLite the
// server is the only process on its database, so it always holds every
// lease; on PostgreSQL the lease is a row of worker_leases, which moves
// to another process when its holder dies.
//
// The typing and presence timeouts (sync's sweeper) are not under a
// lease: each process expires what it holds in memory, the typing
// notices and the syncs running on it, so every process must run its own
// sweep; no part of that sweep is durable work that one process could
// do for all.
func (hs *Homeserver) lease(name string, clk clock.Clock) *streamworker.Holder {
	var l streamworker.Lease = streamworker.Always{}
	if hs.dbLeases != nil {
		l = hs.dbLeases.Lease(name)
	}
	h := streamworker.NewHolder(name, l, clk, hs.log)
	hs.leases = append(hs.leases, h)
	return h
}

// leaseHolds is whether this process holds each lease, for the metrics.
func (hs *Homeserver) leaseHolds() []metrics.LeaseHold {
	out := make([]metrics.LeaseHold, len(hs.leases))
	for i, l := range hs.leases {
		out[i] = metrics.LeaseHold{Lease: l.Name(), Held: l.Holding()}
	}
	return out
}

// closeLeases closes the lease pool, after the holders have stopped
// (and released their leases).
func (hs *Homeserver) closeLeases() {
	if hs.dbLeases != nil {
		hs.dbLeases.Close()
	}
}

// stopWorkers stops the background workers, each after its step in
// progress, then gives up their leases. Idempotent.
func (hs *Homeserver) stopWorkers() {
	hs.Notifications.Stop()
	hs.Pushers.Stop()
	hs.AppServices.Stop()
	if hs.Retention != nil {
		hs.Retention.Stop()
	}
	hs.DeviceLists.Stop()
	hs.FedSender.Stop()
	if hs.Compliance != nil {
		hs.Compliance.Stop()
	}
	for _, l := range hs.leases {
		l.Stop()
	}
}

// thumbnailSizes converts the configured thumbnail sizes, which
// Validate has checked.
func thumbnailSizes(sizes []configs.ThumbnailSize) []media.ThumbnailSize {
	out := make([]media.ThumbnailSize, len(sizes))
	for i, s := range sizes {
		out[i] = media.ThumbnailSize{Width: s.Width, Height: s.Height, Method: media.Method(s.Method)}
	}
	return out
}

// urlPreview is the URL preview configuration, nil when previews are off.
func urlPreview(cfg *configs.Config) *media.PreviewConfig {
	if !cfg.URLPreviewEnabled {
		return nil
	}
	deny, allow := cfg.URLPreviewIPRanges()
	return &media.PreviewConfig{Guard: netguard.Guard{Deny: deny, Allow: allow}, MaxBytes: int64(cfg.MaxSpiderSize)}
}

// workerPositions is where the background workers are, for the metrics.
func (hs *Homeserver) workerPositions() []metrics.WorkerPosition {
	ps := []metrics.WorkerPosition{
		{Worker: "notifications", Pos: hs.Notifications.Pos()},
		{Worker: "pushers", Pos: hs.Pushers.Pos()},
	}
	if hs.Compliance != nil {
		// Its lag behind the head is the compliance archive's lag.
		ps = append(ps, metrics.WorkerPosition{Worker: "compliance", Pos: hs.Compliance.Pos()})
	}
	for id, pos := range hs.AppServices.Positions() {
		ps = append(ps, metrics.WorkerPosition{Worker: "appservice", Queue: id, Pos: pos})
	}
	return ps
}

// Listen binds the client API listener and, when they are configured,
// the federation and metrics listeners; Addr, FederationAddr and
// MetricsAddr are known after it returns.
func (hs *Homeserver) Listen() error {
	l, err := net.Listen("tcp", hs.cfg.Listen)
	if err != nil {
		return err
	}
	if hs.metricsHTTP != nil {
		ml, err := net.Listen("tcp", hs.cfg.Metrics.Listen)
		if err != nil {
			l.Close()
			return fmt.Errorf("metrics listener: %w", err)
		}
		hs.metricsListener = ml
	}
	if hs.fedHTTP != nil && hs.fedListener == nil {
		fl, err := net.Listen("tcp", hs.cfg.FederationListen)
		if err != nil {
			l.Close()
			if hs.metricsListener != nil {
				hs.metricsListener.Close()
			}
			return fmt.Errorf("federation listener: %w", err)
		}
		hs.fedListener = fl
	}
	hs.listener = l
	return nil
}

// UseFederationListener makes Listen serve federation on l, already
// bound, instead of binding federation_listen: a test names its server
// after the port (127.0.0.1:PORT) before the server is built. Call it
// before Listen; the server closes l at Shutdown.
func (hs *Homeserver) UseFederationListener(l net.Listener) error {
	if hs.fedHTTP == nil {
		return errors.New("federation_listen is not set")
	}
	hs.fedListener = l
	return nil
}

// FederationAddr is the bound federation listener's address, nil when
// there is none.
func (hs *Homeserver) FederationAddr() net.Addr {
	if hs.fedListener == nil {
		return nil
	}
	return hs.fedListener.Addr()
}

// Addr is the bound listener address.
func (hs *Homeserver) Addr() net.Addr { return hs.listener.Addr() }

// MetricsAddr is the bound metrics listener's address, nil when metrics
// are off.
func (hs *Homeserver) MetricsAddr() net.Addr {
	if hs.metricsListener == nil {
		return nil
	}
	return hs.metricsListener.Addr()
}

// Serve serves until Shutdown, the metrics too when they are on; it
// returns nil after a clean shutdown.
func (hs *Homeserver) Serve() error {
	if hs.metricsListener != nil {
		hs.log.Info("serving metrics", "addr", hs.metricsListener.Addr().String())
		go func() {
			if err := hs.metricsHTTP.Serve(hs.metricsListener); !errors.Is(err, http.ErrServerClosed) {
				hs.log.Error("metrics listener", "err", err)
			}
		}()
	}
	if hs.fedListener != nil {
		hs.log.Info("serving federation", "addr", hs.fedListener.Addr().String())
		go func() {
			// The TLS configuration is the server's (TLSConfig).
			if err := hs.fedHTTP.ServeTLS(hs.fedListener, "", ""); !errors.Is(err, http.ErrServerClosed) {
				hs.log.Error("federation listener", "err", err)
			}
		}()
	}
	hs.log.Info("serving client API", "addr", hs.listener.Addr().String(), "server_name", hs.cfg.ServerName)
	err := hs.http.Serve(hs.listener)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests, lets running ones finish (long-polls
// are cut at the deadline), stops the notification worker after its
// current step, then waits for every accepted write to commit and closes
// the database. Events the worker has not reached are processed at the
// next start.
func (hs *Homeserver) Shutdown(ctx context.Context) error {
	hs.Syncer.Close() // long-polls answer now instead of at their timeout
	hs.stopFollowing()
	// This server's own idle connections to others' federation
	// listeners (its own, in tests) would hold their Shutdown.
	hs.Federation.CloseIdleConnections()
	done := make(chan error, 1)
	fedDone := make(chan error, 1)
	go func() { done <- hs.http.Shutdown(ctx) }()
	if hs.fedHTTP != nil {
		go func() { fedDone <- hs.fedHTTP.Shutdown(ctx) }()
	} else {
		fedDone <- nil
	}
	// Connections that never sent a request would hold Shutdown for 5 s
	// each; close them as they show up, until Shutdown is done.
	tick := time.NewTicker(20 * time.Millisecond)
	var err, ferr error
	// Both listeners' shutdowns, the federation one's too: a TLS
	// connection still in its handshake is one that sent no request.
	for pending := 2; pending > 0; {
		hs.fresh.closeAll()
		select {
		case err = <-done:
			pending, done = pending-1, nil
		case ferr = <-fedDone:
			pending, fedDone = pending-1, nil
		case <-tick.C:
		}
	}
	tick.Stop()
	if errors.Is(err, context.DeadlineExceeded) {
		err = hs.http.Close()
	}
	if errors.Is(ferr, context.DeadlineExceeded) {
		ferr = hs.fedHTTP.Close()
	}
	err = errors.Join(err, ferr)
	if hs.fedListener != nil {
		// Already closed if it was served; not if Serve never ran.
		hs.fedListener.Close()
	}
	if hs.metricsHTTP != nil {
		// Scrapes are short: no grace.
		err = errors.Join(err, hs.metricsHTTP.Close())
	}
	hs.stopWorkers()
	hs.closeLeases()
	return errors.Join(err, hs.db.Close())
}

// ComplianceExporter writes compliance exports signed by this server's
// key.
func (hs *Homeserver) ComplianceExporter() *compliance.Exporter {
	return &compliance.Exporter{Store: hs.db, Key: hs.key, Server: roomdag.ServerName(hs.cfg.ServerName)}
}

// ComplianceService is the archive's status, verify and export, nil
// when compliance is off.
func (hs *Homeserver) ComplianceService() *compliance.Service {
	if hs.ComplianceRecorder == nil {
		return nil
	}
	return &compliance.Service{Store: hs.db, Recorder: hs.ComplianceRecorder, Exporter: hs.ComplianceExporter(), Public: hs.key.Public()}
}

// DB is the storage, for tests and operator commands.
func (hs *Homeserver) DB() *sqlstore.DB { return hs.db }

// LoadOrCreateKey reads the signing key, generating and saving one (mode
// 0600) if the file does not exist.
func LoadOrCreateKey(path string, server roomdag.ServerName) (roomdag.SigningKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := roomdag.ParseSigningKey(server, b)
		if err != nil {
			return roomdag.SigningKey{}, fmt.Errorf("signing key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return roomdag.SigningKey{}, err
	}
	k, err := roomdag.GenerateSigningKey(server, rand.Reader)
	if err != nil {
		return roomdag.SigningKey{}, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return roomdag.SigningKey{}, err
	}
	if err := os.WriteFile(path, []byte(k.Marshal()), 0o600); err != nil {
		return roomdag.SigningKey{}, err
	}
	return k, nil
}

// requesterID is the user an authenticated client request was made by
// ("" for none), for the retention admin API.
func requesterID(r *http.Request) roomdag.UserID {
	user, _, _ := api.Caller(r)
	return user
}

// ephemeralTee hands the client API's typing and receipt changes to the
// application services and to the federation sender both.
type ephemeralTee struct {
	*appservice.Service
	fed *federation.Sender
}

func (e ephemeralTee) Typing(room roomdag.RoomID, user roomdag.UserID, typing bool, timeout time.Duration) {
	e.Service.Typing(room, user, typing, timeout)
	e.fed.Typing(room, user, typing, timeout)
}

func (e ephemeralTee) Receipt(room roomdag.RoomID, user roomdag.UserID, typ, thread string, event roomdag.EventID, tsMS int64) {
	e.Service.Receipt(room, user, typ, thread, event, tsMS)
	e.fed.Receipt(room, user, typ, thread, event, tsMS)
}

// presenceTee hands presence changes to the application services and to
// the federation sender both.
type presenceTee struct {
	as  *appservice.Service
	fed *federation.Sender
}

func (p presenceTee) PresenceChanged(user roomdag.UserID, content json.RawMessage) {
	p.as.PresenceChanged(user, content)
	p.fed.PresenceChanged(user, content)
}

// refuseRoomEncryption is refuse_room_encryption, which defaults to on
// when the compliance archive is: encrypted rooms cannot be archived
// readably (issue 13).
func refuseRoomEncryption(cfg *configs.Config) bool {
	if cfg.RefuseRoomEncryption != nil {
		return *cfg.RefuseRoomEncryption
	}
	return cfg.Compliance.Enabled
}

// archivedAdminActions records retention's admin actions (legal holds
// made and released, purges) in the compliance archive.
// archivedBackfill wakes the compliance archiver after a backfill stored
// events.
type archivedBackfill struct {
	api.Backfiller
	wake func()
}

func (b archivedBackfill) Backfill(ctx context.Context, room roomdag.RoomID, evs []*roomdag.Event, limit int) (int, error) {
	n, err := b.Backfiller.Backfill(ctx, room, evs, limit)
	if n > 0 {
		b.wake()
	}
	return n, err
}

type archivedAdminActions struct{ r *compliance.Recorder }

func (a archivedAdminActions) RecordAdminAction(ctx context.Context, x retention.AdminAction) error {
	payload := map[string]any{"action": x.Action}
	if x.User != "" {
		payload["user_id"] = x.User
	}
	if x.HoldID != 0 {
		payload["hold_id"], payload["reason"] = x.HoldID, x.Reason
	}
	if !x.Before.IsZero() {
		payload["before_ms"] = x.Before.UnixMilli()
		if x.Action == "retention.archive_purge" {
			payload["records"] = x.Records
		} else {
			payload["events"] = x.Events
		}
	}
	return a.r.Record(ctx, compliance.KindAdminAction, x.Actor, x.Room, payload)
}

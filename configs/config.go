// Package configs holds the homeserver's configuration: one struct, Config,
// whose every field is documented where it is declared together with its
// default, and the documented sample homeserver.yaml that lists every key.
// A test keeps the two in step: every field appears in the sample, the
// sample decodes strictly into the struct, and it decodes to exactly
// Default().
//
// Key names follow Synapse's where Synapse has the same setting, so that
// administrators moving from Synapse can carry their values over.
package configs

import (
	_ "embed"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

//go:embed homeserver.yaml
var sample []byte

// Sample returns the documented sample configuration: every key with a
// comment explaining it and its default value. Decoding it gives Default().
func Sample() []byte {
	return append([]byte(nil), sample...)
}

// Config is the whole homeserver configuration. Use Default for a valid
// starting point, Load to read a file, and Validate after changing fields
// by hand.
//
// After Load, every path field is absolute: relative paths in the file are
// resolved against the directory that holds the file.
type Config struct {
	// ServerName is the Matrix server name: the part after the colon in
	// user IDs and room aliases. A DNS name, IPv4 literal or bracketed IPv6
	// literal, optionally followed by ":port" (spec appendix "Server
	// Name"). It cannot change once users and rooms exist.
	// Default: "localhost:8008".
	ServerName string `yaml:"server_name"`

	// PublicBaseURL is the absolute http(s) URL at which clients reach the
	// client-server API, advertised in /.well-known/matrix/client. Read it
	// through BaseURL, which fills in the default.
	// Default: "" (http://<Listen>/, see BaseURL).
	PublicBaseURL string `yaml:"public_baseurl"`

	// Listen is the host:port of the plain-HTTP client-server API
	// listener. Port 0 picks a free port (tests); then set PublicBaseURL.
	// Default: "127.0.0.1:8008".
	Listen string `yaml:"listen"`

	// XForwarded makes the listener take each request's client address
	// from the X-Forwarded-For header that a reverse proxy or load
	// balancer in front of it sets (Synapse's listener option of the same
	// name): the address rate limits are keyed by and that logs and the
	// device list show. Only enable it when every request comes through
	// such a proxy: a client that reaches the listener directly could
	// then name any address. Off, the header is ignored.
	// Default: false.
	XForwarded bool `yaml:"x_forwarded"`

	// FederationListen is the host:port of the server-server API
	// listener, served over TLS (spec "Server-Server API", "TLS") with
	// the certificate of TLSCertificatePath, or a self-signed one. It
	// serves /_matrix/federation/ and /_matrix/key/. A server named with
	// an IP literal and a port (127.0.0.1:8448) is reached at that
	// address directly, so such a name should carry this listener's port;
	// a DNS name without a port is reached through
	// /.well-known/matrix/server, SRV records or port 8448 (spec
	// "Resolving server names"). Port 0 picks a free port (tests).
	// Default: "" (no federation listener; the key endpoints stay on the
	// client API's listener).
	FederationListen string `yaml:"federation_listen"`

	// TLSCertificatePath is the PEM certificate chain the federation
	// listener presents (Synapse's tls_certificate_path). Set both it and
	// TLSPrivateKeyPath, or neither: then the server creates a
	// self-signed certificate for its server name and a key in DataDir on
	// first start (federation.tls.crt, federation.tls.key), which peers
	// accept only with federation_verify_certificates: false. Read the
	// pair through TLSPaths.
	// Default: "" (<DataDir>/federation.tls.crt, self-signed).
	TLSCertificatePath string `yaml:"tls_certificate_path"`

	// TLSPrivateKeyPath is the PEM private key of TLSCertificatePath
	// (Synapse's tls_private_key_path).
	// Default: "" (<DataDir>/federation.tls.key, created with the
	// self-signed certificate).
	TLSPrivateKeyPath string `yaml:"tls_private_key_path"`

	// FederationVerifyCertificates checks other servers' TLS
	// certificates on outbound federation requests, as the spec requires
	// (Synapse's federation_verify_certificates). Turn it off only for a
	// test federation whose servers present self-signed certificates.
	// Default: true.
	FederationVerifyCertificates bool `yaml:"federation_verify_certificates"`

	// FederationDomainWhitelist, when not empty, lists the only servers
	// this server sends federation requests to, by server name exactly as
	// written in IDs (with the port, if the name has one). Synapse's
	// federation_domain_whitelist, except that an empty list here means
	// no restriction (in Synapse, an empty list means no federation).
	// Default: [] (every server).
	FederationDomainWhitelist []string `yaml:"federation_domain_whitelist"`

	// DataDir holds the database, the signing key and media, unless their
	// own settings say otherwise. The server creates it on first start.
	// Default: "./data" (relative to the config file).
	DataDir string `yaml:"data_dir"`

	// Database configures storage.
	// Default: see Database.
	Database Database `yaml:"database"`

	// SigningKeyFile is the ed25519 signing key file, in Synapse's format
	// ("ed25519 <key id> <unpadded base64 seed>"), generated on first start
	// if missing. Read it through SigningKeyPath, which fills in the
	// default. (The field is not called SigningKeyPath because that is the
	// getter's name; the YAML key is Synapse's signing_key_path.)
	// Default: "" (<DataDir>/signing.key).
	SigningKeyFile string `yaml:"signing_key_path"`

	// OldSigningKeys are the public halves of keys this server signed
	// with before, by key ID ("ed25519:<version>"), Synapse's
	// old_signing_keys: after a key rotation they are published in
	// old_verify_keys with their expired_ts, so that other servers can
	// still verify what the old key signed (configs/federationkeys.go).
	// Default: {} (none).
	OldSigningKeys map[string]OldSigningKey `yaml:"old_signing_keys"`

	// TrustedKeyServers are the notaries asked for another server's keys
	// when that server cannot be reached (Synapse's trusted_key_servers,
	// configs/federationkeys.go). Synapse's default is matrix.org; ours is
	// none, so that a federation of departments never depends on, or
	// talks to, a server outside it unless told to.
	// Default: [] (none).
	TrustedKeyServers []TrustedKeyServer `yaml:"trusted_key_servers"`

	// Caches bounds the in-memory caches.
	// Default: see Caches.
	Caches Caches `yaml:"caches"`

	// EnableRegistration lets anyone register through the client-server
	// API. Accounts can always be made with RegistrationSharedSecret.
	// Default: false.
	EnableRegistration bool `yaml:"enable_registration"`

	// RegistrationRequiresToken adds the m.login.registration_token stage
	// to registration; a token from RegistrationTokens must be given.
	// Requires EnableRegistration.
	// Default: false.
	RegistrationRequiresToken bool `yaml:"registration_requires_token"`

	// RegistrationTokens are the tokens accepted by the
	// m.login.registration_token stage, each usable any number of times.
	// Each is 1 to 64 characters from [A-Za-z0-9._~-] (spec, "Token-authenticated
	// registration"). Non-empty exactly when RegistrationRequiresToken is set.
	// Default: empty.
	RegistrationTokens []Secret `yaml:"registration_tokens"`

	// RegistrationSharedSecret enables Synapse's admin registration
	// endpoint /_synapse/admin/v1/register when set: whoever knows it can
	// create accounts, admins included, whatever EnableRegistration says.
	// Default: "" (the endpoint is disabled).
	RegistrationSharedSecret Secret `yaml:"registration_shared_secret"`

	// BcryptRounds is the bcrypt cost for new password hashes, 4 to 31.
	// Default: 12.
	BcryptRounds int `yaml:"bcrypt_rounds"`

	// PasswordConfig configures local passwords, under Synapse's key.
	// Default: see PasswordConfig.
	PasswordConfig PasswordConfig `yaml:"password_config"`

	// DefaultRoomVersion is the version of rooms created without an
	// explicit room_version. Only its grammar is checked here; the server
	// refuses to start if it does not implement the version.
	// Default: "11".
	DefaultRoomVersion string `yaml:"default_room_version"`

	// EncryptionEnabledByDefaultForRoomType, under Synapse's key and with
	// its meaning, turns end-to-end encryption on in new rooms: "all"
	// rooms, rooms created with the private_chat or trusted_private_chat
	// preset ("invite"), or none ("off"). createRoom then adds an
	// m.room.encryption event (m.megolm.v1.aes-sha2) to the initial state
	// unless the request has one. RefuseRoomEncryption overrides it.
	// Default: "off".
	EncryptionEnabledByDefaultForRoomType string `yaml:"encryption_enabled_by_default_for_room_type"`

	// RefuseRoomEncryption, when true, refuses end-to-end encryption in
	// rooms, for organisations whose rules require a readable archive:
	// m.room.encryption in a new room's initial state and sent as a state
	// event later are answered 403 M_FORBIDDEN, and
	// EncryptionEnabledByDefaultForRoomType adds nothing. Rooms that are
	// encrypted already stay so. A pointer so that a deployment's own
	// default (the compliance service's: on) applies when it is unset.
	// Default: unset (true when compliance is enabled, else false).
	RefuseRoomEncryption *bool `yaml:"refuse_room_encryption"`

	// BackchatDefault is how many recent events a member gets in /sync for
	// a room it has just joined or is catching up on after a gap, when
	// neither its filter nor the room sets a number. At least 1 and at most
	// BackchatMax.
	// Default: 50.
	BackchatDefault int `yaml:"backchat_default"`

	// BackchatMax caps the recent events /sync returns for one room in one
	// response, whether the number comes from the filter, the room or
	// BackchatDefault. At least 1.
	// Default: 1000.
	BackchatMax int `yaml:"backchat_max"`

	// MaxRequestSize is the largest JSON request body accepted. At least 1.
	// Default: 1 MiB ("1M").
	MaxRequestSize ByteSize `yaml:"max_request_size"`

	// MaxUploadSize is the largest media upload accepted, advertised as
	// m.upload.size. At least 1.
	// Default: 50 MiB ("50M").
	MaxUploadSize ByteSize `yaml:"max_upload_size"`

	// EnableAuthenticatedMedia, as in Synapse: media uploaded while it is
	// true is marked authenticated and served only through the
	// authenticated endpoints (/_matrix/client/v1/media/download and
	// /thumbnail); the deprecated unauthenticated /_matrix/media/v3
	// download and thumbnail endpoints answer 404 M_NOT_FOUND for it. Media
	// uploaded while it was false (or before the server recorded the
	// difference) stays reachable there. With it false, the legacy
	// endpoints serve all media, authenticated or not.
	// Default: true.
	EnableAuthenticatedMedia bool `yaml:"enable_authenticated_media"`

	// URLPreviewEnabled serves URL previews
	// (GET /_matrix/client/v1/media/preview_url): the server fetches the
	// web pages clients ask about, reads their OpenGraph data and stores
	// their images as media. Off by default, as in Synapse: it makes the
	// server fetch URLs that users post, and tells those sites its address.
	// Default: false.
	URLPreviewEnabled bool `yaml:"url_preview_enabled"`

	// URLPreviewIPRangeBlacklist lists the IP ranges (CIDR, or single
	// addresses) that URL previews never connect to, checked on the
	// address actually dialled, for every redirect too, so a DNS name
	// that resolves into a range is refused as well. The default covers
	// loopback, private, link-local, carrier-grade NAT, multicast,
	// documentation and reserved ranges, and their IPv6 counterparts
	// (unique local, link-local, NAT64, 6to4): the server must not become
	// a way into the network it runs in.
	// Default: see DefaultIPRangeBlacklist.
	URLPreviewIPRangeBlacklist []string `yaml:"url_preview_ip_range_blacklist"`

	// URLPreviewIPRangeWhitelist lists IP ranges that URL previews may
	// reach even though URLPreviewIPRangeBlacklist covers them (an
	// intranet wiki, say).
	// Default: empty.
	URLPreviewIPRangeWhitelist []string `yaml:"url_preview_ip_range_whitelist"`

	// MaxSpiderSize is the most a URL preview reads of a page or image;
	// longer pages are previewed from their beginning, larger images are
	// left out. At least 1.
	// Default: 10 MiB ("10M").
	MaxSpiderSize ByteSize `yaml:"max_spider_size"`

	// IPRangeBlacklist lists the IP ranges (CIDR, or single addresses)
	// that the server's other outbound requests never connect to: those
	// to push gateways and to other servers over federation (the well-known
	// lookup included), as in Synapse. Checked on the address actually
	// dialled, like URLPreviewIPRangeBlacklist, so a pusher URL whose
	// host resolves into a range fails delivery. Clients choose pusher
	// URLs, so without it any user could make the server post to
	// internal services.
	// Default: see DefaultIPRangeBlacklist (the same list as
	// URLPreviewIPRangeBlacklist).
	IPRangeBlacklist []string `yaml:"ip_range_blacklist"`

	// IPRangeWhitelist lists IP ranges that outbound requests may reach
	// even though IPRangeBlacklist covers them (a push gateway on the
	// local network, say, or 127.0.0.0/8 for a test federation on
	// loopback).
	// Default: empty.
	IPRangeWhitelist []string `yaml:"ip_range_whitelist"`

	// ThumbnailSizes are the sizes the server makes thumbnails of images
	// at, in Synapse's format. A request for a thumbnail gets the one of
	// these that fits it best, chosen as Synapse does: of those with the
	// requested method (of all, if none has it), the one closest to the
	// requested size among those at least as large in one direction, else
	// the largest; never larger than the image, which is served itself
	// when it is no larger than the chosen size. So each image has at
	// most one thumbnail file per entry here, whatever sizes clients ask
	// for, and the first request for any of them makes them all from one
	// decode. At least one entry; no two alike.
	// Default: Synapse's: 32x32 crop, 96x96 crop, 320x240 scale,
	// 640x480 scale, 800x600 scale (see DefaultThumbnailSizes).
	ThumbnailSizes []ThumbnailSize `yaml:"thumbnail_sizes"`

	// MaxThumbnailMemory is the memory that decoding images for
	// thumbnails may take at once, counted from each image's header
	// before it is decoded (a 5000×5000 PNG takes about 155 MiB,
	// decoded and scaled). Decodes that would together pass it wait for
	// each other; an image that alone would pass it is not thumbnailed
	// (M_TOO_LARGE). Images of more than 25 million pixels are never
	// thumbnailed. At least 1 MiB.
	// Default: 256 MiB ("256M").
	MaxThumbnailMemory ByteSize `yaml:"max_thumbnail_memory"`

	// RequestBodyTimeout is how long a client may take to send a request
	// body once its headers are in; past it the request is answered 408
	// M_UNKNOWN and the connection closed. Media uploads get one more
	// second for every MinUploadRate bytes received. Greater than 0.
	// Default: 30 seconds ("30s").
	RequestBodyTimeout Duration `yaml:"request_body_timeout"`

	// MinUploadRate is the slowest a media upload may arrive on average,
	// in bytes a second, once RequestBodyTimeout has passed: an upload
	// that keeps to it is never cut. At least 1.
	// Default: 1 KiB a second ("1K").
	MinUploadRate ByteSize `yaml:"min_upload_rate"`

	// RateLimiting configures the rate limits.
	// Default: see RateLimiting.
	RateLimiting RateLimiting `yaml:"rate_limiting"`

	// RefreshableAccessTokenLifetime is how long an access token stays
	// valid when the client asked for a refresh token. Zero means access
	// tokens never expire: a refresh token is still issued when asked for
	// (and using it rotates both tokens), but no expires_in_ms is returned.
	// Clients that do not ask for a refresh token always get an access
	// token that never expires.
	// Default: 0.
	RefreshableAccessTokenLifetime Duration `yaml:"refreshable_access_token_lifetime"`

	// Presence configures presence: online, idle and offline status.
	// Default: see Presence.
	Presence Presence `yaml:"presence"`

	// ServerNotices configures server notices: messages from the server's
	// administrators to a user, in a room of their own (spec: "Server
	// Notices"; Synapse's server_notices and its admin API
	// /_synapse/admin/v1/send_server_notice).
	// Default: see ServerNotices (off).
	ServerNotices ServerNotices `yaml:"server_notices"`

	// Retention configures message retention: how long rooms keep their
	// history before a purge job deletes it, with Synapse's keys
	// (configs/retention.go).
	// Default: see Retention (off).
	Retention Retention `yaml:"retention"`

	// AppServiceConfigFiles are the registration files of application
	// services (configs/appservice-registration.yaml documents one). The
	// server reads and checks them at start (package appservice) and
	// refuses to start if one is broken or two clash.
	// Default: empty.
	AppServiceConfigFiles []string `yaml:"app_service_config_files"`

	// LogLevel is the least severe level logged: "debug", "info", "warn"
	// or "error". Read it as a slog.Level through SlogLevel.
	// Default: "info".
	LogLevel string `yaml:"log_level"`

	// LogFormat is how the log is written to standard error: "text", one
	// line of key=value pairs per record, or "json", one JSON object per
	// line (slog's JSON form: "time", "level", "msg", then the record's
	// attributes), for log collectors. Neither ever carries an access
	// token or a password.
	// Default: "text".
	LogFormat string `yaml:"log_format"`

	// Metrics configures the Prometheus metrics listener (Synapse's
	// enable_metrics and its listener of type metrics, in one section).
	// Default: see Metrics (off).
	Metrics Metrics `yaml:"metrics"`

	// Compliance configures the compliance archive (package compliance):
	// a hash-chained, signed record of every stored event, media upload
	// and download, history read and admin action, for export and
	// verification (homeserver compliance ...).
	// Default: see Compliance (off).
	Compliance Compliance `yaml:"compliance"`
}

// Compliance configures the compliance archive.
type Compliance struct {
	// Enabled archives. Off, nothing is recorded, and redactions keep no
	// copy of what they remove.
	// Default: false.
	Enabled bool `yaml:"enabled"`

	// CheckpointInterval is the longest the archive goes without a
	// signed checkpoint while records arrive: the first archiver step
	// this long after the last checkpoint makes one, and a timer of this
	// period seals the newest records on a quiet server. An export holds
	// only records a checkpoint seals.
	// Default: "1m".
	CheckpointInterval Duration `yaml:"checkpoint_interval"`

	// CheckpointRecords is the most records the archive appends before
	// it signs a checkpoint (checked at the end of each archiver step).
	// Default: 1000.
	CheckpointRecords int64 `yaml:"checkpoint_records"`
}

// Metrics configures the Prometheus metrics, served at /metrics in the
// text exposition format on a listener of their own, never the client
// API's: they tell whoever reads them how busy the server and its users
// are, so keep the listener on loopback or a private network. The
// metrics are named in package metrics.
type Metrics struct {
	// Enabled serves the metrics. Off, nothing listens and nothing is
	// counted.
	// Default: false.
	Enabled bool `yaml:"enabled"`

	// Listen is the host:port of the metrics listener, as Listen for the
	// client API; it must not be the client API's. Port 0 picks a free
	// port (tests).
	// Default: "127.0.0.1:9000" (Synapse's usual metrics port).
	Listen string `yaml:"listen"`
}

// Database configures storage, in Synapse's shape: the engine's name and
// its connection arguments. The engines are SQLite (the embedded default,
// one process) and PostgreSQL (an existing server, which several
// homeserver processes may share). Read SQLite's file through
// Config.DatabasePath and PostgreSQL's connection through
// Database.Postgres; both fill in the defaults.
type Database struct {
	// Name is the engine: "sqlite3" or "postgres". (Synapse's name for
	// PostgreSQL, "psycopg2", is refused with a hint rather than taken,
	// since Synapse accepts arguments this server does not.)
	// Default: "sqlite3".
	Name string `yaml:"name"`

	// Path is the SQLite database file, the key this server read before
	// it had args; args.database says the same, and setting both to
	// different files is an error. Only for sqlite3.
	// Default: "" (<DataDir>/homeserver.db).
	Path string `yaml:"path"`

	// Args are the engine's connection arguments.
	// Default: see DatabaseArgs.
	Args DatabaseArgs `yaml:"args"`

	// WorkerLeaseDuration is, on postgres, how long a process's hold on a
	// background worker (notifications, pushers, application services)
	// lasts between renewals, which come every third of it: when the
	// process that runs a worker dies, another takes the worker over
	// within this time. Shorter moves work sooner and costs more renewals
	// (one short statement per worker per third). At least 1s, in whole
	// milliseconds. SQLite ignores it: its one process runs every worker.
	// Default: "15s".
	WorkerLeaseDuration Duration `yaml:"worker_lease_duration"`
}

// DatabaseArgs are the connection arguments of Database (Synapse's
// database.args). Database is SQLite's; the rest are PostgreSQL's, which
// takes either DSN or the separate Host, Port, User, Password, DBName and
// SSLMode, never both, and needs a database name either way. Setting an
// argument of the other engine is an error, except the pool sizes, which
// SQLite ignores (it has one writer and a read pool of its own).
type DatabaseArgs struct {
	// Database is the SQLite database file (Synapse's key), the same as
	// database.path. Only for sqlite3.
	// Default: "" (<DataDir>/homeserver.db).
	Database string `yaml:"database"`

	// DSN is PostgreSQL's connection string, in either of libpq's forms:
	// a URL ("postgres://user:password@host:5432/dbname?sslmode=require")
	// or key=value pairs ("host=db.internal user=matrix dbname=matrix").
	// It must name the database. It may hold the password, so it is a
	// secret: never logged, never shown in an error.
	// Default: "" (the separate arguments below are used).
	DSN Secret `yaml:"dsn"`

	// Host is the PostgreSQL server's host name or address, or the
	// directory of its Unix socket (a path starting with "/").
	// Default: "" (libpq's: the local Unix socket, else localhost).
	Host string `yaml:"host"`

	// Port is the PostgreSQL server's port, 1 to 65535.
	// Default: 0 (libpq's: 5432).
	Port int `yaml:"port"`

	// User is the PostgreSQL role the server connects as.
	// Default: "" (libpq's: the operating system user's name).
	User string `yaml:"user"`

	// Password is the role's password. A secret: never logged, never
	// shown in an error.
	// Default: "" (none, or libpq's password file ~/.pgpass).
	Password Secret `yaml:"password"`

	// DBName is the PostgreSQL database, which must exist (the server
	// creates its tables in it). Required unless DSN is set.
	// Default: "".
	DBName string `yaml:"dbname"`

	// SSLMode is libpq's sslmode: disable, allow, prefer, require,
	// verify-ca or verify-full.
	// Default: "" (libpq's: prefer).
	SSLMode string `yaml:"sslmode"`

	// CPMin is the fewest PostgreSQL connections the server keeps open
	// (Synapse's cp_min). From 0 to CPMax.
	// Default: 5.
	CPMin int `yaml:"cp_min"`

	// CPMax is the most PostgreSQL connections the server opens at once
	// (Synapse's cp_max). At least 1. PostgreSQL's max_connections must
	// leave room for it in every homeserver process that shares the
	// database.
	// Default: 10.
	CPMax int `yaml:"cp_max"`
}

// Caches bounds the in-memory caches, so that memory stays flat however
// much a server accumulates.
type Caches struct {
	// Rooms is how many rooms keep their current state in memory; past
	// it, the least recently used rooms leave memory and are read back
	// from the database when next used. A room takes about 25 KiB for a
	// dozen members, 150 KiB for a hundred and 1.5 MiB for a thousand;
	// reading one back takes from half a millisecond to some 25 ms. At
	// least 1.
	// Default: 2000.
	Rooms int `yaml:"rooms"`
}

// RateLimiting configures the rate limits. Each limit is a token bucket.
type RateLimiting struct {
	// Enabled is the one switch for every rate limit; turn it off only for
	// load tests.
	// Default: true.
	Enabled bool `yaml:"enabled"`

	// Message limits sending events, per user.
	// Default: 10 per second, burst 50.
	Message RateLimit `yaml:"message"`

	// Login limits login attempts: per client IP address, per account
	// and failed attempts per account (Synapse's rc_login).
	// Default: see LoginRateLimit.
	Login LoginRateLimit `yaml:"login"`

	// Registration limits registration attempts, per client IP address.
	// Default: 1 per second, burst 10.
	Registration RateLimit `yaml:"registration"`
}

// MaxPasswordLength is the longest password accepted, in characters
// (Synapse's limit).
const MaxPasswordLength = 512

// PasswordConfig configures local passwords (Synapse's password_config;
// of its keys, only the policy applies here).
type PasswordConfig struct {
	// Policy is what a new password must satisfy.
	// Default: see PasswordPolicy.
	Policy PasswordPolicy `yaml:"policy"`
}

// PasswordPolicy is what a password chosen at registration or at a
// password change must satisfy (Synapse's password_config.policy, with
// its checks and error codes: M_PASSWORD_TOO_SHORT, M_PASSWORD_NO_DIGIT,
// M_PASSWORD_NO_SYMBOL, M_PASSWORD_NO_UPPERCASE, M_PASSWORD_NO_LOWERCASE,
// each with status 400, checked in that order). Passwords of existing
// accounts are not checked again.
type PasswordPolicy struct {
	// Enabled applies the policy. Off, any password of at least one
	// character is accepted. (Synapse's default is off; ours keeps the
	// eight-character minimum this server always had.)
	// Default: true.
	Enabled bool `yaml:"enabled"`

	// MinimumLength is the fewest characters (Unicode code points) a
	// password may have, 0 to 512 (512 is the longest password accepted).
	// Default: 8.
	MinimumLength int `yaml:"minimum_length"`

	// RequireDigit asks for at least one ASCII digit, 0-9.
	// Default: false.
	RequireDigit bool `yaml:"require_digit"`

	// RequireSymbol asks for at least one character that is not an ASCII
	// letter or digit.
	// Default: false.
	RequireSymbol bool `yaml:"require_symbol"`

	// RequireLowercase asks for at least one ASCII lower-case letter, a-z.
	// Default: false.
	RequireLowercase bool `yaml:"require_lowercase"`

	// RequireUppercase asks for at least one ASCII upper-case letter, A-Z.
	// Default: false.
	RequireUppercase bool `yaml:"require_uppercase"`
}

// Presence configures presence (spec: "Presence").
type Presence struct {
	// Enabled turns presence on: users see whether the people they share
	// rooms with are online, idle or offline, and their status messages.
	// Off, every user reads as offline, setting presence is accepted and
	// ignored, and /sync carries no presence, as in Synapse.
	// Default: true.
	Enabled bool `yaml:"enabled"`

	// Federate sends local users' presence to the servers that share a
	// room with them (m.presence EDUs). Fan-out over federation is
	// costly (one EDU per change to every such server), so presence
	// stays local unless this is on; remote servers' presence is taken
	// whenever Enabled is on.
	// Default: false.
	Federate bool `yaml:"federate"`
}

// ServerNotices configures server notices, with Synapse's keys. They are
// on when SystemMXIDLocalpart is set.
type ServerNotices struct {
	// SystemMXIDLocalpart is the localpart of the user who sends notices
	// and owns every notices room; the server creates the user on first
	// use. Empty turns server notices off.
	// Default: "" (off).
	SystemMXIDLocalpart string `yaml:"system_mxid_localpart"`

	// SystemMXIDDisplayName is the display name of that user.
	// Default: "" (none).
	SystemMXIDDisplayName string `yaml:"system_mxid_display_name"`

	// SystemMXIDAvatarURL is the avatar (an mxc:// URI) of that user.
	// Default: "" (none).
	SystemMXIDAvatarURL string `yaml:"system_mxid_avatar_url"`

	// RoomName is the name of each notices room.
	// Default: "Server Notices".
	RoomName string `yaml:"room_name"`

	// RoomAvatarURL is the avatar (an mxc:// URI) of each notices room.
	// Default: "" (none).
	RoomAvatarURL string `yaml:"room_avatar_url"`

	// RoomTopic is the topic of each notices room.
	// Default: "" (none).
	RoomTopic string `yaml:"room_topic"`

	// AutoJoin joins the user to their notices room instead of inviting
	// them.
	// Default: false.
	AutoJoin bool `yaml:"auto_join"`
}

// Enabled reports whether server notices are on.
func (n ServerNotices) Enabled() bool { return n.SystemMXIDLocalpart != "" }

// DefaultIPRangeBlacklist returns the default of both
// URLPreviewIPRangeBlacklist and IPRangeBlacklist: Synapse's recommended
// list, plus the "this network", reserved, NAT64, discard and 6to4 ranges.
func DefaultIPRangeBlacklist() []string {
	return []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "2002::/16",
		"fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
	}
}

// URLPreviewIPRanges returns URLPreviewIPRangeBlacklist and
// URLPreviewIPRangeWhitelist as prefixes; Validate has checked them, and
// entries that do not parse are left out.
func (c *Config) URLPreviewIPRanges() (deny, allow []netip.Prefix) {
	return ipRanges(c.URLPreviewIPRangeBlacklist), ipRanges(c.URLPreviewIPRangeWhitelist)
}

// IPRanges returns IPRangeBlacklist and IPRangeWhitelist as prefixes, as
// URLPreviewIPRanges does.
func (c *Config) IPRanges() (deny, allow []netip.Prefix) {
	return ipRanges(c.IPRangeBlacklist), ipRanges(c.IPRangeWhitelist)
}

func ipRanges(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := parseIPRange(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parseIPRange parses a CIDR range or a single IP address (a range of
// one), as Synapse's IP range settings accept.
func parseIPRange(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("an IP range cannot name a zone (%%%s)", a.Zone())
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ThumbnailSize is one entry of ThumbnailSizes.
type ThumbnailSize struct {
	// Width is the thumbnail's width in pixels, at least 1.
	// Default: none; every entry gives it.
	Width int `yaml:"width"`

	// Height is the thumbnail's height in pixels, at least 1.
	// Default: none; every entry gives it.
	Height int `yaml:"height"`

	// Method is "crop" (fill the box, cutting off what sticks out; for
	// avatars) or "scale" (fit inside the box, keeping the aspect ratio).
	// Default: none; every entry gives it.
	Method string `yaml:"method"`
}

// DefaultThumbnailSizes returns the default of ThumbnailSizes, Synapse's.
func DefaultThumbnailSizes() []ThumbnailSize {
	return []ThumbnailSize{
		{Width: 32, Height: 32, Method: "crop"},
		{Width: 96, Height: 96, Method: "crop"},
		{Width: 320, Height: 240, Method: "scale"},
		{Width: 640, Height: 480, Method: "scale"},
		{Width: 800, Height: 600, Method: "scale"},
	}
}

// LoginRateLimit limits logins as Synapse's rc_login does. Its own
// per_second and burst_count are Synapse's rc_login.address: attempts
// counted per client IP address. Account counts the logins into one
// account and FailedAttempts the failed logins (and failed passwords in
// user-interactive auth) for one account, whatever the address: an
// account over either limit is refused with M_LIMIT_EXCEEDED before its
// password is checked, so many addresses cannot make the server check
// one account's password more often than FailedAttempts allows.
type LoginRateLimit struct {
	// PerSecond is the steady rate of attempts per client address.
	// Default: 1.
	PerSecond float64 `yaml:"per_second"`

	// BurstCount is how many attempts one address may make at once.
	// Default: 10.
	BurstCount int `yaml:"burst_count"`

	// Account limits logins into one account (rc_login.account).
	// Default: 0.003 per second, burst 5 (Synapse's).
	Account RateLimit `yaml:"account"`

	// FailedAttempts limits failed logins into one account
	// (rc_login.failed_attempts).
	// Default: 0.17 per second, burst 3 (Synapse's).
	FailedAttempts RateLimit `yaml:"failed_attempts"`
}

// Address is the per-address limit (rc_login.address).
func (l LoginRateLimit) Address() RateLimit {
	return RateLimit{PerSecond: l.PerSecond, BurstCount: l.BurstCount}
}

// RateLimit is one token bucket, in Synapse's terms.
type RateLimit struct {
	// PerSecond is the steady rate at which the bucket refills; finite and
	// greater than 0.
	// Default: depends on the limit, see RateLimiting.
	PerSecond float64 `yaml:"per_second"`

	// BurstCount is the bucket's size: how many actions may be taken at
	// once after a quiet spell. At least 1.
	// Default: depends on the limit, see RateLimiting.
	BurstCount int `yaml:"burst_count"`
}

// Default returns the default configuration, which is also what the
// sample homeserver.yaml decodes to. It is valid as it is.
func Default() Config {
	return Config{
		ServerName:                            "localhost:8008",
		PublicBaseURL:                         "",
		Listen:                                "127.0.0.1:8008",
		FederationListen:                      "",
		FederationVerifyCertificates:          true,
		FederationDomainWhitelist:             []string{},
		DataDir:                               "./data",
		Database:                              Database{Name: EngineSQLite, Args: DatabaseArgs{CPMin: 5, CPMax: 10}, WorkerLeaseDuration: Duration(DefaultWorkerLeaseDuration)},
		SigningKeyFile:                        "",
		OldSigningKeys:                        map[string]OldSigningKey{},
		TrustedKeyServers:                     []TrustedKeyServer{},
		Caches:                                Caches{Rooms: 2000},
		EnableRegistration:                    false,
		RegistrationRequiresToken:             false,
		RegistrationTokens:                    []Secret{},
		RegistrationSharedSecret:              Secret{},
		BcryptRounds:                          12,
		PasswordConfig:                        PasswordConfig{Policy: PasswordPolicy{Enabled: true, MinimumLength: 8}},
		DefaultRoomVersion:                    "11",
		EncryptionEnabledByDefaultForRoomType: "off",
		BackchatDefault:                       50,
		BackchatMax:                           1000,
		MaxRequestSize:                        1 * MiB,
		MaxUploadSize:                         50 * MiB,
		EnableAuthenticatedMedia:              true,
		RefreshableAccessTokenLifetime:        0,
		URLPreviewEnabled:                     false,
		URLPreviewIPRangeBlacklist:            DefaultIPRangeBlacklist(),
		URLPreviewIPRangeWhitelist:            []string{},
		ThumbnailSizes:                        DefaultThumbnailSizes(),
		MaxThumbnailMemory:                    256 * MiB,
		RequestBodyTimeout:                    Duration(30 * time.Second),
		MinUploadRate:                         1 * KiB,
		IPRangeBlacklist:                      DefaultIPRangeBlacklist(),
		IPRangeWhitelist:                      []string{},
		MaxSpiderSize:                         10 * MiB,
		Presence:                              Presence{Enabled: true},
		ServerNotices:                         ServerNotices{RoomName: "Server Notices"},
		Retention:                             DefaultRetention(),
		RateLimiting: RateLimiting{
			Enabled: true,
			Message: RateLimit{PerSecond: 10, BurstCount: 50},
			Login: LoginRateLimit{PerSecond: 1, BurstCount: 10,
				Account:        RateLimit{PerSecond: 0.003, BurstCount: 5},
				FailedAttempts: RateLimit{PerSecond: 0.17, BurstCount: 3}},
			Registration: RateLimit{PerSecond: 1, BurstCount: 10},
		},
		AppServiceConfigFiles: []string{},
		LogLevel:              "info",
		LogFormat:             "text",
		Metrics:               Metrics{Enabled: false, Listen: "127.0.0.1:9000"},
		Compliance:            Compliance{Enabled: false, CheckpointInterval: Duration(time.Minute), CheckpointRecords: 1000},
	}
}

// DatabasePath returns the SQLite database file: Database.Args.Database
// or Database.Path (Validate refuses two different ones), or
// <DataDir>/homeserver.db when neither is set. Only meaningful for the
// sqlite3 engine.
func (c *Config) DatabasePath() string {
	switch {
	case c.Database.Args.Database != "":
		return c.Database.Args.Database
	case c.Database.Path != "":
		return c.Database.Path
	}
	return filepath.Join(c.DataDir, "homeserver.db")
}

// SigningKeyPath returns the signing key file: SigningKeyFile, or
// <DataDir>/signing.key when that is empty.
func (c *Config) SigningKeyPath() string {
	if c.SigningKeyFile != "" {
		return c.SigningKeyFile
	}
	return filepath.Join(c.DataDir, "signing.key")
}

// MediaDir returns the directory for uploaded media, <DataDir>/media.
func (c *Config) MediaDir() string {
	return filepath.Join(c.DataDir, "media")
}

// BaseURL returns the client-server API's public URL, always ending in
// "/": PublicBaseURL, or "http://<Listen>/" when that is empty. An
// unspecified listen host (empty, 0.0.0.0 or ::) becomes "localhost",
// since clients cannot connect to it.
func (c *Config) BaseURL() string {
	if c.PublicBaseURL != "" {
		if strings.HasSuffix(c.PublicBaseURL, "/") {
			return c.PublicBaseURL
		}
		return c.PublicBaseURL + "/"
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		// Only an invalid config gets here; Validate reports it.
		return "http://" + c.Listen + "/"
	}
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// SlogLevel returns LogLevel as a slog.Level; an unknown level (which
// Validate rejects) gives slog.LevelInfo.
func (c *Config) SlogLevel() slog.Level {
	l, _ := parseLogLevel(c.LogLevel)
	return l
}

func parseLogLevel(s string) (slog.Level, bool) {
	switch s {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return slog.LevelInfo, false
}

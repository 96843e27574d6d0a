package postgres

// migrations are the PostgreSQL schema, numbered and forward-only
// (migrate runs them). Migration 1 is the whole of SQLite's schema as it
// stands after its migration 21 (storage/sqlite/schema.go and the tables
// defined beside their code, pushers and the search index): a PostgreSQL
// database always starts empty, so SQLite's steps that reshaped or
// back-filled data (notifications into exceptions and spans, relations
// and search from stored events) have nothing to do here and are not
// repeated. Every later change to the schema is a new migration in both
// lists; TestSchemaMatchesSQLite fails while a table, column or index of
// SQLite's is missing here.
//
// Translation rules:
//   - TEXT is TEXT COLLATE "C": SQLite compares text byte by byte, and so
//     must every ORDER BY, comparison and unique key written once for
//     both engines; "C" also makes the B-trees serve prefix ranges and
//     is the cheapest collation.
//   - INTEGER is BIGINT (positions, IDs, timestamps, counts), but 0/1
//     flags stay INTEGER, never BOOLEAN: the shared SQL writes and tests
//     them as integers (published = 1, SUM(highlight)).
//   - BLOB is BYTEA. The event JSON stays bytes, as in SQLite: the shared
//     layer hands it over and reads it back as []byte, byte for byte
//     (hashes and signatures cover it), and the few queries that look
//     inside it go through Dialect.JSONText.
//   - No rowids: IDs that the shared layer allocates (stream positions,
//     room NIDs, snapshot and report IDs) are plain keys; pushers.pusher_id,
//     which the database assigns and never reuses (SQLite's AUTOINCREMENT),
//     is an identity column.
//   - WITHOUT ROWID has no equivalent and no need of one: every table is
//     a heap with its primary key's index.
//   - The search index, an FTS4 table in SQLite, is a table with a
//     tsvector column under a GIN index (search.go).
var migrations = []string{
	`
CREATE TABLE users (
	user_id       TEXT COLLATE "C" PRIMARY KEY,
	password_hash TEXT COLLATE "C" NOT NULL DEFAULT '',
	is_admin      INTEGER NOT NULL DEFAULT 0,
	deactivated   INTEGER NOT NULL DEFAULT 0,
	displayname   TEXT COLLATE "C",
	avatar_url    TEXT COLLATE "C",
	created_ts    BIGINT NOT NULL,
	erased        INTEGER NOT NULL DEFAULT 0,
	locked        INTEGER NOT NULL DEFAULT 0,
	suspended     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE devices (
	user_id       TEXT COLLATE "C" NOT NULL,
	device_id     TEXT COLLATE "C" NOT NULL,
	display_name  TEXT COLLATE "C",
	last_seen_ts  BIGINT,
	last_seen_ip  TEXT COLLATE "C",
	PRIMARY KEY (user_id, device_id)
);
-- Tokens are stored as SHA-256 hashes (see storage/sqlite/schema.go).
CREATE TABLE access_tokens (
	token_hash    BYTEA PRIMARY KEY,
	user_id       TEXT COLLATE "C" NOT NULL,
	device_id     TEXT COLLATE "C" NOT NULL,
	expires_ts    BIGINT NOT NULL DEFAULT 0,
	refresh_hash  BYTEA
);
CREATE INDEX access_tokens_device ON access_tokens(user_id, device_id);
CREATE TABLE refresh_tokens (
	token_hash    BYTEA PRIMARY KEY,
	user_id       TEXT COLLATE "C" NOT NULL,
	device_id     TEXT COLLATE "C" NOT NULL
);
CREATE INDEX refresh_tokens_device ON refresh_tokens(user_id, device_id);
CREATE TABLE account_data (
	user_id    TEXT COLLATE "C" NOT NULL,
	room_id    TEXT COLLATE "C" NOT NULL, -- '' for global account data
	type       TEXT COLLATE "C" NOT NULL,
	content    TEXT COLLATE "C" NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_pos ON account_data(user_id, stream_pos);
CREATE INDEX account_data_type_pos ON account_data(type, stream_pos);
CREATE TABLE filters (
	user_id   TEXT COLLATE "C" NOT NULL,
	filter_id BIGINT NOT NULL,
	filter    TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE rooms (
	room_nid     BIGINT PRIMARY KEY,
	room_id      TEXT COLLATE "C" NOT NULL UNIQUE,
	version      TEXT COLLATE "C" NOT NULL,
	last_pos     BIGINT NOT NULL DEFAULT 0,
	cur_snapshot BIGINT NOT NULL DEFAULT 0,
	chain_len    BIGINT NOT NULL DEFAULT 0,
	max_depth    BIGINT NOT NULL DEFAULT 0,
	published    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX rooms_published ON rooms(room_id) WHERE published = 1;
CREATE TABLE events (
	stream_pos     BIGINT PRIMARY KEY,
	event_id       TEXT COLLATE "C" NOT NULL UNIQUE,
	room_nid       BIGINT NOT NULL,
	type           TEXT COLLATE "C" NOT NULL,
	state_key      TEXT COLLATE "C",
	sender         TEXT COLLATE "C" NOT NULL,
	depth          BIGINT NOT NULL,
	origin_ts      BIGINT NOT NULL,
	json           BYTEA NOT NULL,
	state_before   BIGINT NOT NULL,
	state_after    BIGINT NOT NULL,
	unsigned       TEXT COLLATE "C",
	redacted       INTEGER NOT NULL DEFAULT 0,
	txn_device     TEXT COLLATE "C",
	txn_scope      TEXT COLLATE "C",
	txn_id         TEXT COLLATE "C"
);
CREATE INDEX events_room_topo ON events(room_nid, depth, stream_pos);
CREATE INDEX events_room_pos ON events(room_nid, stream_pos);
CREATE UNIQUE INDEX events_txn ON events(sender, txn_device, txn_scope, txn_id) WHERE txn_id IS NOT NULL;
CREATE INDEX events_membership ON events(state_key, stream_pos) WHERE type = 'm.room.member';
CREATE INDEX events_room_ts ON events(room_nid, origin_ts, depth, stream_pos);
CREATE INDEX events_room_membership ON events(room_nid, state_key, stream_pos) WHERE type = 'm.room.member';

CREATE TABLE state_snapshots (
	snapshot_id BIGINT PRIMARY KEY,
	room_nid    BIGINT NOT NULL,
	parent_id   BIGINT,
	chain_len   BIGINT NOT NULL
);
CREATE TABLE state_snapshot_entries (
	snapshot_id BIGINT NOT NULL,
	type        TEXT COLLATE "C" NOT NULL,
	state_key   TEXT COLLATE "C" NOT NULL,
	event_id    TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (snapshot_id, type, state_key)
);
CREATE TABLE current_state (
	room_nid    BIGINT NOT NULL,
	type        TEXT COLLATE "C" NOT NULL,
	state_key   TEXT COLLATE "C" NOT NULL,
	event_id    TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (room_nid, type, state_key)
);
CREATE INDEX current_state_type ON current_state(type, state_key);
CREATE TABLE forward_extremities (
	room_nid BIGINT NOT NULL,
	event_id TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (room_nid, event_id)
);
CREATE TABLE memberships (
	room_nid   BIGINT NOT NULL,
	user_id    TEXT COLLATE "C" NOT NULL,
	membership TEXT COLLATE "C" NOT NULL,
	event_pos  BIGINT NOT NULL,
	forgotten  INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id, membership);
CREATE TABLE invite_state (
	event_pos BIGINT PRIMARY KEY,
	stripped  TEXT COLLATE "C" NOT NULL
);
CREATE TABLE room_aliases (
	alias      TEXT COLLATE "C" PRIMARY KEY,
	room_id    TEXT COLLATE "C" NOT NULL,
	creator    TEXT COLLATE "C" NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases(room_id);

CREATE TABLE receipts (
	room_id      TEXT COLLATE "C" NOT NULL,
	receipt_type TEXT COLLATE "C" NOT NULL,
	user_id      TEXT COLLATE "C" NOT NULL,
	thread_id    TEXT COLLATE "C" NOT NULL,
	event_id     TEXT COLLATE "C" NOT NULL,
	event_pos    BIGINT NOT NULL,
	ts           BIGINT NOT NULL,
	stream_pos   BIGINT NOT NULL,
	PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_pos ON receipts(stream_pos);
CREATE INDEX receipts_room_pos ON receipts(room_id, stream_pos);

CREATE TABLE push_rules (
	user_id TEXT COLLATE "C" PRIMARY KEY,
	rules   TEXT COLLATE "C" NOT NULL
);

CREATE TABLE notify_position (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	event_pos BIGINT NOT NULL
);
INSERT INTO notify_position (id, event_pos) VALUES (1, 0);
CREATE TABLE event_notifications (
	room_id                TEXT COLLATE "C" NOT NULL,
	event_pos              BIGINT NOT NULL,
	actions                TEXT COLLATE "C" NOT NULL,
	highlight              INTEGER NOT NULL,
	ts                     BIGINT NOT NULL,
	notify_total           BIGINT NOT NULL,
	highlight_total        BIGINT NOT NULL,
	thread_id              TEXT COLLATE "C" NOT NULL DEFAULT '',
	thread_notify_total    BIGINT NOT NULL DEFAULT 0,
	thread_highlight_total BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (room_id, event_pos)
);
CREATE INDEX event_notifications_thread ON event_notifications(room_id, thread_id, event_pos);
CREATE TABLE notification_exceptions (
	user_id         TEXT COLLATE "C" NOT NULL,
	event_pos       BIGINT NOT NULL,
	room_id         TEXT COLLATE "C" NOT NULL,
	actions         TEXT COLLATE "C", -- NULL: the user is not notified
	highlight       INTEGER NOT NULL,
	ts              BIGINT NOT NULL,
	notify_delta    BIGINT NOT NULL,
	highlight_delta BIGINT NOT NULL,
	thread_id       TEXT COLLATE "C" NOT NULL DEFAULT '',
	PRIMARY KEY (user_id, event_pos)
);
CREATE INDEX notification_exceptions_room ON notification_exceptions(user_id, room_id, event_pos);
CREATE TABLE notify_spans (
	user_id    TEXT COLLATE "C" NOT NULL,
	room_id    TEXT COLLATE "C" NOT NULL,
	joined_pos BIGINT NOT NULL,
	left_pos   BIGINT, -- NULL while joined
	PRIMARY KEY (user_id, room_id, joined_pos)
);
CREATE TABLE notify_threads (
	room_id   TEXT COLLATE "C" NOT NULL,
	thread_id TEXT COLLATE "C" NOT NULL,
	last_pos  BIGINT NOT NULL,
	PRIMARY KEY (room_id, thread_id)
);
CREATE INDEX notify_threads_pos ON notify_threads(room_id, last_pos);

CREATE TABLE media (
	media_id      TEXT COLLATE "C" PRIMARY KEY,
	uploader      TEXT COLLATE "C" NOT NULL,
	sha256        TEXT COLLATE "C" NOT NULL DEFAULT '',
	content_type  TEXT COLLATE "C" NOT NULL DEFAULT '',
	file_name     TEXT COLLATE "C" NOT NULL DEFAULT '',
	size          BIGINT NOT NULL DEFAULT 0,
	created_ts    BIGINT NOT NULL,
	expires_ts    BIGINT NOT NULL DEFAULT 0,
	authenticated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX media_pending ON media(uploader, expires_ts) WHERE sha256 = '';
CREATE INDEX media_sha256 ON media(sha256);

CREATE TABLE event_relations (
	event_pos  BIGINT PRIMARY KEY,
	event_id   TEXT COLLATE "C" NOT NULL UNIQUE,
	room_nid   BIGINT NOT NULL,
	relates_to TEXT COLLATE "C" NOT NULL,
	rel_type   TEXT COLLATE "C" NOT NULL,
	type       TEXT COLLATE "C" NOT NULL,
	is_state   INTEGER NOT NULL,
	sender     TEXT COLLATE "C" NOT NULL,
	depth      BIGINT NOT NULL,
	origin_ts  BIGINT NOT NULL,
	key        TEXT COLLATE "C"
);
CREATE INDEX event_relations_parent ON event_relations(relates_to, depth, event_pos);
CREATE INDEX event_relations_parent_type ON event_relations(relates_to, rel_type, depth, event_pos);
CREATE TABLE threads (
	room_nid     BIGINT NOT NULL,
	root_id      TEXT COLLATE "C" NOT NULL,
	latest_id    TEXT COLLATE "C" NOT NULL,
	latest_depth BIGINT NOT NULL,
	latest_pos   BIGINT NOT NULL,
	PRIMARY KEY (room_nid, root_id)
);
CREATE INDEX threads_latest ON threads(room_nid, latest_depth, latest_pos);

CREATE TABLE appservice_streams (
	as_id     TEXT COLLATE "C" PRIMARY KEY,
	event_pos BIGINT NOT NULL,
	last_txn  BIGINT NOT NULL
);
CREATE TABLE appservice_txns (
	as_id  TEXT COLLATE "C" NOT NULL,
	txn_id BIGINT NOT NULL,
	body   BYTEA NOT NULL,
	up_to  BIGINT NOT NULL,
	PRIMARY KEY (as_id, txn_id)
);

CREATE TABLE presence (
	user_id        TEXT COLLATE "C" PRIMARY KEY,
	state          TEXT COLLATE "C" NOT NULL,
	status_msg     TEXT COLLATE "C" NOT NULL DEFAULT '',
	last_active_ts BIGINT NOT NULL DEFAULT 0,
	stream_pos     BIGINT NOT NULL
);
CREATE INDEX presence_pos ON presence(stream_pos);

CREATE TABLE reports (
	report_id   BIGINT PRIMARY KEY,
	kind        TEXT COLLATE "C" NOT NULL,
	reporter    TEXT COLLATE "C" NOT NULL,
	room_id     TEXT COLLATE "C" NOT NULL DEFAULT '',
	event_id    TEXT COLLATE "C" NOT NULL DEFAULT '',
	target_user TEXT COLLATE "C" NOT NULL DEFAULT '',
	reason      TEXT COLLATE "C" NOT NULL DEFAULT '',
	score       BIGINT,
	received_ts BIGINT NOT NULL
);
CREATE INDEX reports_kind ON reports(kind, report_id);

CREATE TABLE pushers (
	pusher_id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, -- never reused: loops know pushers by ID
	user_id             TEXT COLLATE "C" NOT NULL,
	device_id           TEXT COLLATE "C" NOT NULL,
	kind                TEXT COLLATE "C" NOT NULL,
	app_id              TEXT COLLATE "C" NOT NULL,
	pushkey             TEXT COLLATE "C" NOT NULL,
	app_display_name    TEXT COLLATE "C" NOT NULL,
	device_display_name TEXT COLLATE "C" NOT NULL,
	profile_tag         TEXT COLLATE "C" NOT NULL,
	lang                TEXT COLLATE "C" NOT NULL,
	data                TEXT COLLATE "C" NOT NULL,
	pushkey_ts          BIGINT NOT NULL,
	last_pos            BIGINT NOT NULL,
	failing_since       BIGINT NOT NULL DEFAULT 0,
	UNIQUE (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers(app_id, pushkey);
CREATE INDEX pushers_device ON pushers(user_id, device_id);

CREATE TABLE profile_fields (
	user_id TEXT COLLATE "C" NOT NULL,
	field   TEXT COLLATE "C" NOT NULL,
	value   TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (user_id, field)
);

` + searchSchema,
	// State snapshot IDs are allocated by the room write path, outside
	// the writer, and must be unique across every process sharing the
	// database: each process reserves blocks of snapshotIDBlock from this
	// sequence (Dialect.ReserveSnapshotIDs), starting above the stored
	// ones. PostgreSQL only: SQLite's one process keeps the counter in
	// memory. The writers reload their counters, among them the newest
	// account data position, at the start of every batch: an index makes
	// that MAX a B-tree lookup instead of a scan (in both schemas, where
	// AccountDataPos reads it too).
	`
CREATE SEQUENCE state_snapshot_ids INCREMENT BY 64 MINVALUE 1;
SELECT setval('state_snapshot_ids', (SELECT COALESCE(MAX(snapshot_id), 0) + 1 FROM state_snapshots), false);
CREATE INDEX account_data_stream ON account_data(stream_pos);
`,
	// Multi-process deployments: SQLite's migration of the same purpose
	// says what these hold.
	`
CREATE TABLE uia_sessions (
	session_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	endpoint   TEXT COLLATE "C" NOT NULL,
	completed  TEXT COLLATE "C" NOT NULL,
	user_id    TEXT COLLATE "C" NOT NULL,
	expires_ms BIGINT NOT NULL
);
CREATE INDEX uia_sessions_expiry ON uia_sessions(expires_ms);
CREATE TABLE rate_limits (
	bucket TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	tat_us BIGINT NOT NULL
);
CREATE INDEX rate_limits_tat ON rate_limits(tat_us);
`,
	// Worker leases: which process runs each background worker, and
	// until when, in milliseconds of this database's clock (lease.go).
	`
CREATE TABLE worker_leases (
	name       TEXT COLLATE "C" PRIMARY KEY,
	holder     TEXT COLLATE "C" NOT NULL,
	expires_at BIGINT NOT NULL
);
`,
	// Remote servers' signing keys: SQLite's migration of the same
	// purpose says what they hold.
	`
CREATE TABLE server_keys (
	server_name    TEXT COLLATE "C" NOT NULL,
	key_id         TEXT COLLATE "C" NOT NULL,
	public_key     BYTEA NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	expired_ts     BIGINT NOT NULL,
	fetched_ts     BIGINT NOT NULL,
	response       TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
`,
	// Typing across processes: SQLite's migration of the same purpose
	// says what it holds.
	`
CREATE TABLE typing (
	room_id    TEXT COLLATE "C" NOT NULL,
	user_id    TEXT COLLATE "C" NOT NULL,
	expires_ms BIGINT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
CREATE UNIQUE INDEX typing_stream ON typing(stream_pos);
`,
	// Space hierarchy pages: SQLite's migration of the same purpose says
	// what it holds.
	`
CREATE TABLE hierarchy_sessions (
	token      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	user_id    TEXT COLLATE "C" NOT NULL,
	walk       TEXT NOT NULL,
	expires_ms BIGINT NOT NULL
);
CREATE INDEX hierarchy_sessions_expiry ON hierarchy_sessions(expires_ms);
CREATE INDEX hierarchy_sessions_user ON hierarchy_sessions(user_id, expires_ms);
`,
	// To-device messages and dehydrated devices: SQLite's migration of
	// the same purpose says what they hold.
	`
CREATE TABLE to_device (
	user_id    TEXT COLLATE "C" NOT NULL,
	device_id  TEXT COLLATE "C" NOT NULL,
	stream_pos BIGINT NOT NULL,
	event      TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id, stream_pos)
);
CREATE TABLE to_device_position (
	id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	pos BIGINT NOT NULL
);
INSERT INTO to_device_position (id, pos) VALUES (1, 0);
CREATE TABLE to_device_txns (
	user_id    TEXT COLLATE "C" NOT NULL,
	device_id  TEXT COLLATE "C" NOT NULL,
	txn_id     TEXT COLLATE "C" NOT NULL,
	created_ms BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX to_device_txns_age ON to_device_txns(user_id, device_id, created_ms);
CREATE TABLE dehydrated_devices (
	user_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	device_id   TEXT COLLATE "C" NOT NULL,
	device_data TEXT NOT NULL
);
`,
	// End-to-end encryption keys (issue 12): as in SQLite's schema, which
	// says why.
	`
CREATE TABLE e2e_device_keys (
	user_id   TEXT COLLATE "C" NOT NULL,
	device_id TEXT COLLATE "C" NOT NULL,
	key_json  TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);
CREATE TABLE e2e_one_time_keys (
	user_id   TEXT COLLATE "C" NOT NULL,
	device_id TEXT COLLATE "C" NOT NULL,
	algorithm TEXT COLLATE "C" NOT NULL,
	key_id    TEXT COLLATE "C" NOT NULL,
	key_json  TEXT NOT NULL,
	seq       BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_order ON e2e_one_time_keys(user_id, device_id, algorithm, seq);
CREATE TABLE e2e_fallback_keys (
	user_id   TEXT COLLATE "C" NOT NULL,
	device_id TEXT COLLATE "C" NOT NULL,
	algorithm TEXT COLLATE "C" NOT NULL,
	key_id    TEXT COLLATE "C" NOT NULL,
	key_json  TEXT NOT NULL,
	used      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, device_id, algorithm)
);
CREATE TABLE device_lists (
	user_id    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	stream_pos BIGINT NOT NULL
);
CREATE UNIQUE INDEX device_lists_pos ON device_lists(stream_pos);
-- Membership changes since a sync token, room by room of the user's
-- (e2ee/devicelists.go), without reading every member of every room.
CREATE INDEX memberships_room_pos ON memberships(room_nid, event_pos);
`,
	// Legal holds: SQLite's migration of the same purpose says what they
	// hold.
	`
CREATE TABLE legal_holds (
	hold_id     BIGINT PRIMARY KEY,
	user_id     TEXT COLLATE "C" NOT NULL DEFAULT '',
	room_id     TEXT COLLATE "C" NOT NULL DEFAULT '',
	reason      TEXT NOT NULL DEFAULT '',
	created_by  TEXT COLLATE "C" NOT NULL,
	created_ts  BIGINT NOT NULL,
	released_by TEXT COLLATE "C" NOT NULL DEFAULT '',
	released_ts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX legal_holds_active ON legal_holds(released_ts, hold_id);
`,
	// The room DAG: SQLite's migration of the same purpose says what
	// these hold.
	`
ALTER TABLE events ADD COLUMN dag_state_after BIGINT;
CREATE TABLE event_edges (
	event_id      TEXT COLLATE "C" NOT NULL,
	prev_event_id TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges(prev_event_id);
CREATE TABLE event_auth_edges (
	event_id      TEXT COLLATE "C" NOT NULL,
	auth_event_id TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (event_id, auth_event_id)
);
CREATE TABLE dag_events (
	event_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	room_nid     BIGINT NOT NULL,
	kind         TEXT COLLATE "C" NOT NULL,
	reason       TEXT,
	depth        BIGINT NOT NULL,
	json         BYTEA NOT NULL,
	state_before BIGINT NOT NULL,
	state_after  BIGINT NOT NULL
);
`,
	// Cross-signing keys and key backup (issue 12): as in SQLite's
	// schema, which says why.
	`
CREATE TABLE e2e_cross_signing_keys (
	user_id  TEXT COLLATE "C" NOT NULL,
	usage    TEXT COLLATE "C" NOT NULL,
	key_id   TEXT COLLATE "C" NOT NULL,
	key_json TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (user_id, usage)
);
CREATE TABLE e2e_cross_signing_sigs (
	target_user   TEXT COLLATE "C" NOT NULL,
	target_key_id TEXT COLLATE "C" NOT NULL,
	signer_user   TEXT COLLATE "C" NOT NULL,
	signer_key_id TEXT COLLATE "C" NOT NULL,
	signature     TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (target_user, target_key_id, signer_user, signer_key_id)
);
CREATE INDEX e2e_cross_signing_sigs_signer ON e2e_cross_signing_sigs(signer_user, signer_key_id);
CREATE TABLE e2e_backup_versions (
	user_id   TEXT COLLATE "C" NOT NULL,
	version   BIGINT NOT NULL,
	algorithm TEXT COLLATE "C" NOT NULL,
	auth_data TEXT COLLATE "C" NOT NULL,
	etag      BIGINT NOT NULL DEFAULT 0,
	deleted   BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, version)
);
CREATE TABLE e2e_backup_sessions (
	user_id             TEXT COLLATE "C" NOT NULL,
	version             BIGINT NOT NULL,
	room_id             TEXT COLLATE "C" NOT NULL,
	session_id          TEXT COLLATE "C" NOT NULL,
	first_message_index BIGINT NOT NULL,
	forwarded_count     BIGINT NOT NULL,
	is_verified         BIGINT NOT NULL,
	session_data        TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id)
);
`,
	// Federation transactions: SQLite's migration of the same purpose
	// says what it holds.
	`
CREATE TABLE federation_inbound_txns (
	origin      TEXT COLLATE "C" NOT NULL,
	txn_id      TEXT COLLATE "C" NOT NULL,
	response    BYTEA NOT NULL,
	received_ms BIGINT NOT NULL,
	PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_age ON federation_inbound_txns(received_ms);
CREATE TABLE federation_sender (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	event_pos BIGINT NOT NULL
);
CREATE TABLE federation_destinations (
	destination   TEXT COLLATE "C" PRIMARY KEY,
	last_txn      BIGINT NOT NULL,
	failures      BIGINT NOT NULL,
	retry_at_ms   BIGINT NOT NULL,
	down_since_ms BIGINT NOT NULL
);
CREATE TABLE federation_queue (
	destination TEXT COLLATE "C" NOT NULL,
	seq         BIGINT NOT NULL,
	room_id     TEXT COLLATE "C" NOT NULL,
	event_id    TEXT COLLATE "C" NOT NULL,
	edu         BYTEA NOT NULL,
	txn_id      BIGINT NOT NULL,
	PRIMARY KEY (destination, seq)
);
`,
	// The compliance archive: SQLite's migration of the same purpose
	// says what it holds.
	`
CREATE TABLE compliance_records (
	seq         BIGINT NOT NULL PRIMARY KEY,
	ts          BIGINT NOT NULL,
	kind        TEXT COLLATE "C" NOT NULL,
	actor       TEXT COLLATE "C" NOT NULL,
	room        TEXT COLLATE "C" NOT NULL,
	payload     TEXT,
	record_hash TEXT COLLATE "C" NOT NULL,
	prev_hash   TEXT COLLATE "C" NOT NULL,
	hash        TEXT COLLATE "C" NOT NULL
);
CREATE INDEX compliance_records_ts ON compliance_records(ts);
CREATE TABLE compliance_checkpoints (
	seq       BIGINT NOT NULL PRIMARY KEY,
	head      TEXT COLLATE "C" NOT NULL,
	ts        BIGINT NOT NULL,
	key_id    TEXT COLLATE "C" NOT NULL,
	signature TEXT COLLATE "C" NOT NULL
);
CREATE TABLE compliance_position (
	id        BIGINT NOT NULL PRIMARY KEY,
	event_pos BIGINT NOT NULL
);
INSERT INTO compliance_position (id, event_pos) VALUES (1, 0);
CREATE TABLE compliance_queue (
	id      BIGSERIAL PRIMARY KEY,
	ts      BIGINT NOT NULL,
	kind    TEXT COLLATE "C" NOT NULL,
	actor   TEXT COLLATE "C" NOT NULL,
	room    TEXT COLLATE "C" NOT NULL,
	payload TEXT NOT NULL
);
CREATE TABLE compliance_unredacted (
	event_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	json     TEXT NOT NULL
);
`,
	// Device lists over federation (e2ee/devicelistfed.go,
	// federation/devicelists.go). device_lists.device_pos is a local
	// user's latest position at which a device changed: the stream_id of
	// the last m.device_list_update sent, which GET /user/devices reports
	// so that the next update's prev_id matches it. The outbox holds each
	// local change (device_id '' for the cross-signing keys) until the
	// sender has queued its EDUs. remote_* cache other servers' users'
	// devices and cross-signing keys, with the last stream_id applied
	// and the event stream position of the last resync (valid_from): the
	// cache holds while the user has shared a room with a local user
	// since then.
	`
ALTER TABLE device_lists ADD COLUMN device_pos BIGINT NOT NULL DEFAULT 0;
CREATE TABLE device_list_outbox (
	stream_pos BIGINT NOT NULL,
	user_id    TEXT COLLATE "C" NOT NULL,
	device_id  TEXT COLLATE "C" NOT NULL,
	deleted    INTEGER NOT NULL,
	prev_pos   BIGINT NOT NULL,
	PRIMARY KEY (stream_pos, device_id)
);
CREATE TABLE device_list_sender (
	id  BIGINT NOT NULL PRIMARY KEY,
	pos BIGINT NOT NULL
);
CREATE TABLE remote_device_lists (
	user_id    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	stream_id  BIGINT NOT NULL,
	valid_from BIGINT NOT NULL
);
CREATE TABLE remote_device_keys (
	user_id   TEXT COLLATE "C" NOT NULL,
	device_id TEXT COLLATE "C" NOT NULL,
	key_json  TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);
CREATE TABLE remote_cross_signing_keys (
	user_id  TEXT COLLATE "C" NOT NULL,
	usage    TEXT COLLATE "C" NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, usage)
);
`,
	// The compliance archiver's position among backfilled events, which
	// take negative stream positions, going down: it archives them as it
	// archives live ones (0: none yet).
	`
ALTER TABLE compliance_position ADD COLUMN backfill_pos BIGINT NOT NULL DEFAULT 0;
`,
	// Events received from other servers that are not in the timeline
	// (dag_events: outliers, such as a joined room's state from the join's
	// answer, and rejected and soft-failed events) have no stream position:
	// archived marks those the compliance archiver has appended, and the
	// partial index is its queue of the others, in room and depth order.
	`
ALTER TABLE dag_events ADD COLUMN archived BIGINT NOT NULL DEFAULT 0;
CREATE INDEX dag_events_unarchived ON dag_events(room_nid, depth, event_id) WHERE archived = 0;
`,
}

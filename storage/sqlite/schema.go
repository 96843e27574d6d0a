package sqlite

// migrations are numbered and forward-only: the database records how many
// have run (PRAGMA user_version) and runs the rest in order at start.
var migrations = []string{
	// 1: accounts, rooms, events and state.
	`
CREATE TABLE users (
	user_id       TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL DEFAULT '',
	is_admin      INTEGER NOT NULL DEFAULT 0,
	deactivated   INTEGER NOT NULL DEFAULT 0,
	displayname   TEXT,
	avatar_url    TEXT,
	created_ts    INTEGER NOT NULL
);
CREATE TABLE devices (
	user_id       TEXT NOT NULL,
	device_id     TEXT NOT NULL,
	display_name  TEXT,
	last_seen_ts  INTEGER,
	last_seen_ip  TEXT,
	PRIMARY KEY (user_id, device_id)
);
-- Tokens are stored as SHA-256 hashes: they are 256-bit random values, so a
-- fast hash is enough and a stolen database yields no usable token.
CREATE TABLE access_tokens (
	token_hash    BLOB PRIMARY KEY,
	user_id       TEXT NOT NULL,
	device_id     TEXT NOT NULL,
	expires_ts    INTEGER NOT NULL DEFAULT 0,
	refresh_hash  BLOB
);
CREATE INDEX access_tokens_device ON access_tokens(user_id, device_id);
CREATE TABLE refresh_tokens (
	token_hash    BLOB PRIMARY KEY,
	user_id       TEXT NOT NULL,
	device_id     TEXT NOT NULL
);
CREATE INDEX refresh_tokens_device ON refresh_tokens(user_id, device_id);
CREATE TABLE account_data (
	user_id    TEXT NOT NULL,
	room_id    TEXT NOT NULL, -- '' for global account data
	type       TEXT NOT NULL,
	content    TEXT NOT NULL,
	stream_pos INTEGER NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_pos ON account_data(user_id, stream_pos);
CREATE TABLE filters (
	user_id   TEXT NOT NULL,
	filter_id INTEGER NOT NULL,
	filter    TEXT NOT NULL,
	PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE rooms (
	room_nid     INTEGER PRIMARY KEY,
	room_id      TEXT NOT NULL UNIQUE,
	version      TEXT NOT NULL,
	last_pos     INTEGER NOT NULL DEFAULT 0, -- stream position of its newest event
	cur_snapshot INTEGER NOT NULL DEFAULT 0, -- state snapshot after its newest event
	chain_len    INTEGER NOT NULL DEFAULT 0, -- delta chain length of cur_snapshot
	max_depth    INTEGER NOT NULL DEFAULT 0,
	published    INTEGER NOT NULL DEFAULT 0
);
-- stream_pos is the event's position in the server-wide event stream,
-- assigned in commit order by the single writer.
CREATE TABLE events (
	stream_pos     INTEGER PRIMARY KEY,
	event_id       TEXT NOT NULL UNIQUE,
	room_nid       INTEGER NOT NULL,
	type           TEXT NOT NULL,
	state_key      TEXT,
	sender         TEXT NOT NULL,
	depth          INTEGER NOT NULL,
	origin_ts      INTEGER NOT NULL,
	json           BLOB NOT NULL,
	state_before   INTEGER NOT NULL, -- snapshot id of the room state before this event
	state_after    INTEGER NOT NULL, -- and after it (differs only for state events)
	unsigned       TEXT,             -- server-kept unsigned fields for clients
	redacted       INTEGER NOT NULL DEFAULT 0,
	txn_device     TEXT,
	txn_scope      TEXT, -- the endpoint and room a transaction ID belongs to
	txn_id         TEXT
);
CREATE INDEX events_room_topo ON events(room_nid, depth, stream_pos);
CREATE INDEX events_room_pos ON events(room_nid, stream_pos);
CREATE UNIQUE INDEX events_txn ON events(sender, txn_device, txn_scope, txn_id) WHERE txn_id IS NOT NULL;
CREATE INDEX events_membership ON events(state_key, stream_pos) WHERE type = 'm.room.member';

-- State snapshots: each is a delta on its parent; every so often a full copy
-- (parent NULL) bounds the chain a lookup walks.
CREATE TABLE state_snapshots (
	snapshot_id INTEGER PRIMARY KEY,
	room_nid    INTEGER NOT NULL,
	parent_id   INTEGER,
	chain_len   INTEGER NOT NULL
);
CREATE TABLE state_snapshot_entries (
	snapshot_id INTEGER NOT NULL,
	type        TEXT NOT NULL,
	state_key   TEXT NOT NULL,
	event_id    TEXT NOT NULL,
	PRIMARY KEY (snapshot_id, type, state_key)
) WITHOUT ROWID;
CREATE TABLE current_state (
	room_nid    INTEGER NOT NULL,
	type        TEXT NOT NULL,
	state_key   TEXT NOT NULL,
	event_id    TEXT NOT NULL,
	PRIMARY KEY (room_nid, type, state_key)
) WITHOUT ROWID;
CREATE TABLE forward_extremities (
	room_nid INTEGER NOT NULL,
	event_id TEXT NOT NULL,
	PRIMARY KEY (room_nid, event_id)
) WITHOUT ROWID;
-- Current membership of every user in every room, for /joined_rooms, /sync
-- and member lists.
CREATE TABLE memberships (
	room_nid   INTEGER NOT NULL,
	user_id    TEXT NOT NULL,
	membership TEXT NOT NULL,
	event_pos  INTEGER NOT NULL,
	forgotten  INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (room_nid, user_id)
) WITHOUT ROWID;
CREATE INDEX memberships_user ON memberships(user_id, membership);
-- Stripped state shown to invitees, kept with the invite event.
CREATE TABLE invite_state (
	event_pos INTEGER PRIMARY KEY,
	stripped  TEXT NOT NULL
);
CREATE TABLE room_aliases (
	alias      TEXT PRIMARY KEY,
	room_id    TEXT NOT NULL,
	creator    TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases(room_id);
`,
	// Receipts (m.read, m.read.private): the newest per room, type, user and
	// thread ('' for an unthreaded receipt). stream_pos is the receipt
	// stream position of the last change; event_pos orders the receipted
	// events, so receipts only move forward.
	`
CREATE TABLE receipts (
	room_id      TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	user_id      TEXT NOT NULL,
	thread_id    TEXT NOT NULL,
	event_id     TEXT NOT NULL,
	event_pos    INTEGER NOT NULL,
	ts           INTEGER NOT NULL,
	stream_pos   INTEGER NOT NULL,
	PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
) WITHOUT ROWID;
CREATE INDEX receipts_pos ON receipts(stream_pos);
CREATE INDEX receipts_room_pos ON receipts(room_id, stream_pos);
`,
	// Push rules a user changed (their own rules, their changes to the
	// server defaults) as one push.UserRules JSON document per user: rules
	// are few, always read and written whole, and merged with the server
	// defaults when read.
	`
CREATE TABLE push_rules (
	user_id TEXT PRIMARY KEY,
	rules   TEXT NOT NULL
) WITHOUT ROWID;
`,
	// Notifications: push rule results per user and event, written by the
	// notification worker (push.Worker) together with its position in the
	// event stream, in one transaction, so a restart resumes exactly where
	// it stopped. An existing database starts at its newest event: history
	// from before the upgrade raises no notifications.
	`
CREATE TABLE notifications (
	user_id   TEXT NOT NULL,
	event_pos INTEGER NOT NULL,
	room_id   TEXT NOT NULL,
	actions   TEXT NOT NULL,
	highlight INTEGER NOT NULL,
	ts        INTEGER NOT NULL,
	PRIMARY KEY (user_id, event_pos)
) WITHOUT ROWID;
CREATE INDEX notifications_room ON notifications(user_id, room_id, event_pos, highlight);
CREATE TABLE notify_position (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	event_pos INTEGER NOT NULL
);
INSERT INTO notify_position (id, event_pos) SELECT 1, COALESCE(MAX(stream_pos), 0) FROM events;
CREATE INDEX account_data_type_pos ON account_data(type, stream_pos);
`,
	// Directories: the public room list reads published rooms; the user
	// directory finds public rooms by their current m.room.join_rules
	// without scanning every room's member entries.
	`
CREATE INDEX rooms_published ON rooms(room_id) WHERE published = 1;
CREATE INDEX current_state_type ON current_state(type, state_key);
`,
	// Media metadata (media.Record). Content lives on disk under its
	// SHA-256, so several rows may share one file; sha256 is '' while a
	// media ID from /create awaits its upload, until expires_ts.
	`
CREATE TABLE media (
	media_id     TEXT PRIMARY KEY,
	uploader     TEXT NOT NULL,
	sha256       TEXT NOT NULL DEFAULT '',
	content_type TEXT NOT NULL DEFAULT '',
	file_name    TEXT NOT NULL DEFAULT '',
	size         INTEGER NOT NULL DEFAULT 0,
	created_ts   INTEGER NOT NULL,
	expires_ts   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX media_pending ON media(uploader, expires_ts) WHERE sha256 = '';
CREATE INDEX media_sha256 ON media(sha256);
`,
	// Compact notifications (storage.NotifyBatch): one row per notifying
	// event with its default outcome and running room totals, per-user
	// exception rows, and local users' join spans. Old per-user rows
	// become exceptions, so counts and lists carry over; current joins
	// become open spans.
	`
CREATE TABLE event_notifications (
	room_id         TEXT NOT NULL,
	event_pos       INTEGER NOT NULL,
	actions         TEXT NOT NULL,
	highlight       INTEGER NOT NULL,
	ts              INTEGER NOT NULL,
	notify_total    INTEGER NOT NULL,
	highlight_total INTEGER NOT NULL,
	PRIMARY KEY (room_id, event_pos)
) WITHOUT ROWID;
CREATE TABLE notification_exceptions (
	user_id         TEXT NOT NULL,
	event_pos       INTEGER NOT NULL,
	room_id         TEXT NOT NULL,
	actions         TEXT, -- NULL: the user is not notified
	highlight       INTEGER NOT NULL,
	ts              INTEGER NOT NULL,
	notify_delta    INTEGER NOT NULL,
	highlight_delta INTEGER NOT NULL,
	PRIMARY KEY (user_id, event_pos)
) WITHOUT ROWID;
CREATE INDEX notification_exceptions_room ON notification_exceptions(user_id, room_id, event_pos);
CREATE TABLE notify_spans (
	user_id    TEXT NOT NULL,
	room_id    TEXT NOT NULL,
	joined_pos INTEGER NOT NULL,
	left_pos   INTEGER, -- NULL while joined
	PRIMARY KEY (user_id, room_id, joined_pos)
) WITHOUT ROWID;
INSERT INTO notification_exceptions (user_id, event_pos, room_id, actions, highlight, ts, notify_delta, highlight_delta)
	SELECT user_id, event_pos, room_id, actions, highlight, ts, 1, highlight FROM notifications;
INSERT INTO notify_spans (user_id, room_id, joined_pos)
	SELECT m.user_id, r.room_id, m.event_pos FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.membership = 'join';
DROP TABLE notifications;
`,
	// Event relationships (content."m.relates_to" with a rel_type): one row
	// per child event, written in the transaction that stores the child and
	// deleted when the child is redacted (storage/sqlite/relations.go).
	// threads holds each thread root's latest event, which orders /threads.
	// Events stored before this migration are indexed here, by the rule of
	// roomdag's Event.Relation (a string rel_type, an event_id of 2 to 255
	// bytes starting with '$'); redacted events have no content left.
	`
CREATE TABLE event_relations (
	event_pos  INTEGER PRIMARY KEY, -- the child's stream position
	event_id   TEXT NOT NULL UNIQUE,
	room_nid   INTEGER NOT NULL,
	relates_to TEXT NOT NULL,       -- the parent's event ID
	rel_type   TEXT NOT NULL,
	type       TEXT NOT NULL,       -- the child's event type
	is_state   INTEGER NOT NULL,
	sender     TEXT NOT NULL,
	depth      INTEGER NOT NULL,
	origin_ts  INTEGER NOT NULL,
	key        TEXT                 -- an m.annotation's key
);
CREATE INDEX event_relations_parent ON event_relations(relates_to, depth, event_pos);
CREATE INDEX event_relations_parent_type ON event_relations(relates_to, rel_type, depth, event_pos);
CREATE TABLE threads (
	room_nid     INTEGER NOT NULL,
	root_id      TEXT NOT NULL,
	latest_id    TEXT NOT NULL,
	latest_depth INTEGER NOT NULL,
	latest_pos   INTEGER NOT NULL,
	PRIMARY KEY (room_nid, root_id)
) WITHOUT ROWID;
CREATE INDEX threads_latest ON threads(room_nid, latest_depth, latest_pos);
INSERT INTO event_relations (event_pos, event_id, room_nid, relates_to, rel_type, type, is_state, sender, depth, origin_ts, key)
	SELECT stream_pos, event_id, room_nid, json_extract(j, '$.content."m.relates_to".event_id'),
		json_extract(j, '$.content."m.relates_to".rel_type'), type, state_key IS NOT NULL, sender, depth, origin_ts,
		CASE WHEN json_extract(j, '$.content."m.relates_to".rel_type') = 'm.annotation'
			AND json_type(j, '$.content."m.relates_to".key') = 'text'
			AND json_extract(j, '$.content."m.relates_to".key') <> ''
			THEN json_extract(j, '$.content."m.relates_to".key') END
	FROM (SELECT stream_pos, event_id, room_nid, type, state_key, sender, depth, origin_ts, CAST(json AS TEXT) AS j
		FROM events WHERE redacted = 0)
	WHERE json_type(j, '$.content."m.relates_to".rel_type') = 'text'
		AND json_extract(j, '$.content."m.relates_to".rel_type') <> ''
		AND json_type(j, '$.content."m.relates_to".event_id') = 'text'
		AND length(CAST(json_extract(j, '$.content."m.relates_to".event_id') AS BLOB)) BETWEEN 2 AND 255
		AND substr(json_extract(j, '$.content."m.relates_to".event_id'), 1, 1) = '$';
INSERT INTO threads (room_nid, root_id, latest_id, latest_depth, latest_pos)
	SELECT room_nid, relates_to, event_id, depth, event_pos FROM (
		SELECT room_nid, relates_to, event_id, depth, event_pos,
			ROW_NUMBER() OVER (PARTITION BY room_nid, relates_to ORDER BY depth DESC, event_pos DESC) AS n
		FROM event_relations WHERE rel_type = 'm.thread')
	WHERE n = 1;
`,
	// Application service transaction queues (appservice.Sender): per
	// service, the event stream position up to which every event was
	// delivered or put in a pending transaction, and the last transaction
	// ID handed out. A pending transaction's body is kept until the service
	// acknowledges it, so a retry, even after a restart, sends the same
	// events under the same ID (spec: "Pushing events").
	`
CREATE TABLE appservice_streams (
	as_id     TEXT PRIMARY KEY,
	event_pos INTEGER NOT NULL,
	last_txn  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE appservice_txns (
	as_id  TEXT NOT NULL,
	txn_id INTEGER NOT NULL,
	body   BLOB NOT NULL,
	up_to  INTEGER NOT NULL,
	PRIMARY KEY (as_id, txn_id)
) WITHOUT ROWID;
`,
	// Presence (storage.Presence): one row per user, replaced at each
	// change; stream_pos is the presence stream position of the last one,
	// so /sync finds the changes after a token with the index.
	`
CREATE TABLE presence (
	user_id        TEXT PRIMARY KEY,
	state          TEXT NOT NULL,
	status_msg     TEXT NOT NULL DEFAULT '',
	last_active_ts INTEGER NOT NULL DEFAULT 0,
	stream_pos     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX presence_pos ON presence(stream_pos);
`,
	// Reports of events, rooms and users (storage.Report), kept for the
	// server's administrators (spec: "Reporting content").
	`
CREATE TABLE reports (
	report_id   INTEGER PRIMARY KEY,
	kind        TEXT NOT NULL,
	reporter    TEXT NOT NULL,
	room_id     TEXT NOT NULL DEFAULT '',
	event_id    TEXT NOT NULL DEFAULT '',
	target_user TEXT NOT NULL DEFAULT '',
	reason      TEXT NOT NULL DEFAULT '',
	score       INTEGER,
	received_ts INTEGER NOT NULL
);
CREATE INDEX reports_kind ON reports(kind, report_id);
`,
	// Full-text search over room events, filled from the events already
	// stored (storage/sqlite/search.go and storage/sqlstore/search.go document).
	searchMigration,
	// Pushers and their delivery positions (storage/sqlstore/pushers.go).
	pushersMigration,
	// Thread-aware notification counts: each notification's thread (the
	// root event, '' for the main timeline), running totals per thread
	// beside the room's, and each room's threads with notifications.
	// Rows from before were all counted in the main timeline.
	`
ALTER TABLE event_notifications ADD COLUMN thread_id TEXT NOT NULL DEFAULT '';
ALTER TABLE event_notifications ADD COLUMN thread_notify_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event_notifications ADD COLUMN thread_highlight_total INTEGER NOT NULL DEFAULT 0;
UPDATE event_notifications SET thread_notify_total = notify_total, thread_highlight_total = highlight_total;
CREATE INDEX event_notifications_thread ON event_notifications(room_id, thread_id, event_pos);
ALTER TABLE notification_exceptions ADD COLUMN thread_id TEXT NOT NULL DEFAULT '';
CREATE TABLE notify_threads (
	room_id   TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	last_pos  INTEGER NOT NULL,
	PRIMARY KEY (room_id, thread_id)
) WITHOUT ROWID;
CREATE INDEX notify_threads_pos ON notify_threads(room_id, last_pos);
`,
	// GET /timestamp_to_event (jump to date) finds the event nearest a
	// time in one room; without this index it would scan the room.
	`
CREATE INDEX events_room_ts ON events(room_nid, origin_ts, depth, stream_pos);
`,
	// Erasure (POST /account/deactivate with erase: true): Synapse's
	// erased_users, as a flag on the account. The request must be recorded
	// when it is made; users.deactivated already exists.
	`
ALTER TABLE users ADD COLUMN erased INTEGER NOT NULL DEFAULT 0;
`,
	// Authenticated media (config enable_authenticated_media, as in
	// Synapse): whether each media item was uploaded while it was on, so
	// the deprecated unauthenticated endpoints keep serving what was
	// uploaded before. Existing rows predate it: legacy media (0).
	// Account locking (spec v1.12) and suspension (v1.13) of users, set by
	// the administrators' API; both reversible, unlike deactivation.
	`
ALTER TABLE media ADD COLUMN authenticated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
`,
	// A user's membership events in one room, in stream order: every
	// event served to a client carries the requester's membership at it
	// (MSC4115, unsigned.membership), read from these in one lookup per
	// room (MembershipChanges). events_membership is by user across all
	// their rooms, which a user in many rooms would scan whole.
	`
CREATE INDEX events_room_membership ON events(room_nid, state_key, stream_pos) WHERE type = 'm.room.member';
`,
	// Extensible profiles (spec v1.16, MSC4133): a user's profile fields
	// other than displayname and avatar_url, which stay on users because
	// membership events and the user directory read them. Each value is
	// the field's JSON, as the client set it (compacted).
	`
CREATE TABLE profile_fields (
	user_id TEXT NOT NULL,
	field   TEXT NOT NULL,
	value   TEXT NOT NULL,
	PRIMARY KEY (user_id, field)
) WITHOUT ROWID;
`,
	// The newest account data position (AccountDataPos, and the
	// counters at start) is the last entry of this index rather than a
	// scan of the table; PostgreSQL's writers read it in every batch.
	`
CREATE INDEX account_data_stream ON account_data(stream_pos);
`,
	// Multi-process deployments (issue 10): what the client API kept in
	// one process's memory across requests, so that a client's next
	// request may reach another process. uia_sessions are user-interactive
	// auth sessions and shared-secret registration nonces
	// (storage/sqlstore/uia.go); completed is a JSON array of stage types.
	// rate_limits are token buckets as GCRA times
	// (storage/sqlstore/ratelimits.go), used on PostgreSQL.
	`
CREATE TABLE uia_sessions (
	session_id TEXT NOT NULL PRIMARY KEY,
	endpoint   TEXT NOT NULL,
	completed  TEXT NOT NULL,
	user_id    TEXT NOT NULL,
	expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX uia_sessions_expiry ON uia_sessions(expires_ms);
CREATE TABLE rate_limits (
	bucket TEXT NOT NULL PRIMARY KEY,
	tat_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX rate_limits_tat ON rate_limits(tat_us);
`,
	// Worker leases (issue 10): which of the processes sharing a database
	// runs each background worker (notifications, pushers, application
	// services), and until when, in milliseconds of the database's clock.
	// Only the PostgreSQL engine uses it (storage/postgres/lease.go); a
	// SQLite server is the only process on its database and holds every
	// lease for ever. The table is here so that both schemas stay one.
	`
CREATE TABLE worker_leases (
	name       TEXT NOT NULL PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// Remote servers' signing keys (federation/keyring.go): one row per
	// (server, key ID), with the validity the key response gave it and
	// that response, signed as received, which this server serves again
	// as a notary (key/v2/query). Federation requests and remote events
	// are verified against these; old keys stay so that events signed
	// before a key rotation keep verifying.
	`
CREATE TABLE server_keys (
	server_name    TEXT NOT NULL,
	key_id         TEXT NOT NULL,
	public_key     BLOB NOT NULL,
	valid_until_ts INTEGER NOT NULL,
	expired_ts     INTEGER NOT NULL,
	fetched_ts     INTEGER NOT NULL,
	response       TEXT NOT NULL,
	PRIMARY KEY (server_name, key_id)
) WITHOUT ROWID;
`,
	// Typing across processes (issue 10): where several processes share
	// the database (PostgreSQL), each typing change is a row here, one per
	// room and user (expires_ms 0: stopped), given the next position of
	// the typing stream by the writer, so that every process numbers
	// typing changes alike and a sync token's typing position means the
	// same on all of them; a process that missed announcements reads back
	// the rows above the position it knows. A SQLite server is the only
	// process on its database and keeps typing in memory only; the table
	// is here so that both schemas stay one.
	`
CREATE TABLE typing (
	room_id    TEXT NOT NULL,
	user_id    TEXT NOT NULL,
	expires_ms INTEGER NOT NULL,
	stream_pos INTEGER NOT NULL,
	PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX typing_stream ON typing(stream_pos);
`,
	// Space hierarchy pages (issue 10): the walk a /hierarchy page left
	// off, under the next_batch token it answered with, until expires_ms,
	// so that the next page may be asked of any process sharing the
	// database (api/hierarchy.go). walk is JSON; user_id is whose it is.
	`
CREATE TABLE hierarchy_sessions (
	token      TEXT NOT NULL PRIMARY KEY,
	user_id    TEXT NOT NULL,
	walk       TEXT NOT NULL,
	expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX hierarchy_sessions_expiry ON hierarchy_sessions(expires_ms);
CREATE INDEX hierarchy_sessions_user ON hierarchy_sessions(user_id, expires_ms);
`,
	// To-device messages (issue 12, e2ee/todevice.go): one row per
	// message and recipient device, kept until the device's client syncs
	// with a token past it (the spec's acknowledgement) or the device is
	// deleted. event is the JSON served in /sync ({"content", "sender",
	// "type"}), rendered once at send. Rows are deleted, so the stream's
	// position cannot be MAX(stream_pos): to_device_position keeps the last
	// position allocated (by the writer, under the batch lock).
	// to_device_txns makes PUT /sendToDevice idempotent per sender device
	// and transaction ID for a day (created_ms: each send of a device
	// deletes that device's older rows); its rows go with the device.
	// dehydrated_devices is MSC3814: a user's one dehydrated device (a
	// row of devices without an access token) and its opaque data.
	`
CREATE TABLE to_device (
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	stream_pos INTEGER NOT NULL,
	event      TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id, stream_pos)
) WITHOUT ROWID;
CREATE TABLE to_device_position (
	id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	pos INTEGER NOT NULL
);
INSERT INTO to_device_position (id, pos) VALUES (1, 0);
CREATE TABLE to_device_txns (
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	txn_id     TEXT NOT NULL,
	created_ms INTEGER NOT NULL,
	PRIMARY KEY (user_id, device_id, txn_id)
) WITHOUT ROWID;
CREATE INDEX to_device_txns_age ON to_device_txns(user_id, device_id, created_ms);
CREATE TABLE dehydrated_devices (
	user_id     TEXT NOT NULL PRIMARY KEY,
	device_id   TEXT NOT NULL,
	device_data TEXT NOT NULL
) WITHOUT ROWID;
`,
	// End-to-end encryption keys (issue 12, e2ee/keys.go). Device keys:
	// one signed JSON object per device, as uploaded. One-time keys: each
	// given once to a claimer and deleted by the claim; seq orders a
	// device's keys by upload, so the oldest is claimed first. Fallback
	// keys: one per device and algorithm, handed out when the one-time
	// keys run out and then marked used (kept until replaced). The
	// device-list stream: one row per user whose devices or keys changed,
	// at the stream position of the newest change (as presence), so the
	// table stays as small as the user table and a sync reads the users
	// changed since its token with one range scan.
	`
CREATE TABLE e2e_device_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;
CREATE TABLE e2e_one_time_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	seq       INTEGER NOT NULL,
	PRIMARY KEY (user_id, device_id, algorithm, key_id)
) WITHOUT ROWID;
CREATE INDEX e2e_one_time_keys_order ON e2e_one_time_keys(user_id, device_id, algorithm, seq);
CREATE TABLE e2e_fallback_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	used      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, device_id, algorithm)
) WITHOUT ROWID;
CREATE TABLE device_lists (
	user_id    TEXT NOT NULL PRIMARY KEY,
	stream_pos INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX device_lists_pos ON device_lists(stream_pos);
-- Membership changes since a sync token, room by room of the user's
-- (e2ee/devicelists.go), without reading every member of every room.
CREATE INDEX memberships_room_pos ON memberships(room_nid, event_pos);
`,
	// Retention and legal holds (package retention): a hold on a user's
	// events (user_id) or a room (room_id; the other ''), active while
	// released_ts is 0. Released holds stay, for the record of who held
	// what and when.
	`
CREATE TABLE legal_holds (
	hold_id     INTEGER PRIMARY KEY,
	user_id     TEXT NOT NULL DEFAULT '',
	room_id     TEXT NOT NULL DEFAULT '',
	reason      TEXT NOT NULL DEFAULT '',
	created_by  TEXT NOT NULL,
	created_ts  INTEGER NOT NULL,
	released_by TEXT NOT NULL DEFAULT '',
	released_ts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX legal_holds_active ON legal_holds(released_ts, hold_id);
`,
	// The room DAG (issue 11): events received from other servers
	// (roomdag.Rooms.Receive) need the graph, not only the line local
	// events form. event_edges holds each event's prev_events,
	// event_auth_edges its auth_events, both for every stored event
	// (timeline or not), keyed by the citing event, with an index the
	// other way to find an event's children (an event whose successor is
	// already stored never becomes a forward extremity). dag_events holds
	// the events that are not in the timeline: outliers (known without
	// their history: auth chains and state from a join), rejected events
	// (with the reason; never state, never a prev_event of ours) and
	// soft-failed ones (accepted by the DAG, with the state at them, but
	// never shown to clients). Timeline events stay in events, backfilled
	// ones under negative stream positions, which no stream reader asks
	// for: /sync never reports them as new, /messages finds them by depth.
	// A live event received while the room's DAG is forked keeps the
	// room's resolved current state in events.state_after, which is what
	// clients are shown after it, and the state after it in the DAG (what
	// its successors build on) in dag_state_after.
	`
ALTER TABLE events ADD COLUMN dag_state_after INTEGER;
CREATE TABLE event_edges (
	event_id      TEXT NOT NULL,
	prev_event_id TEXT NOT NULL,
	PRIMARY KEY (event_id, prev_event_id)
) WITHOUT ROWID;
CREATE INDEX event_edges_prev ON event_edges(prev_event_id);
CREATE TABLE event_auth_edges (
	event_id      TEXT NOT NULL,
	auth_event_id TEXT NOT NULL,
	PRIMARY KEY (event_id, auth_event_id)
) WITHOUT ROWID;
CREATE TABLE dag_events (
	event_id     TEXT NOT NULL PRIMARY KEY,
	room_nid     INTEGER NOT NULL,
	kind         TEXT NOT NULL, -- outlier, rejected or soft_failed
	reason       TEXT,          -- why a rejected event was rejected
	depth        INTEGER NOT NULL,
	json         BLOB NOT NULL,
	state_before INTEGER NOT NULL, -- 0 for outliers and rejected events
	state_after  INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// Cross-signing keys and key backup (issue 12, e2ee/crosssign.go and
	// e2ee/backup.go). A user's cross-signing keys: one row per usage
	// (master, self_signing, user_signing) as uploaded, key_id its public
	// key. Signatures uploaded through /keys/signatures/upload: one row
	// per signed key (a device ID or a cross-signing public key of
	// target_user) and signing key, merged into the keys /keys/query
	// returns. Backup versions: per user, numbered from 1 and never reused
	// (deleted marks one gone), etag bumped by every change of its
	// sessions. Backup sessions: one row per room and session of a
	// version, the replacement rules' three fields beside the opaque
	// session_data.
	`
CREATE TABLE e2e_cross_signing_keys (
	user_id  TEXT NOT NULL,
	usage    TEXT NOT NULL,
	key_id   TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, usage)
) WITHOUT ROWID;
CREATE TABLE e2e_cross_signing_sigs (
	target_user   TEXT NOT NULL,
	target_key_id TEXT NOT NULL,
	signer_user   TEXT NOT NULL,
	signer_key_id TEXT NOT NULL,
	signature     TEXT NOT NULL,
	PRIMARY KEY (target_user, target_key_id, signer_user, signer_key_id)
) WITHOUT ROWID;
CREATE INDEX e2e_cross_signing_sigs_signer ON e2e_cross_signing_sigs(signer_user, signer_key_id);
CREATE TABLE e2e_backup_versions (
	user_id   TEXT NOT NULL,
	version   INTEGER NOT NULL,
	algorithm TEXT NOT NULL,
	auth_data TEXT NOT NULL,
	etag      INTEGER NOT NULL DEFAULT 0,
	deleted   INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, version)
) WITHOUT ROWID;
CREATE TABLE e2e_backup_sessions (
	user_id             TEXT NOT NULL,
	version             INTEGER NOT NULL,
	room_id             TEXT NOT NULL,
	session_id          TEXT NOT NULL,
	first_message_index INTEGER NOT NULL,
	forwarded_count     INTEGER NOT NULL,
	is_verified         INTEGER NOT NULL,
	session_data        TEXT NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id)
) WITHOUT ROWID;
`,
	// Federation transactions (issue 11). federation_inbound_txns: the
	// response given to each (origin, txn_id) received, so that a
	// transaction the origin sends again is answered the same and
	// processed only once (server-server API, "Transactions": the
	// transaction ID is for idempotence); pruned by received_ms.
	// federation_sender: the event stream position up to which every
	// event was queued for its destinations (federation.Sender).
	// federation_destinations: per destination, the last transaction ID
	// handed out (IDs never repeat for a destination) and the back-off
	// state, persisted so a restart neither forgets a dead server nor
	// hammers it. federation_queue: what waits for a destination, in
	// order (seq); event_id names a PDU (its JSON is read from events
	// when sent), edu holds an EDU's JSON otherwise; txn_id is the
	// transaction an item was put in (0: none yet), so a retry resends
	// the same items under the same ID.
	`
CREATE TABLE federation_inbound_txns (
	origin      TEXT NOT NULL,
	txn_id      TEXT NOT NULL,
	response    BLOB NOT NULL,
	received_ms INTEGER NOT NULL,
	PRIMARY KEY (origin, txn_id)
) WITHOUT ROWID;
CREATE INDEX federation_inbound_txns_age ON federation_inbound_txns(received_ms);
CREATE TABLE federation_sender (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	event_pos INTEGER NOT NULL
);
CREATE TABLE federation_destinations (
	destination   TEXT PRIMARY KEY,
	last_txn      INTEGER NOT NULL,
	failures      INTEGER NOT NULL,
	retry_at_ms   INTEGER NOT NULL,
	down_since_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE federation_queue (
	destination TEXT NOT NULL,
	seq         INTEGER NOT NULL,
	room_id     TEXT NOT NULL,
	event_id    TEXT NOT NULL,
	edu         BLOB NOT NULL,
	txn_id      INTEGER NOT NULL,
	PRIMARY KEY (destination, seq)
) WITHOUT ROWID;
`,
	// The compliance archive (issue 13, package compliance): an
	// append-only hash chain of records (compliance_records), each
	// digest-linked to the one before (record_hash is sha256 of the
	// record's canonical JSON, hash sha256 of prev_hash and record_hash,
	// so that a purge may drop a record's content and keep its link);
	// signed checkpoints over the chain head; the archiver's position in
	// the event stream (one row); the queue of records that are not events
	// (media access, history reads, admin actions), written in the request
	// path and drained into the chain by the one archiver; and the
	// original JSON of events a redaction overwrote, copied in the
	// redaction's own transaction when compliance is on, so that an
	// archiver running after commit still reads what was removed. Nothing
	// but the archiver and the retention purge writes these tables.
	`
CREATE TABLE compliance_records (
	seq         INTEGER NOT NULL PRIMARY KEY,
	ts          INTEGER NOT NULL,
	kind        TEXT NOT NULL,
	actor       TEXT NOT NULL,
	room        TEXT NOT NULL,
	payload     TEXT,
	record_hash TEXT NOT NULL,
	prev_hash   TEXT NOT NULL,
	hash        TEXT NOT NULL
);
CREATE INDEX compliance_records_ts ON compliance_records(ts);
CREATE TABLE compliance_checkpoints (
	seq       INTEGER NOT NULL PRIMARY KEY,
	head      TEXT NOT NULL,
	ts        INTEGER NOT NULL,
	key_id    TEXT NOT NULL,
	signature TEXT NOT NULL
);
CREATE TABLE compliance_position (
	id        INTEGER NOT NULL PRIMARY KEY,
	event_pos INTEGER NOT NULL
);
INSERT INTO compliance_position (id, event_pos) VALUES (1, 0);
CREATE TABLE compliance_queue (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	ts      INTEGER NOT NULL,
	kind    TEXT NOT NULL,
	actor   TEXT NOT NULL,
	room    TEXT NOT NULL,
	payload TEXT NOT NULL
);
CREATE TABLE compliance_unredacted (
	event_id TEXT NOT NULL PRIMARY KEY,
	json     TEXT NOT NULL
) WITHOUT ROWID;
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
ALTER TABLE device_lists ADD COLUMN device_pos INTEGER NOT NULL DEFAULT 0;
CREATE TABLE device_list_outbox (
	stream_pos INTEGER NOT NULL,
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	deleted    INTEGER NOT NULL,
	prev_pos   INTEGER NOT NULL,
	PRIMARY KEY (stream_pos, device_id)
) WITHOUT ROWID;
CREATE TABLE device_list_sender (
	id  INTEGER NOT NULL PRIMARY KEY,
	pos INTEGER NOT NULL
);
CREATE TABLE remote_device_lists (
	user_id    TEXT NOT NULL PRIMARY KEY,
	stream_id  INTEGER NOT NULL,
	valid_from INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE remote_device_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;
CREATE TABLE remote_cross_signing_keys (
	user_id  TEXT NOT NULL,
	usage    TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, usage)
) WITHOUT ROWID;
`,
	// The compliance archiver's position among backfilled events, which
	// take negative stream positions, going down: it archives them as it
	// archives live ones (0: none yet).
	`
ALTER TABLE compliance_position ADD COLUMN backfill_pos INTEGER NOT NULL DEFAULT 0;
`,
	// Events received from other servers that are not in the timeline
	// (dag_events: outliers, such as a joined room's state from the join's
	// answer, and rejected and soft-failed events) have no stream position:
	// archived marks those the compliance archiver has appended, and the
	// partial index is its queue of the others, in room and depth order.
	`
ALTER TABLE dag_events ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
CREATE INDEX dag_events_unarchived ON dag_events(room_nid, depth, event_id) WHERE archived = 0;
`,
}

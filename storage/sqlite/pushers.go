package sqlite

// pushersMigration creates the pushers table: one row per (user, app_id,
// pushkey). device_id ties a pusher to the device that set it, so that
// deleting the device deletes it; last_pos and failing_since are the
// delivery's progress, kept across restarts.
const pushersMigration = `
CREATE TABLE pushers (
	pusher_id           INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: loops know pushers by ID
	user_id             TEXT NOT NULL,
	device_id           TEXT NOT NULL,
	kind                TEXT NOT NULL,
	app_id              TEXT NOT NULL,
	pushkey             TEXT NOT NULL,
	app_display_name    TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag         TEXT NOT NULL,
	lang                TEXT NOT NULL,
	data                TEXT NOT NULL,
	pushkey_ts          INTEGER NOT NULL,
	last_pos            INTEGER NOT NULL,
	failing_since       INTEGER NOT NULL DEFAULT 0,
	UNIQUE (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers(app_id, pushkey);
CREATE INDEX pushers_device ON pushers(user_id, device_id);
`

// End-to-end test of the Application Service API: a bot written with the
// real matrix-bot-sdk (its Appservice class, no crypto) against a real
// homeserver process started by this test, with the bot's registration
// listed in the homeserver's config.
//
//   cd e2e && npm ci && HOMESERVER_BIN=/abs/path/bin/homeserver node --test --test-reporter=spec appservice.test.mjs
//
// A human (plain HTTP) invites the bot, which joins; "!echo <text>" makes a
// virtual user of the bot answer. Unknown users and aliases in the bot's
// namespaces are created through the bot-sdk's query handlers; typing
// reaches the bot as an ephemeral event; ping works both ways; regular
// users cannot take names in the bot's exclusive namespaces.
//
// matrix-bot-sdk 0.7.1 loads @matrix-org/matrix-sdk-crypto-nodejs, whose
// native library comes from a postinstall download; package.json replaces
// it with a stub (stubs/), as the test uses no encryption.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { Appservice, LogService, LogLevel, MemoryStorageProvider } from "matrix-bot-sdk";

import { Homeserver, Ring, freePort, withTimeout } from "./lib/harness.mjs";

const botLog = new Ring(2000);
LogService.setLevel(LogLevel.INFO);
LogService.setLogger({
    info: (m, ...a) => botLog.push(`info ${m} ${a.map(String).join(" ")}`),
    warn: (m, ...a) => botLog.push(`warn ${m} ${a.map(String).join(" ")}`),
    error: (m, ...a) => botLog.push(`error ${m} ${a.map((x) => x?.stack ?? String(x)).join(" ")}`),
    debug: () => {},
    trace: () => {},
});

const hs = new Homeserver(process.env.HOMESERVER_BIN);
let appservice;
let registration;
let alice; // {userId, token}
let roomId;
let failed = null;
const ephemeral = []; // ephemeral events the bot received
const waiters = new Set(); // re-checked whenever the bot sees something

function notify() {
    for (const w of waiters) w();
}

// Resolves once cond() is truthy, re-checking it whenever the bot receives
// something; no timer polls.
function whenBot(cond) {
    return new Promise((resolve) => {
        const check = () => {
            const v = cond();
            if (v) {
                waiters.delete(check);
                resolve(v);
            }
        };
        waiters.add(check);
        check();
    });
}

function step(name, fn, timeout = 30000) {
    test(name, { timeout: timeout + 5000 }, async (t) => {
        if (failed) {
            t.skip(`an earlier step failed: ${failed}`);
            return;
        }
        try {
            await withTimeout(Promise.resolve().then(() => fn(t)), timeout, name);
        } catch (e) {
            failed = name;
            process.stderr.write(`\n--- homeserver log ---\n${hs.log.text()}\n--- bot log ---\n${botLog.text()}\n`);
            throw e;
        }
    });
}

const uid = (localpart) => `@${localpart}:${hs.serverName}`;

// api calls the client-server API; it returns {status, body}.
async function api(method, p, { token, body } = {}) {
    const res = await fetch(`${hs.baseUrl}/_matrix/client${p}`, {
        method,
        headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body ? { "Content-Type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let json = {};
    try {
        json = JSON.parse(text);
    } catch {
        json = { raw: text };
    }
    return { status: res.status, body: json };
}

async function ok(method, p, opts) {
    const r = await api(method, p, opts);
    assert.equal(r.status, 200, `${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
}

// The user's /sync, long-polled until an event of the room matches.
const syncState = { since: null, seen: [] };
async function waitForEvent(room, what, pred) {
    for (;;) {
        const hit = syncState.seen.find((e) => e.room === room && pred(e.ev));
        if (hit) {
            syncState.seen = syncState.seen.filter((x) => x !== hit);
            return hit.ev;
        }
        const q = syncState.since ? `?timeout=10000&since=${encodeURIComponent(syncState.since)}` : "?timeout=0";
        const body = await ok("GET", `/v3/sync${q}`, { token: alice.token });
        syncState.since = body.next_batch;
        for (const [id, jr] of Object.entries(body.rooms?.join ?? {})) {
            for (const ev of jr.timeline?.events ?? []) syncState.seen.push({ room: id, ev });
        }
    }
}

before(async () => {
    const asPort = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "botsdk-"));
    registration = {
        id: "botsdk",
        url: `http://127.0.0.1:${asPort}`,
        as_token: crypto.randomBytes(32).toString("hex"),
        hs_token: crypto.randomBytes(32).toString("hex"),
        sender_localpart: "_botsdk",
        namespaces: {
            users: [{ exclusive: true, regex: "@_botsdk_.*" }],
            aliases: [{ exclusive: true, regex: "#_botsdk_.*" }],
            rooms: [],
        },
        rate_limited: false,
        receive_ephemeral: true,
    };
    const regPath = path.join(dir, "botsdk.yaml");
    fs.writeFileSync(regPath, JSON.stringify(registration, null, 2)); // JSON is YAML
    await hs.start({
        editConfig: (text) => {
            const out = text.replace(/^app_service_config_files: \[\]$/m, `app_service_config_files: [${JSON.stringify(regPath)}]`);
            assert.notEqual(out, text, "the generated config has no app_service_config_files line to fill in");
            return out;
        },
    });

    appservice = new Appservice({
        port: asPort,
        bindAddress: "127.0.0.1",
        homeserverName: hs.serverName,
        homeserverUrl: hs.baseUrl,
        registration,
        storage: new MemoryStorageProvider(),
    });
    // matrix-bot-sdk 0.7.1 predates the ping endpoint (spec v1.7): serve it.
    appservice.expressAppInstance.post("/_matrix/app/v1/ping", (req, res) => {
        if (req.headers.authorization !== `Bearer ${registration.hs_token}`) return res.status(403).json({ errcode: "M_FORBIDDEN" });
        res.json({});
    });
    appservice.on("room.invite", async (room, event) => {
        if (event.state_key === appservice.botUserId) await appservice.botIntent.joinRoom(room);
        notify();
    });
    appservice.on("room.message", async (room, event) => {
        const body = event.content?.body ?? "";
        if (!body.startsWith("!echo ") || appservice.isNamespacedUser(event.sender)) return;
        const ghost = appservice.getIntentForSuffix("echo");
        await ghost.ensureRegistered();
        await ghost.underlyingClient.setDisplayName("Echo");
        await appservice.botIntent.underlyingClient.inviteUser(ghost.userId, room);
        await ghost.joinRoom(room);
        await ghost.sendText(room, `echo: ${body.slice("!echo ".length)}`);
    });
    appservice.on("query.user", (userId, createUser) => {
        createUser(userId.startsWith("@_botsdk_known") ? { display_name: "Known ghost" } : false);
    });
    appservice.on("query.room", (alias, createRoom) => {
        createRoom(alias.startsWith("#_botsdk_lobby") ? { name: "Bot lobby", preset: "public_chat", visibility: "public" } : false);
    });
    appservice.on("ephemeral.event", (event) => {
        ephemeral.push(event);
        notify();
    });
    await appservice.begin();

    // The human: registered through the normal user-interactive flow.
    const first = await api("POST", "/v3/register", { body: { username: "alice", password: "correct horse battery staple" } });
    assert.equal(first.status, 401, JSON.stringify(first.body));
    const reg = await ok("POST", "/v3/register", {
        body: { username: "alice", password: "correct horse battery staple", auth: { type: "m.login.dummy", session: first.body.session } },
    });
    alice = { userId: reg.user_id, token: reg.access_token };
});

after(async () => {
    if (appservice) appservice.stop();
    const exit = await hs.stop();
    if (!failed) hs.removeDataDir();
    assert.deepEqual(exit, { code: 0, signal: null }, "the homeserver exits cleanly on SIGTERM");
});

step("the bot pings the homeserver, which pings the bot", async () => {
    const body = await ok("POST", `/v1/appservice/${registration.id}/ping`, {
        token: registration.as_token,
        body: { transaction_id: "e2e-ping" },
    });
    assert.equal(typeof body.duration_ms, "number");
    const bad = await api("POST", `/v1/appservice/${registration.id}/ping`, { token: alice.token, body: {} });
    assert.equal(bad.status, 403, "a user cannot ping the service");
});

step("the bot joins when invited, and its virtual user answers", async () => {
    const room = await ok("POST", "/v3/createRoom", { token: alice.token, body: { preset: "private_chat", name: "Bot test" } });
    roomId = room.room_id;
    await ok("POST", `/v3/rooms/${encodeURIComponent(roomId)}/invite`, { token: alice.token, body: { user_id: appservice.botUserId } });
    await waitForEvent(roomId, "the bot's join", (e) => e.type === "m.room.member" && e.state_key === appservice.botUserId && e.content.membership === "join");
    await ok("PUT", `/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/e2e-1`, {
        token: alice.token,
        body: { msgtype: "m.text", body: "!echo hello bridge" },
    });
    const reply = await waitForEvent(roomId, "the echo", (e) => e.type === "m.room.message" && e.content.body === "echo: hello bridge");
    assert.equal(reply.sender, uid("_botsdk_echo"));
    const prof = await ok("GET", `/v3/profile/${encodeURIComponent(uid("_botsdk_echo"))}`, { token: alice.token });
    assert.equal(prof.displayname, "Echo");
});

step("an unknown alias in the bot's namespace is created by the bot", async () => {
    const alias = `#_botsdk_lobby:${hs.serverName}`;
    const joined = await ok("POST", `/v3/join/${encodeURIComponent(alias)}`, { token: alice.token, body: {} });
    const name = await ok("GET", `/v3/rooms/${encodeURIComponent(joined.room_id)}/state/m.room.name/`, { token: alice.token });
    assert.equal(name.name, "Bot lobby");
    const missing = await api("GET", `/v3/directory/room/${encodeURIComponent(`#_botsdk_nothing:${hs.serverName}`)}`, { token: alice.token });
    assert.equal(missing.status, 404, "an alias the bot refuses stays unknown");
});

step("an unknown user in the bot's namespace is created by the bot", async () => {
    const ghost = uid("_botsdk_known1");
    await ok("POST", `/v3/rooms/${encodeURIComponent(roomId)}/invite`, { token: alice.token, body: { user_id: ghost } });
    const prof = await ok("GET", `/v3/profile/${encodeURIComponent(ghost)}`, { token: alice.token });
    assert.equal(prof.displayname, "Known ghost");
    const refused = await api("POST", `/v3/rooms/${encodeURIComponent(roomId)}/invite`, { token: alice.token, body: { user_id: uid("_botsdk_other") } });
    assert.equal(refused.status, 404, JSON.stringify(refused.body));
});

step("typing reaches the bot as an ephemeral event", async () => {
    await ok("PUT", `/v3/rooms/${encodeURIComponent(roomId)}/typing/${encodeURIComponent(alice.userId)}`, {
        token: alice.token,
        body: { typing: true, timeout: 10000 },
    });
    const ev = await whenBot(() => ephemeral.find((e) => e.type === "m.typing" && e.room_id === roomId && e.content.user_ids.includes(alice.userId)));
    assert.ok(ev);
});

step("regular users cannot take names in the bot's exclusive namespaces", async () => {
    const taken = await api("GET", `/v3/register/available?username=_botsdk_mine`);
    assert.equal(taken.body.errcode, "M_EXCLUSIVE", JSON.stringify(taken.body));
    const alias = await api("PUT", `/v3/directory/room/${encodeURIComponent(`#_botsdk_mine:${hs.serverName}`)}`, {
        token: alice.token,
        body: { room_id: roomId },
    });
    assert.equal(alias.body.errcode, "M_EXCLUSIVE", JSON.stringify(alias.body));
});

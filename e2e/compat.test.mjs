// End-to-end test of what older clients still rely on, driven by the real
// matrix-js-sdk (no store, no crypto) against a real homeserver process
// started by this test:
//
//   cd e2e && npm ci && HOMESERVER_BIN=/abs/path/bin/homeserver node --test --test-reporter=spec compat.test.mjs
//
// "A client that speaks only the deprecated query-string token or only the
// spec's deprecated push rules works against the server as it does against
// Synapse": ada and eve run the SDK with useAuthorizationHeader: false, so
// every request carries ?access_token= and no Authorization header (checked
// on the wire); ada relies on the legacy body-matching mention rules for
// messages without m.mentions. Then the SDK's room upgrade and account
// deactivation. alice is an ordinary client (Authorization header).
//
// The setup step registers the users and starts their sync loops; when it
// fails the other steps are skipped. Each other step works in rooms of its
// own.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import * as sdk from "matrix-js-sdk";

import {
    Homeserver,
    captureConsole,
    formatHttpLog,
    httpLog,
    rawSyncs,
    recordingFetch,
    registerWithDummyAuth,
    sdkLog,
    unrefLongTimers,
    until,
    withTimeout,
} from "./lib/harness.mjs";

captureConsole();
unrefLongTimers();

const PASSWORD = "correct horse battery staple";
// Query-token clients: their traffic is recorded under these names.
const QUERY_TOKEN = ["ada", "ada-login", "eve", "eve-login", "eve-media"];

const hs = new Homeserver(process.env.HOMESERVER_BIN);
const clients = {}; // name -> MatrixClient
const accounts = {}; // name -> {userId, deviceId, accessToken}
const syncStates = {}; // name -> sync states seen
const loggedOut = {}; // name -> the error of the SDK's Session.logged_out
let setupFailed = false;
const failedSteps = [];

function step(name, fn, timeout = 20000) {
    test(name, { timeout: timeout + 5000 }, async (t) => {
        if (setupFailed) {
            t.skip("the setup step failed");
            return;
        }
        try {
            await withTimeout(Promise.resolve().then(() => fn(t)), timeout, name);
        } catch (e) {
            failedSteps.push(name);
            throw e;
        }
    });
}

const userId = (localpart) => `@${localpart}:${hs.serverName}`;

function errText(e) {
    if (!e) return String(e);
    if (e.httpStatus) return `HTTP ${e.httpStatus} ${e.errcode ?? ""} ${JSON.stringify(e.data ?? {})}`;
    return e.message ?? String(e);
}

// A client for account; queryToken makes it send the token as the
// deprecated access_token query parameter instead of the header.
function makeClient(name, account, { queryToken = false } = {}) {
    accounts[name] = account;
    const client = sdk.createClient({
        baseUrl: hs.baseUrl,
        userId: account.userId,
        deviceId: account.deviceId,
        accessToken: account.accessToken,
        useAuthorizationHeader: !queryToken,
        fetchFn: recordingFetch(name),
    });
    clients[name] = client;
    syncStates[name] = [];
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        syncStates[name].push(data?.error ? `${state} (${errText(data.error)})` : state);
    });
    client.on(sdk.HttpApiEvent.SessionLoggedOut, (err) => (loggedOut[name] = err));
    return client;
}

// Registers name with a query-token client, then logs in with the
// password as an older client would (the identifier form): the logged-in
// client is clients[name].
async function registerAndLogIn(name) {
    const anon = sdk.createClient({ baseUrl: hs.baseUrl, useAuthorizationHeader: false, fetchFn: recordingFetch(`${name}-anon`) });
    await registerWithDummyAuth(anon, name, PASSWORD);
    const login = sdk.createClient({ baseUrl: hs.baseUrl, useAuthorizationHeader: false, fetchFn: recordingFetch(`${name}-login`) });
    const res = await login.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: name }, password: PASSWORD });
    assert.equal(res.user_id, userId(name));
    return makeClient(name, { userId: res.user_id, deviceId: res.device_id, accessToken: res.access_token }, { queryToken: true });
}

async function startSyncing(name) {
    await clients[name].startClient({ initialSyncLimit: 20 });
    await until(() => syncStates[name].includes(sdk.SyncState.Prepared), {
        timeout: 15000,
        what: `${name}'s sync state PREPARED`,
        state: () => `sync states ${JSON.stringify(syncStates[name])}`,
    });
}

// Creates a room as alice and has each of joiners join it; resolves once
// every one of them (and alice) has the room with all joins through sync.
async function roomWith(joiners, opts = {}) {
    const { room_id: roomId } = await clients.alice.createRoom({ preset: sdk.Preset.PublicChat, ...opts });
    for (const name of joiners) await clients[name].joinRoom(roomId);
    for (const name of ["alice", ...joiners]) {
        await until(() => clients[name].getRoom(roomId)?.getJoinedMemberCount() === joiners.length + 1, {
            what: `${name} to see ${joiners.length + 1} joined members in ${roomId}`,
            state: () => `sees ${clients[name].getRoom(roomId)?.getJoinedMemberCount()}`,
        });
    }
    return roomId;
}

async function say(who, roomId, body, extra = {}) {
    const { event_id: id } = await clients[who].sendMessage(roomId, { msgtype: "m.text", body, ...extra });
    assert.match(id, /^\$/, "send returns an event ID");
    return id;
}

function seen(who, roomId, eventId) {
    return until(() => clients[who].getRoom(roomId)?.findEventById(eventId), {
        what: `${who}'s sync to deliver ${eventId} in ${roomId}`,
    });
}

const counts = (who, roomId) => {
    const room = clients[who].getRoom(roomId);
    return {
        total: room?.getUnreadNotificationCount(sdk.NotificationCountType.Total) ?? null,
        highlight: room?.getUnreadNotificationCount(sdk.NotificationCountType.Highlight) ?? null,
    };
};

// The last unread_notifications the server sent who for roomId.
const rawCounts = (who, roomId) =>
    rawSyncs(who)
        .map((b) => b?.rooms?.join?.[roomId]?.unread_notifications)
        .filter(Boolean)
        .at(-1);

// Waits until who's counts for roomId are want, in the SDK and in the raw
// /sync (raw bodies are recorded before the SDK processes them).
async function countsReach(who, roomId, want) {
    await until(
        () => {
            const raw = rawCounts(who, roomId);
            const c = counts(who, roomId);
            return raw?.notification_count === want.total && raw?.highlight_count === want.highlight && c.total === want.total && c.highlight === want.highlight;
        },
        {
            what: `${who}'s counts in ${roomId} to be ${JSON.stringify(want)}`,
            state: () => `SDK ${JSON.stringify(counts(who, roomId))}, raw ${JSON.stringify(rawCounts(who, roomId))}`,
        },
    );
}

const findRule = (global, kind, id) => global?.[kind]?.find((r) => r.rule_id === id);

describe("older clients through matrix-js-sdk: query-string tokens, legacy push rules, upgrades, deactivation", () => {
    before(async () => {
        try {
            await hs.start();
        } catch (e) {
            setupFailed = true;
            throw e;
        }
    });

    after(async () => {
        for (const c of Object.values(clients)) c.stopClient();
        const exit = await hs.stop();
        const failed = setupFailed || failedSteps.length > 0;
        if (failed) {
            process.stderr.write(
                `\n# failed: ${setupFailed ? "setup" : failedSteps.join("; ")}\n` +
                    `# server exit: ${JSON.stringify(exit)}; data kept in ${hs.dir}\n` +
                    `# ---- homeserver log ----\n${hs.log.text()}\n` +
                    `# ---- HTTP exchanges of the clients ----\n${formatHttpLog()}\n` +
                    `# ---- matrix-js-sdk log ----\n${sdkLog.text()}\n`,
            );
        } else {
            hs.removeDataDir();
        }
    });

    test("setup: alice registers (header); ada and eve register and log in with query-string tokens; all sync", { timeout: 30000 }, async () => {
        try {
            const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch("alice-anon") });
            makeClient("alice", await registerWithDummyAuth(anon, "alice", PASSWORD));
            await registerAndLogIn("ada");
            await registerAndLogIn("eve");
            await Promise.all(["alice", "ada", "eve"].map(startSyncing));
        } catch (e) {
            setupFailed = true;
            throw e;
        }
    });

    step("1. a client with useAuthorizationHeader: false syncs, sends, uploads and downloads, with no Authorization header", async () => {
        const { ada } = clients;
        assert.equal((await ada.whoami()).user_id, userId("ada"));
        await ada.setDisplayName("Augusta King");
        const roomId = await roomWith(["ada"], { name: "query tokens" });

        // Sending, and the live timeline both ways.
        const mine = await say("ada", roomId, "sent with ?access_token=");
        await seen("alice", roomId, mine);
        const reply = await say("alice", roomId, "received, and answered with the header");
        assert.equal((await seen("ada", roomId, reply)).getContent().body, "received, and answered with the header");

        // Upload with the query token, then download through the
        // authenticated media path with the token in the query, as a media
        // link in an <img> would (the SDK's mxcUrlToHttp with
        // useAuthentication).
        const bytes = crypto.randomBytes(64 * 1024);
        const { content_uri: mxc } = await ada.uploadContent(bytes, { name: "blob.bin", type: "application/octet-stream" });
        assert.match(mxc, /^mxc:\/\//);
        const url = new URL(ada.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true));
        assert.match(url.pathname, /^\/_matrix\/client\/v1\/media\/download\//, `authenticated media URL: ${url}`);
        const media = recordingFetch("eve-media");
        const noToken = await media(url.href);
        assert.equal(noToken.status, 401, "no token, no media");
        url.searchParams.set("access_token", accounts.eve.accessToken);
        const res = await media(url.href);
        assert.equal(res.status, 200);
        assert.deepEqual(Buffer.from(await res.arrayBuffer()), bytes, "eve downloads ada's bytes");

        // On the wire: every request ada's clients made carried no
        // Authorization header, and every authenticated one the query token.
        const sent = httpLog.filter((e) => QUERY_TOKEN.includes(e.who));
        assert.deepEqual(sent.filter((e) => e.authHeader).map((e) => `${e.who} ${e.method} ${e.path}`), [], "no Authorization header");
        const adas = sent.filter((e) => e.who === "ada");
        assert.deepEqual(adas.filter((e) => !e.queryToken).map((e) => `${e.method} ${e.path}`), [], "ada's requests all carry ?access_token=");
        // (The recorder does see headers: alice's client sends one.)
        const alices = httpLog.filter((e) => e.who === "alice");
        assert.ok(alices.length > 0 && alices.every((e) => e.authHeader && !e.queryToken), "alice's requests carry the header only");
        for (const [method, re] of [
            ["GET", /\/sync$/],
            ["PUT", /\/send\/m\.room\.message\//],
            ["POST", /\/_matrix\/media\/v3\/upload$/],
            ["PUT", /\/profile\/.*\/displayname$/],
            ["POST", /\/join\//],
        ]) {
            assert.ok(
                adas.some((e) => e.method === method && re.test(e.path.split("?")[0]) && e.status === 200),
                `ada made a successful ${method} ${re} with the query token`,
            );
        }
    });

    step("2. the legacy mention rules: getPushRules, setPushRuleEnabled, and highlights without m.mentions", async () => {
        const { ada } = clients;
        // The server serves the deprecated rules itself (the SDK adds
        // defaults it finds missing, so the raw answer is checked too).
        const raw = (await ada.http.authedRequest(sdk.Method.Get, "/pushrules/")).global;
        const rules = (await ada.getPushRules()).global;
        for (const global of [raw, rules]) {
            assert.equal(findRule(global, "override", sdk.RuleId.ContainsDisplayName)?.enabled, true, ".m.rule.contains_display_name");
            assert.equal(findRule(global, "content", sdk.RuleId.ContainsUserName)?.pattern, "ada", ".m.rule.contains_user_name matches the localpart");
            assert.equal(findRule(global, "override", sdk.RuleId.AtRoomNotification)?.enabled, true, ".m.rule.roomnotif");
        }

        // The spec's rule for m.mentions off: only the deprecated rules can
        // highlight. alice sends as an old client does, without m.mentions.
        await ada.setPushRuleEnabled("global", sdk.PushRuleKind.Override, sdk.RuleId.IsUserMention, false);
        const off = (await ada.getPushRules()).global;
        assert.equal(findRule(off, "override", sdk.RuleId.IsUserMention)?.enabled, false, ".m.rule.is_user_mention is off");

        const named = await roomWith(["ada"], { name: "display name on" });
        const id = await say("alice", named, "Augusta King, are you there?");
        const ev = await seen("ada", named, id);
        assert.equal(ev.getContent()["m.mentions"], undefined, "sent without m.mentions");
        await countsReach("ada", named, { total: 1, highlight: 1 });

        // The other two legacy rules: the localpart, and @room from the
        // room's creator (power 100).
        const byName = await roomWith(["ada"], { name: "user name" });
        await say("alice", byName, "ping ada when you can");
        await countsReach("ada", byName, { total: 1, highlight: 1 });
        const atRoom = await roomWith(["ada"], { name: "at room" });
        await say("alice", atRoom, "@room standup in five");
        await countsReach("ada", atRoom, { total: 1, highlight: 1 });

        // With .m.rule.contains_display_name off too, the same message
        // only notifies (.m.rule.room_one_to_one).
        await ada.setPushRuleEnabled("global", sdk.PushRuleKind.Override, sdk.RuleId.ContainsDisplayName, false);
        const both = (await ada.getPushRules()).global;
        assert.equal(findRule(both, "override", sdk.RuleId.ContainsDisplayName)?.enabled, false);
        const unnamed = await roomWith(["ada"], { name: "display name off" });
        await say("alice", unnamed, "Augusta King, are you there?");
        await countsReach("ada", unnamed, { total: 1, highlight: 0 });

        // Back on: it highlights again.
        await ada.setPushRuleEnabled("global", sdk.PushRuleKind.Override, sdk.RuleId.ContainsDisplayName, true);
        const again = await roomWith(["ada"], { name: "display name on again" });
        await say("alice", again, "Augusta King, one more thing");
        await countsReach("ada", again, { total: 1, highlight: 1 });
        await ada.setPushRuleEnabled("global", sdk.PushRuleKind.Override, sdk.RuleId.IsUserMention, true);
    }, 40000);

    step("3. upgradeRoom: the tombstone and the new room reach the other client, which follows it", async () => {
        const { alice, ada } = clients;
        const oldId = await roomWith(["ada"], { name: "Upgradable", topic: "before the upgrade", room_version: "10" });
        const { replacement_room: newId } = await alice.upgradeRoom(oldId, "11");
        assert.ok(newId && newId !== oldId, `replacement_room ${newId}`);

        const oldRoom = ada.getRoom(oldId);
        const tombstone = await until(() => oldRoom.currentState.getStateEvents(sdk.EventType.RoomTombstone, ""), {
            what: "ada's sync to deliver the tombstone",
        });
        assert.equal(tombstone.getContent().replacement_room, newId);
        assert.equal(tombstone.getSender(), userId("alice"));

        await ada.joinRoom(newId);
        const newRoom = await until(() => ada.getRoom(newId)?.getMyMembership() === sdk.KnownMembership.Join && ada.getRoom(newId), {
            what: "ada to be joined to the new room",
        });
        assert.equal(newRoom.name, "Upgradable", "the name is copied");
        assert.equal(newRoom.currentState.getStateEvents(sdk.EventType.RoomTopic, "")?.getContent().topic, "before the upgrade");
        assert.equal(newRoom.getVersion(), "11");
        assert.equal(newRoom.findPredecessor()?.roomId, oldId, "the create event names its predecessor");
        assert.deepEqual(
            ada.getRoomUpgradeHistory(newId, true).map((r) => r.roomId),
            [oldId, newId],
            "the SDK links the two rooms both ways (verifyLinks)",
        );
        const visible = ada.getVisibleRooms().map((r) => r.roomId);
        assert.ok(visible.includes(newId) && !visible.includes(oldId), "the SDK hides the replaced room");

        // The old room is closed to ordinary members; the new one is open.
        await assert.rejects(say("ada", oldId, "hello?"), (e) => e.httpStatus === 403 && e.errcode === "M_FORBIDDEN");
        const hi = await say("ada", newId, "here instead");
        await seen("alice", newId, hi);
    });

    step("4. deactivateAccount: UIA with the password, then the session ends and the user ID is gone", async () => {
        const { alice, eve } = clients;
        const roomId = await roomWith(["eve"], { name: "eve leaves" });

        // Without auth: the user-interactive auth challenge.
        let session;
        await assert.rejects(eve.deactivateAccount(), (e) => {
            session = e.data?.session;
            return e.httpStatus === 401 && e.data?.flows?.some((f) => f.stages.includes("m.login.password"));
        });
        const auth = { type: "m.login.password", identifier: { type: "m.id.user", user: userId("eve") }, password: PASSWORD, session };
        await assert.rejects(eve.deactivateAccount({ ...auth, password: "not it" }), (e) => e.httpStatus === 401 && e.errcode === "M_FORBIDDEN");
        const res = await eve.deactivateAccount(auth);
        assert.ok(["success", "no-support"].includes(res.id_server_unbind_result), JSON.stringify(res));

        // eve's sync loop learns its token is dead: the SDK's logged-out event.
        await until(() => loggedOut.eve, { what: "the SDK's Session.logged_out for eve", state: () => JSON.stringify(syncStates.eve.slice(-3)) });
        assert.equal(loggedOut.eve.errcode, "M_UNKNOWN_TOKEN");
        eve.stopClient();

        // Deactivation leaves eve's rooms.
        await until(() => alice.getRoom(roomId)?.getMember(userId("eve"))?.membership === sdk.KnownMembership.Leave, {
            what: "alice to see eve leave",
        });

        const anon = sdk.createClient({ baseUrl: hs.baseUrl, useAuthorizationHeader: false, fetchFn: recordingFetch("eve-login") });
        await assert.rejects(
            anon.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: "eve" }, password: PASSWORD }),
            (e) => e.httpStatus === 403 && e.errcode === "M_USER_DEACTIVATED",
        );
        assert.equal(await anon.isUsernameAvailable("eve"), false, "the user ID is not free again");
        await assert.rejects(
            anon.registerRequest({ username: "eve", password: PASSWORD, auth: { type: "m.login.dummy" } }),
            (e) => e.httpStatus === 400 && e.errcode === "M_USER_IN_USE",
        );
    });

    step("5. no 5xx, no panic, and the server exits 0 on SIGTERM", async (t) => {
        for (const c of Object.values(clients)) c.stopClient();
        const t0 = Date.now();
        const exit = await hs.stop({ killAfter: 15000 });
        t.diagnostic(`the server exited ${Date.now() - t0} ms after SIGTERM`);
        assert.deepEqual(exit, { code: 0, signal: null });
        const server5xx = httpLog.filter((e) => typeof e.status === "number" && e.status >= 500);
        assert.deepEqual(server5xx.map((e) => `${e.method} ${e.path} -> ${e.status} ${e.body}`), []);
        // Expected refusals: registration's and deactivation's UIA, the
        // download without a token, the locked old room, and what a
        // deactivated account gets.
        const odd = httpLog.filter(
            (e) =>
                typeof e.status === "number" &&
                e.status >= 400 &&
                e.status !== 429 &&
                !(e.status === 401 && /\/(register|account\/deactivate)$/.test(e.path.split("?")[0])) &&
                !(e.status === 401 && e.who === "eve-media") &&
                !(e.status === 403 && e.who === "ada" && /\/send\//.test(e.path)) &&
                !(e.who === "eve-login" && [400, 403].includes(e.status)) &&
                !(e.who === "eve" && e.status === 401),
        );
        assert.deepEqual(odd.map((e) => `${e.who} ${e.method} ${e.path} -> ${e.status} ${e.body}`), []);
        assert.deepEqual(hs.log.lines.filter((l) => /panic|DATA RACE/.test(l)), []);
    });
});

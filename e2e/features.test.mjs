// End-to-end test of the persistent-chat features, driven by the real
// matrix-js-sdk (no store, no crypto) against a real homeserver process
// started by this test:
//
//   cd e2e && npm ci && HOMESERVER_BIN=/abs/path/bin/homeserver node --test --test-reporter=spec features.test.mjs
//
// Push rules and notifications, mention highlights, room tags, media,
// the public room directory's search, server-side search and topic feeds.
// Each step uses the SDK's own client methods; only GET /notifications
// without only=highlight and the feed endpoint, which the SDK has no
// method for, go through client.http.authedRequest.
//
// The setup step registers the users and starts their sync loops (dave
// never syncs: his feed long-poll can only be woken by the feed itself);
// when it fails the other steps are skipped. Each other step works in
// rooms of its own, so a failure in one does not hide the outcome of the
// others.

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
const FEED_PREFIX = "/_matrix/client/unstable/org.persistentchat";

const hs = new Homeserver(process.env.HOMESERVER_BIN);
const clients = {}; // name -> MatrixClient
const accounts = {}; // name -> {userId, deviceId, accessToken}
const syncStates = {}; // name -> sync states seen
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

function makeClient(name, account) {
    accounts[name] = account;
    const client = sdk.createClient({
        baseUrl: hs.baseUrl,
        userId: account.userId,
        deviceId: account.deviceId,
        accessToken: account.accessToken,
        fetchFn: recordingFetch(name),
    });
    clients[name] = client;
    syncStates[name] = [];
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        syncStates[name].push(data?.error ? `${state} (${errText(data.error)})` : state);
    });
    return client;
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

// Sends a message as who and returns its event ID.
async function say(who, roomId, body, extra = {}) {
    const { event_id: id } = await clients[who].sendMessage(roomId, { msgtype: "m.text", body, ...extra });
    assert.match(id, /^\$/, "send returns an event ID");
    return id;
}

// The event as who's client holds it, once its sync has delivered it.
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

// GET /notifications (all of them, not only highlights): the SDK's only
// reader of this endpoint is its notification timeline, which asks for
// only=highlight.
function notifications(who) {
    return clients[who].http.authedRequest(sdk.Method.Get, "/notifications", { limit: "100" });
}

// GET the feed endpoint, which is under our unstable prefix.
function readFeed(who, feedId, params = {}) {
    return clients[who].http.authedRequest(sdk.Method.Get, `/feeds/${encodeURIComponent(feedId)}`, params, undefined, {
        prefix: FEED_PREFIX,
        localTimeoutMs: 60000,
    });
}

// The event IDs of feedId's section in who's raw incremental /syncs.
function feedSyncIds(who, feedId) {
    return rawSyncs(who).flatMap((b) => (b?.["org.persistentchat.feeds"]?.[feedId]?.events ?? []).map((e) => e.event_id));
}

function tweak(actions, name) {
    return actions.find((a) => typeof a === "object" && a?.set_tweak === name)?.value;
}

async function fetchMedia(url, token) {
    const res = await fetch(url, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    return { res, bytes: Buffer.from(await res.arrayBuffer()) };
}

describe("persistent-chat features through matrix-js-sdk", () => {
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

    test("setup: alice, bob, carol and dave register; all but dave sync", { timeout: 30000 }, async () => {
        try {
            for (const name of ["alice", "bob", "carol", "dave"]) {
                const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch(`${name}-anon`) });
                const account = await registerWithDummyAuth(anon, name, PASSWORD);
                assert.equal(account.userId, userId(name));
                makeClient(name, account);
            }
            await Promise.all(["alice", "bob", "carol"].map(startSyncing));
        } catch (e) {
            setupFailed = true;
            throw e;
        }
    });

    step("1. keyword (content) and sender push rules raise notifications: /sync counts and GET /notifications", async () => {
        const { bob } = clients;
        const roomId = await roomWith(["bob", "carol"], { name: "notify" });

        // Three members, so .m.rule.room_one_to_one does not apply; with
        // .m.rule.message off, only bob's own rules notify him.
        await bob.setPushRuleEnabled("global", sdk.PushRuleKind.Underride, sdk.RuleId.Message, false);
        await bob.addPushRule("global", sdk.PushRuleKind.ContentSpecific, "deploy-watch", {
            pattern: "deploy",
            actions: [sdk.PushRuleActionName.Notify, { set_tweak: sdk.TweakName.Sound, value: "keyword" }],
        });
        await bob.addPushRule("global", sdk.PushRuleKind.SenderSpecific, userId("carol"), {
            actions: [sdk.PushRuleActionName.Notify, { set_tweak: sdk.TweakName.Sound, value: "sender" }],
        });
        const rules = (await bob.getPushRules()).global;
        const content = rules.content.find((r) => r.rule_id === "deploy-watch");
        assert.equal(content?.pattern, "deploy", `the content rule reads back: ${JSON.stringify(rules.content)}`);
        assert.equal(content.enabled, true);
        assert.ok(rules.sender.some((r) => r.rule_id === userId("carol") && r.enabled), `the sender rule reads back: ${JSON.stringify(rules.sender)}`);
        assert.equal(rules.underride.find((r) => r.rule_id === sdk.RuleId.Message)?.enabled, false, ".m.rule.message is off");

        // In order: two that match nothing ("deployment" is not the whole
        // word "deploy"), then carol's (sender rule) and the keyword one.
        const quiet1 = await say("alice", roomId, "just chatting about lunch");
        const quiet2 = await say("alice", roomId, "the deployment pipeline is slow");
        const fromCarol = await say("carol", roomId, "hi everyone");
        const keyword = await say("alice", roomId, "the Deploy is done");

        // The worker evaluates events in stream order: once the last one has
        // its notification, all four have been evaluated.
        let list;
        await until(
            async () => {
                list = (await notifications("bob")).notifications.filter((n) => n.room_id === roomId);
                return list.some((n) => n.event.event_id === keyword);
            },
            { what: "GET /notifications to list the keyword message", state: () => JSON.stringify(list) },
        );
        assert.deepEqual(
            list.map((n) => n.event.event_id),
            [keyword, fromCarol],
            `bob's notifications, newest first (quiet ones: ${quiet1}, ${quiet2})`,
        );
        assert.equal(tweak(list[0].actions, "sound"), "keyword", `the content rule's actions: ${JSON.stringify(list[0].actions)}`);
        assert.equal(tweak(list[1].actions, "sound"), "sender", `the sender rule's actions: ${JSON.stringify(list[1].actions)}`);
        assert.equal(list[0].event.content.body, "the Deploy is done");
        assert.equal(list[1].event.sender, userId("carol"));
        assert.ok(list.every((n) => n.read === false && typeof n.ts === "number"), "unread, with a timestamp");

        // The counts reach the SDK through /sync.
        await until(() => counts("bob", roomId).total === 2, {
            what: "bob's unread notification count to be 2",
            state: () => JSON.stringify(counts("bob", roomId)),
        });
        assert.deepEqual(counts("bob", roomId), { total: 2, highlight: 0 });
        const lastCounts = () =>
            rawSyncs("bob")
                .map((b) => b?.rooms?.join?.[roomId]?.unread_notifications)
                .filter(Boolean)
                .at(-1);
        assert.deepEqual(lastCounts(), { notification_count: 2, highlight_count: 0 }, "as the server's /sync said");

        // A read receipt on the newest clears them, in /sync and in GET
        // /notifications.
        const room = bob.getRoom(roomId);
        await bob.sendReadReceipt(await seen("bob", roomId, keyword), sdk.ReceiptType.Read);
        // (Raw bodies are recorded before the SDK processes them: wait for both.)
        await until(() => lastCounts()?.notification_count === 0 && room.getUnreadNotificationCount(sdk.NotificationCountType.Total) === 0, {
            what: "a /sync with bob's count back at 0",
            state: () => `raw ${JSON.stringify(lastCounts())}, SDK ${JSON.stringify(counts("bob", roomId))}`,
        });
        assert.equal(lastCounts().highlight_count, 0);
        const after = (await notifications("bob")).notifications.filter((n) => n.room_id === roomId);
        assert.deepEqual(after.map((n) => [n.event.event_id, n.read]), [[keyword, true], [fromCarol, true]], "both now read");
    });

    step("2. a message whose m.mentions names carol highlights it for her", async () => {
        const { carol } = clients;
        // carol keeps the default rules: every message notifies her, the
        // mention also highlights.
        const roomId = await roomWith(["bob", "carol"], { name: "mentions" });
        const plain = await say("alice", roomId, "morning all");
        const mention = await say("alice", roomId, "carol: can you review this?", { "m.mentions": { user_ids: [userId("carol")] } });
        await until(() => counts("carol", roomId).highlight === 1 && counts("carol", roomId).total === 2, {
            what: "carol's counts to be total 2, highlight 1",
            state: () => JSON.stringify(counts("carol", roomId)),
        });

        // The SDK's notification timeline pages GET /notifications?only=highlight.
        const set = new sdk.EventTimelineSet(undefined, { timelineSupport: true }, carol);
        carol.setNotifTimelineSet(set);
        carol.resetNotifTimelineSet();
        await carol.paginateEventTimeline(set.getLiveTimeline(), { backwards: true, limit: 30 });
        const evs = set.getLiveTimeline().getEvents();
        assert.deepEqual(evs.map((e) => e.getId()), [mention], `only the mention is a highlight (not ${plain})`);
        assert.equal(evs[0].getRoomId(), roomId);
        assert.equal(evs[0].getPushActions()?.tweaks?.highlight, true, "the SDK's own evaluation agrees: highlight");

        // bob was not mentioned: no highlight for him.
        await seen("bob", roomId, mention);
        const bobHighlights = (await clients.bob.http.authedRequest(sdk.Method.Get, "/notifications", { only: "highlight" })).notifications;
        assert.ok(!bobHighlights.some((n) => n.room_id === roomId), `bob has no highlight in the room: ${JSON.stringify(bobHighlights)}`);
    });

    step("3. room tags round-trip: setRoomTag and deleteRoomTag, seen back through sync", async () => {
        const { bob } = clients;
        const roomId = await roomWith(["bob"], { name: "tags" });
        const room = bob.getRoom(roomId);
        await bob.setRoomTag(roomId, "u.work", { order: 0.25 });
        await bob.setRoomTag(roomId, "m.favourite", { order: 0.5 });
        await until(() => room.tags["u.work"] && room.tags["m.favourite"], {
            what: "both tags in room.tags",
            state: () => JSON.stringify(room.tags),
        });
        assert.deepEqual(room.tags, { "u.work": { order: 0.25 }, "m.favourite": { order: 0.5 } });
        assert.deepEqual((await bob.getRoomTags(roomId)).tags, room.tags, "GET tags agrees with sync");

        await bob.deleteRoomTag(roomId, "u.work");
        await until(() => !room.tags["u.work"], { what: "u.work to leave room.tags", state: () => JSON.stringify(room.tags) });
        assert.deepEqual(room.tags, { "m.favourite": { order: 0.5 } });
        await bob.deleteRoomTag(roomId, "m.favourite");
        await until(() => Object.keys(room.tags).length === 0, { what: "room.tags to be empty", state: () => JSON.stringify(room.tags) });
        assert.deepEqual((await bob.getRoomTags(roomId)).tags, {});
        // alice's view of the room has no tags: they are bob's.
        assert.deepEqual(clients.alice.getRoom(roomId).tags, {});
    });

    step("4. uploadContent, an m.file event, and an authenticated download with the same bytes", async () => {
        const { alice, bob } = clients;
        const roomId = await roomWith(["bob"], { name: "files" });
        // Every byte value, then random bytes: 200 KB.
        const bytes = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), crypto.randomBytes(200_000 - 256)]);
        const up = await alice.uploadContent(bytes, { name: "report.bin", type: "application/octet-stream" });
        assert.match(up.content_uri, new RegExp(`^mxc://${hs.serverName.replace(/\./g, "\\.")}/[A-Za-z0-9_-]+$`), `content_uri ${up.content_uri}`);

        const { event_id: fileEvent } = await alice.sendMessage(roomId, {
            msgtype: sdk.MsgType.File,
            body: "report.bin",
            url: up.content_uri,
            info: { size: bytes.length, mimetype: "application/octet-stream" },
        });
        const ev = await seen("bob", roomId, fileEvent);
        assert.equal(ev.getContent().msgtype, "m.file");
        assert.equal(ev.getContent().url, up.content_uri);

        // bob downloads what the event references.
        const url = bob.mxcUrlToHttp(ev.getContent().url, undefined, undefined, undefined, false, true, true);
        assert.ok(url?.startsWith(`${hs.baseUrl}/_matrix/client/v1/media/download/`), `an authenticated media URL: ${url}`);
        const anon = await fetchMedia(url);
        assert.equal(anon.res.status, 401, "no access token, no media");
        assert.equal(JSON.parse(anon.bytes.toString()).errcode, "M_MISSING_TOKEN");
        const { res, bytes: got } = await fetchMedia(url, accounts.bob.accessToken);
        assert.equal(res.status, 200, `download: ${res.status} ${got.subarray(0, 200)}`);
        assert.equal(got.length, bytes.length, "same length");
        assert.ok(got.equals(bytes), "same bytes");
        assert.equal(res.headers.get("content-type"), "application/octet-stream");
        assert.match(res.headers.get("content-disposition") ?? "", /attachment.*report\.bin/);

        // The unauthenticated v3 URL the SDK builds by default is frozen.
        const legacy = await fetchMedia(bob.mxcUrlToHttp(up.content_uri), accounts.bob.accessToken);
        assert.equal(legacy.res.status, 404, "unauthenticated /_matrix/media/v3/download is not served");
    });

    step("5. publicRooms with generic_search_term finds a published room by a word in its topic", async () => {
        const { alice, bob } = clients;
        const { room_id: airship } = await alice.createRoom({
            name: "Airship ops",
            topic: "Quarterly zeppelin maintenance window",
            preset: sdk.Preset.PublicChat,
            visibility: sdk.Visibility.Public,
        });
        const { room_id: garden } = await alice.createRoom({
            name: "Garden",
            topic: "Tomatoes, compost and other gardening tips",
            preset: sdk.Preset.PublicChat,
            visibility: sdk.Visibility.Public,
        });
        const ids = async (term) => (await bob.publicRooms({ filter: { generic_search_term: term } })).chunk.map((r) => r.room_id);

        const zep = await bob.publicRooms({ filter: { generic_search_term: "Zeppelin" } });
        assert.deepEqual(zep.chunk.map((r) => r.room_id), [airship], `"Zeppelin" finds the airship room only: ${JSON.stringify(zep.chunk)}`);
        assert.equal(zep.chunk[0].topic, "Quarterly zeppelin maintenance window");
        assert.equal(zep.chunk[0].name, "Airship ops");
        assert.equal(zep.chunk[0].num_joined_members, 1);
        assert.deepEqual(await ids("gardening"), [garden], '"gardening" finds the garden room only');
        assert.deepEqual(await ids("submarine"), [], "a word in neither finds nothing");
        const all = await ids(undefined);
        assert.ok(all.includes(airship) && all.includes(garden), "without a term both are listed");
    });

    step("6. searchRoomEvents finds a message by a word in its body, not one in a room the user cannot see", async () => {
        const { alice, bob } = clients;
        const shared = await roomWith(["bob"], { name: "search" });
        const { room_id: hidden } = await alice.createRoom({ preset: sdk.Preset.PrivateChat, name: "alice only" });
        const secret = await say("alice", hidden, "the secret kumquat recipe");
        await say("alice", shared, "nothing about fruit here");
        const visible = await say("alice", shared, "Kumquat season starts on Monday");

        const res = await bob.searchRoomEvents({ term: "kumquat" });
        assert.deepEqual(
            res.results.map((r) => r.context.getEvent().getId()),
            [visible],
            `bob finds only the message in his room (not ${secret})`,
        );
        assert.equal(res.count, 1);
        assert.equal(res.results[0].context.getEvent().getRoomId(), shared);
        assert.equal(res.results[0].context.getEvent().getContent().body, "Kumquat season starts on Monday");
        assert.ok(res.highlights.map((h) => h.toLowerCase()).includes("kumquat"), `highlights: ${JSON.stringify(res.highlights)}`);
        assert.deepEqual((await bob.searchRoomEvents({ term: "recipe" })).results, [], "a word only in the hidden room finds nothing");

        // The hidden message is indexed: alice, who is in both rooms, finds both.
        const mine = await alice.searchRoomEvents({ term: "kumquat" });
        assert.deepEqual(new Set(mine.results.map((r) => r.context.getEvent().getId())), new Set([visible, secret]));
    });

    step("7. a feed over followed rooms, a world_readable one never joined included; long-poll woken by a new match", async (t) => {
        const { alice, bob, dave } = clients;
        const followed = await roomWith(["bob"], { name: "feed: followed by tag" });
        const unfollowed = await roomWith(["bob"], { name: "feed: joined, not followed" });
        const { room_id: open } = await alice.createRoom({
            name: "feed: world readable",
            preset: sdk.Preset.PublicChat,
            initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "world_readable" } }],
        });
        const { room_id: members } = await alice.createRoom({ name: "feed: shared history", preset: sdk.Preset.PublicChat });

        await bob.setRoomTag(followed, "org.persistentchat.follow", {});
        await until(() => bob.getRoom(followed).tags["org.persistentchat.follow"], { what: "the follow tag through sync" });
        // With the client running, setAccountData resolves once sync echoes it.
        await bob.setAccountData("org.persistentchat.follows", { rooms: [open, members] });
        await bob.setAccountData("org.persistentchat.feeds", { feeds: { ops: { keywords: ["outage", "deploy*"] } } });
        assert.deepEqual(bob.getAccountData("org.persistentchat.follows")?.getContent(), { rooms: [open, members] });
        await assert.rejects(bob.setAccountDataRaw("org.persistentchat.feeds", { feeds: { "bad id!": {} } }), (e) => {
            assert.equal(e.httpStatus, 400, errText(e));
            assert.equal(e.errcode, "M_BAD_JSON");
            return true;
        });
        await assert.rejects(readFeed("bob", "nope"), (e) => e.httpStatus === 404 && e.errcode === "M_NOT_FOUND");

        const f1 = await say("alice", followed, "outage in eu-west");
        const quiet = [await say("alice", followed, "lunch anyone?")];
        const w1 = await say("alice", open, "deploying 1.2.3 now");
        quiet.push(await say("alice", open, "nothing to see"));
        quiet.push(await say("alice", members, "outage in a room whose history is for members"));
        quiet.push(await say("alice", unfollowed, "outage in a room bob did not follow"));
        const f2 = await say("alice", followed, "Deployed the fix");

        const first = await readFeed("bob", "ops");
        assert.deepEqual(first.chunk.map((e) => e.event_id), [f1, w1, f2], `the matches, oldest first (not ${quiet.join(", ")})`);
        assert.deepEqual(first.chunk.map((e) => e.room_id), [followed, open, followed]);
        assert.equal(first.limited, false);
        assert.equal(typeof first.next_batch, "string");

        // The same matches reach bob's incremental /sync in its feeds section.
        await until(() => feedSyncIds("bob", "ops").length >= 3, {
            what: "bob's /sync feed section to carry the 3 matches",
            state: () => JSON.stringify(feedSyncIds("bob", "ops")),
        });
        assert.deepEqual(feedSyncIds("bob", "ops"), [f1, w1, f2]);

        // The long poll is dave's: he runs no sync loop, so nothing but the
        // feed endpoint's own watch on the room he follows without joining
        // can wake his request. He follows only the world-readable room.
        await dave.setAccountData("org.persistentchat.follows", { rooms: [open] });
        await dave.setAccountData("org.persistentchat.feeds", { feeds: { ops: { keywords: ["outage", "deploy*"] } } });
        const daves = await readFeed("dave", "ops");
        assert.deepEqual(daves.chunk.map((e) => e.event_id), [w1], "dave's feed: the followed world-readable room only");

        // Nothing new: a poll with a short timeout waits it out, empty.
        let t0 = Date.now();
        const idle = await readFeed("dave", "ops", { since: daves.next_batch, timeout: "300" });
        const idleMs = Date.now() - t0;
        assert.deepEqual(idle.chunk, []);
        assert.ok(idleMs >= 250, `the idle poll waited its timeout (${idleMs} ms)`);

        // A long poll: a message that does not match does not end it, one
        // that matches does.
        t0 = Date.now();
        let settledAt = null;
        const poll = readFeed("dave", "ops", { since: idle.next_batch, timeout: "20000" });
        poll.then(
            () => (settledAt = Date.now()),
            () => (settledAt = Date.now()),
        );
        const noise = await say("alice", open, "still nothing to report");
        await seen("alice", open, noise);
        assert.equal(settledAt, null, "the poll is still waiting after a message that does not match");
        const w2 = await say("alice", open, "OUTAGE: database failover");
        const woken = await poll;
        const pollMs = Date.now() - t0;
        assert.deepEqual(woken.chunk.map((e) => e.event_id), [w2], "the poll returns the new match");
        assert.equal(woken.chunk[0].content.body, "OUTAGE: database failover");
        assert.ok(pollMs < 15000, `woken by the message, not by its timeout (${pollMs} ms)`);
        assert.ok(Number(woken.next_batch) > Number(idle.next_batch), "next_batch moves on");
        t.diagnostic(`idle poll ${idleMs} ms; woken poll ${pollMs} ms`);

        // bob's /sync feed section carries the new match too.
        await until(() => feedSyncIds("bob", "ops").includes(w2), { what: "bob's /sync feed section to carry the new match" });
        assert.deepEqual(feedSyncIds("bob", "ops"), [f1, w1, f2, w2]);
        assert.equal(bob.getRoom(open), null, "bob never joined the world-readable room");
        assert.equal(dave.getRooms().length, 0, "dave never synced, joined nothing");
    }, 30000);

    step("8. no 5xx, no panic, and the server exits 0 on SIGTERM", async (t) => {
        for (const c of Object.values(clients)) c.stopClient();
        const t0 = Date.now();
        const exit = await hs.stop({ killAfter: 15000 });
        const stopMs = Date.now() - t0;
        // Up to about 5 s is Go's net/http: Shutdown waits that long for a
        // connection that has not sent its first request yet, which a sync
        // aborted by stopClient can leave in undici's pool.
        t.diagnostic(`the server exited ${stopMs} ms after SIGTERM`);
        assert.deepEqual(exit, { code: 0, signal: null });
        const server5xx = httpLog.filter((e) => typeof e.status === "number" && e.status >= 500);
        assert.deepEqual(server5xx.map((e) => `${e.method} ${e.path} -> ${e.status} ${e.body}`), []);
        // The 401s of registration's UIA and the refusals steps 7 asks for
        // are expected; anything else is not.
        const odd = httpLog.filter(
            (e) =>
                typeof e.status === "number" &&
                e.status >= 400 &&
                e.status !== 429 &&
                !(e.status === 401 && e.path.endsWith("/register")) &&
                !(e.status === 400 && e.path.endsWith("/account_data/org.persistentchat.feeds")) &&
                !(e.status === 404 && e.path.endsWith("/feeds/nope")),
        );
        assert.deepEqual(odd.map((e) => `${e.who} ${e.method} ${e.path} -> ${e.status} ${e.body}`), []);
        assert.deepEqual(hs.log.lines.filter((l) => /panic|DATA RACE/.test(l)), []);
    });
});

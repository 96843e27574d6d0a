// End-to-end test of federation with the real matrix-js-sdk (no store, no
// crypto): two homeserver processes, A and B, federating over loopback TLS
// (harness startFederation), each with clients of its own.
//
//   cd e2e && npm ci && HOMESERVER_BIN=/abs/path/bin/homeserver node --test federation.test.mjs
//
// The steps share state and run in order; after a failed step the rest are
// skipped. On a failure both servers' logs, the clients' HTTP exchanges and
// the SDK's log are printed.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as sdk from "matrix-js-sdk";

import {
    captureConsole,
    formatHttpLog,
    httpLog,
    rawMessages,
    rawSyncs,
    recordingFetch,
    registerWithDummyAuth,
    sdkLog,
    startFederation,
    unrefLongTimers,
    until,
    withTimeout,
} from "./lib/harness.mjs";

captureConsole();
unrefLongTimers();

const ROOM_NAME = "Federated chat e2e";
const ROOM_TOPIC = "Two servers, one room";
const NEW_TOPIC = "The topic, changed on A";
const ALIAS_LOCALPART = "fedchat";
const PASSWORD = "correct horse battery staple";
const BACKCHAT_LIMIT = 25; // the rooms' org.persistentchat.backchat setting
const QUIET_MESSAGES = 40; // sent in the second room before any user of B is in it

let A, B; // the two homeservers
const home = {}; // name -> its Homeserver
const clients = {};
const live = {}; // name -> live timeline events of the room, in arrival order
const syncStates = {};
let roomId;
let alias;
let aCountsBeforeJoin; // A's request counts before bob's join
const sent = []; // {body, eventId, sender} of every m.room.message, in the order sent
const FED = "/_matrix/federation";
let failed = null;

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
            throw e;
        }
    });
}

const uid = (name) => `@${name}:${home[name].serverName}`;

function errText(e) {
    if (e?.httpStatus) return `HTTP ${e.httpStatus} ${e.errcode ?? ""} ${JSON.stringify(e.data ?? {})}`;
    return e?.message ?? String(e);
}

// Runs fn and checks that hs answered each of routes (e.g. "GET
// /_matrix/federation/v1/backfill/{roomId}") meanwhile: what went between
// the servers, which no client sees. The counts come from hs's metrics,
// counted as each handler returns, which may be just after its answer
// arrived: hence the wait. Returns fn's result and every route's increase.
// before, if given, is the counts to compare with (taken earlier).
async function expectFederation(hs, routes, fn, before) {
    before ??= await hs.requestCounts();
    const result = await fn();
    let diff = {};
    await until(
        async () => {
            const after = await hs.requestCounts();
            diff = {};
            for (const [k, n] of Object.entries(after)) if (n > (before[k] ?? 0)) diff[k] = n - (before[k] ?? 0);
            return routes.every((r) => diff[r] > 0);
        },
        { timeout: 10000, what: `${hs.serverName} to have answered ${routes.join(", ")}`, state: () => `it answered ${JSON.stringify(diff)}` },
    );
    return { result, diff };
}

function httpErrorsOf(who) {
    return formatHttpLog(httpLog.filter((e) => e.who === who && (typeof e.status !== "number" || e.status >= 400)).slice(-10));
}

// Registers name on server hs and makes its client.
async function makeUser(name, hs) {
    home[name] = hs;
    const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch(`${name}-anon`) });
    const acct = await registerWithDummyAuth(anon, name, PASSWORD);
    assert.equal(acct.userId, uid(name));
    const client = sdk.createClient({
        baseUrl: hs.baseUrl,
        userId: acct.userId,
        deviceId: acct.deviceId,
        accessToken: acct.accessToken,
        fetchFn: recordingFetch(name),
    });
    clients[name] = client;
    live[name] = [];
    syncStates[name] = [];
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        syncStates[name].push(data?.error ? `${state} (${errText(data.error)})` : state);
    });
    client.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline, removed, data) => {
        if (room?.roomId !== roomId || toStartOfTimeline || removed || !data?.liveEvent) return;
        live[name].push(event);
    });
    return client;
}

async function startSyncing(name, opts) {
    await clients[name].startClient(opts);
    await until(() => syncStates[name].includes(sdk.SyncState.Prepared), {
        timeout: 20000,
        what: `${name}'s sync state PREPARED`,
        state: () => `sync states ${JSON.stringify(syncStates[name])}; recent HTTP errors:\n${httpErrorsOf(name)}`,
    });
}

const messagesOf = (name) => live[name].filter((e) => e.getType() === "m.room.message");
const topicOf = (room) => room?.currentState.getStateEvents("m.room.topic", "")?.getContent().topic;
const describeEvs = (evs) => evs.map((e) => `${e.getType()}:${e.getContent().body ?? e.getStateKey() ?? ""}`).join(", ");

// who sends bodies one after another (the SDK's scheduler queues them), and
// each of the others sees them all, in order, on the live timeline.
async function sendAndSee(who, bodies, seers) {
    const res = await Promise.all(bodies.map((b) => clients[who].sendTextMessage(roomId, b)));
    const batch = bodies.map((body, i) => ({ body, eventId: res[i].event_id, sender: who }));
    assert.equal(new Set(batch.map((m) => m.eventId)).size, batch.length, "distinct event IDs");
    sent.push(...batch);
    for (const s of seers) {
        await until(() => batch.every((m) => messagesOf(s).some((e) => e.getId() === m.eventId)), {
            timeout: 30000,
            what: `${s} (on ${home[s].serverName}) to receive ${who}'s ${batch.length} messages`,
            state: () => `${s} has ${batch.filter((m) => messagesOf(s).some((e) => e.getId() === m.eventId)).length}`,
        });
        const order = messagesOf(s)
            .map((e) => e.getId())
            .filter((id) => batch.some((m) => m.eventId === id));
        assert.deepEqual(order, batch.map((m) => m.eventId), `${s} gets ${who}'s messages once each, in order`);
        const first = messagesOf(s).find((e) => e.getId() === batch[0].eventId);
        assert.equal(first.getSender(), uid(who));
        assert.equal(first.getContent().body, batch[0].body);
    }
    return batch;
}

describe("matrix-js-sdk on two federating homeservers", () => {
    before(async () => {
        try {
            [A, B] = await startFederation(process.env.HOMESERVER_BIN, 2);
        } catch (e) {
            failed = "starting the homeservers";
            throw e;
        }
    });

    after(async () => {
        for (const c of Object.values(clients)) c.stopClient();
        const exits = [await A?.stop(), await B?.stop()];
        const odd = httpLog.filter(
            (e) =>
                typeof e.status === "number" &&
                e.status >= 400 &&
                !(e.status === 401 && e.method === "POST" && e.path.endsWith("/register")) &&
                !(e.status === 429),
        );
        if (odd.length) {
            process.stderr.write(`\n# unexpected non-2xx responses the clients got (${odd.length}):\n${formatHttpLog(odd)}\n`);
        }
        if (failed) {
            process.stderr.write(
                `\n# step failed: ${failed}\n` +
                    `# server exits: ${JSON.stringify(exits)}; data kept in ${A?.dir} and ${B?.dir}\n` +
                    `# ---- homeserver A (${A?.serverName}) log ----\n${A?.log.text()}\n` +
                    `# ---- homeserver B (${B?.serverName}) log ----\n${B?.log.text()}\n` +
                    `# ---- HTTP exchanges of the clients ----\n${formatHttpLog()}\n` +
                    `# ---- matrix-js-sdk log ----\n${sdkLog.text()}\n`,
            );
        } else {
            A?.removeDataDir();
            B?.removeDataDir();
        }
    });

    step("1. alice registers on A, bob on B", async () => {
        assert.notEqual(A.serverName, B.serverName);
        await makeUser("alice", A);
        await makeUser("bob", B);
        assert.equal((await clients.alice.whoami()).user_id, uid("alice"));
        assert.equal((await clients.bob.whoami()).user_id, uid("bob"));
    });

    step("2. alice creates a public room with an alias and a backchat setting; bob joins it from B by the alias", async () => {
        const res = await clients.alice.createRoom({
            name: ROOM_NAME,
            topic: ROOM_TOPIC,
            preset: sdk.Preset.PublicChat,
            room_alias_name: ALIAS_LOCALPART,
            initial_state: [{ type: "org.persistentchat.backchat", state_key: "", content: { limit: BACKCHAT_LIMIT } }],
        });
        roomId = res.room_id;
        alias = `#${ALIAS_LOCALPART}:${A.serverName}`;
        // B asks A for the alias over federation (query/directory).
        const resolved = await clients.bob.getRoomIdForAlias(alias);
        assert.equal(resolved.room_id, roomId, "B resolves A's alias");
        assert.ok(resolved.servers.includes(A.serverName), `the alias names A among its servers: ${JSON.stringify(resolved.servers)}`);
        // A join over federation: make_join/send_join through A.
        aCountsBeforeJoin = await A.requestCounts();
        const { result: room } = await expectFederation(
            A,
            [`GET ${FED}/v1/make_join/{roomId}/{userId}`, `PUT ${FED}/v2/send_join/{roomId}/{eventId}`],
            () => clients.bob.joinRoom(alias),
        );
        assert.equal(room.roomId, roomId);
        assert.deepEqual((await clients.bob.getJoinedRooms()).joined_rooms, [roomId]);
    });

    step("3. both sync; messages go both ways and each sees the other's on the live timeline", async () => {
        await Promise.all([startSyncing("alice", { initialSyncLimit: 20 }), startSyncing("bob", { initialSyncLimit: 20 })]);
        for (const name of ["alice", "bob"]) {
            const room = clients[name].getRoom(roomId);
            assert.ok(room, `${name} has the room after the initial sync`);
            assert.equal(room.getMyMembership(), "join", `${name}'s membership`);
            assert.equal(room.name, ROOM_NAME, `${name} sees the room name`);
            assert.equal(topicOf(room), ROOM_TOPIC, `${name} sees the topic`);
            await until(() => room.getJoinedMemberCount() === 2, {
                what: `${name} to see 2 joined members`,
                state: () => `joined: ${JSON.stringify(room.getJoinedMembers().map((m) => m.userId))}`,
            });
            assert.equal(room.getCanonicalAlias(), alias, `${name} sees the canonical alias`);
        }
        await sendAndSee("alice", ["hello from A 1", "hello from A 2", "hello from A 3"], ["bob"]);
        const [reply] = await sendAndSee("bob", ["hello from B"], ["alice"]);
        const got = messagesOf("alice").find((e) => e.getId() === reply.eventId);
        assert.equal(got.getSender(), uid("bob"), "bob's message reaches alice with his (B) user ID");
    });

    step("4. typing and read receipts cross the servers (EDUs)", async () => {
        const aliceRoom = clients.alice.getRoom(roomId);
        const bobRoom = clients.bob.getRoom(roomId);
        await clients.bob.sendTyping(roomId, true, 20000);
        await until(() => aliceRoom.getMember(uid("bob"))?.typing === true, { what: "alice to see bob typing" });
        await clients.bob.sendTyping(roomId, false);
        await until(() => aliceRoom.getMember(uid("bob"))?.typing === false, { what: "alice to see bob stop typing" });
        const last = messagesOf("alice").find((e) => e.getSender() === uid("bob"));
        await clients.alice.sendReadReceipt(last);
        const bobsCopy = bobRoom.findEventById(last.getId());
        assert.ok(bobsCopy, "bob holds his own message");
        await until(() => bobRoom.getUsersReadUpTo(bobsCopy).includes(uid("alice")), {
            what: "bob to see alice's read receipt on his message",
            state: () => `read up to it: ${JSON.stringify(bobRoom.getUsersReadUpTo(bobsCopy))}`,
        });
    });

    step("5. alice changes the topic on A; bob sees it through B", async () => {
        const res = await clients.alice.setRoomTopic(roomId, NEW_TOPIC);
        for (const name of ["alice", "bob"]) {
            const room = clients[name].getRoom(roomId);
            await until(() => topicOf(room) === NEW_TOPIC, {
                what: `${name} to see the new topic`,
                state: () => `topic is ${JSON.stringify(topicOf(room))}`,
            });
            const ev = room.currentState.getStateEvents("m.room.topic", "");
            assert.equal(ev.getId(), res.event_id, `${name}'s topic event ID`);
            assert.equal(ev.getSender(), uid("alice"));
        }
    });

    step(
        `6. after ~60 more messages, carol joins on B: her initial sync holds the room's backchat (${BACKCHAT_LIMIT}); scrollback reaches m.room.create`,
        async (t) => {
            // In phases, each seen by the other side before the next, so that
            // both servers hold one order of the messages.
            const batch = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix} ${i + 1}`);
            await sendAndSee("alice", batch("backchat A", 30), ["bob"]);
            await sendAndSee("bob", batch("backchat B", 10), ["alice"]);
            await sendAndSee("alice", batch("backchat A, later", 20), ["bob"]);

            const carol = await makeUser("carol", B);
            await carol.joinRoom(alias);
            // The SDK always puts its initialSyncLimit (default 8) in the
            // filter of its first /sync; undefined leaves room.timeline.limit
            // out, as a client that lets the server choose would, so the
            // room's backchat setting applies (README "Backchat").
            await startSyncing("carol", { initialSyncLimit: undefined });
            const firstSync = rawSyncs("carol").find((b) => b?.rooms?.join?.[roomId]);
            assert.equal(firstSync.rooms.join[roomId].timeline.limited, true, "the initial sync timeline is limited");
            assert.equal(typeof firstSync.rooms.join[roomId].timeline.prev_batch, "string", "with a prev_batch token");

            const room = carol.getRoom(roomId);
            assert.ok(room, "carol has the room");
            assert.equal(room.getMyMembership(), "join");
            assert.equal(room.name, ROOM_NAME);
            assert.equal(topicOf(room), NEW_TOPIC);
            assert.equal(room.getJoinedMemberCount(), 3);

            // The backchat: carol's join and the 24 messages before it.
            const initial = room.getLiveTimeline().getEvents();
            assert.equal(initial.length, BACKCHAT_LIMIT, `carol's live timeline after the initial sync: ${describeEvs(initial)}`);
            const lastEv = initial[initial.length - 1];
            assert.equal(lastEv.getType(), "m.room.member");
            assert.equal(lastEv.getStateKey(), uid("carol"));
            const tail = sent.slice(sent.length - (BACKCHAT_LIMIT - 1));
            assert.deepEqual(initial.slice(0, -1).map((e) => e.getId()), tail.map((m) => m.eventId), "the last messages, in order");
            assert.equal(typeof room.oldState.paginationToken, "string", "a back-pagination token");

            // Back to the room's creation, which happened on A before B was in
            // the room.
            let pages = 0;
            while (room.oldState.paginationToken !== null) {
                const lenBefore = room.getLiveTimeline().getEvents().length;
                await carol.scrollback(room, 30);
                pages++;
                assert.ok(
                    room.getLiveTimeline().getEvents().length > lenBefore || room.oldState.paginationToken === null,
                    `scrollback page ${pages} added no event but left a token ${room.oldState.paginationToken}`,
                );
                assert.ok(pages <= 20, "the start of the room is reached within 20 pages");
            }
            // B asked A for it: right after bob's join (B backfills the
            // backchat then) or during the scrollback.
            const { diff } = await expectFederation(A, [`GET ${FED}/v1/backfill/{roomId}`], () => {}, aCountsBeforeJoin);
            t.diagnostic(`A's backfill answers since bob's join: ${diff[`GET ${FED}/v1/backfill/{roomId}`]}`);
            const all = room.getLiveTimeline().getEvents();
            t.diagnostic(`carol back-paginated ${pages} page(s); her timeline holds ${all.length} events`);
            const ids = all.map((e) => e.getId());
            assert.equal(new Set(ids).size, ids.length, "no event twice in carol's timeline");
            assert.equal(all[0].getType(), "m.room.create", `the timeline starts with the creation event: ${describeEvs(all.slice(0, 5))}`);
            assert.equal(all[0].getSender(), uid("alice"));
            const msgs = all.filter((e) => e.getType() === "m.room.message");
            assert.deepEqual(msgs.map((e) => e.getId()), sent.map((m) => m.eventId), "every message exactly once, in order");
            assert.deepEqual(msgs.map((e) => e.getSender()), sent.map((m) => uid(m.sender)));
            const joins = all.filter((e) => e.getType() === "m.room.member" && e.getContent().membership === "join").map((e) => e.getStateKey());
            assert.deepEqual(joins, [uid("alice"), uid("bob"), uid("carol")], "the three joins, in order");
            const topics = all.filter((e) => e.getType() === "m.room.topic").map((e) => e.getContent().topic);
            assert.deepEqual(topics, [ROOM_TOPIC, NEW_TOPIC], "both topics");
            assert.ok(all.some((e) => e.getType() === "org.persistentchat.backchat"), "the backchat setting event");

            // On the wire: /sync and the /messages pages never repeat an event.
            const wire = [
                ...firstSync.rooms.join[roomId].timeline.events.map((e) => e.event_id),
                ...rawMessages("carol").flatMap((p) => p.body.chunk.map((e) => e.event_id)),
            ];
            assert.deepEqual(wire.filter((id, i) => wire.indexOf(id) !== i), [], "no event delivered twice by /sync + /messages");

            // alice sees carol's join through A.
            await until(() => clients.alice.getRoom(roomId).getJoinedMemberCount() === 3, { what: "alice to see carol joined" });
            await sendAndSee("carol", ["carol here, late"], ["alice", "bob"]);
        },
        120000,
    );

    step(
        `7. erin on B is the first of B in a room with ${QUIET_MESSAGES} messages on A: her initial sync holds its backchat, scrollback reaches m.room.create`,
        async (t) => {
            const quietAlias = `#quiet:${A.serverName}`;
            const { room_id: quiet } = await clients.alice.createRoom({
                name: "Quiet room",
                preset: sdk.Preset.PublicChat,
                room_alias_name: "quiet",
                initial_state: [{ type: "org.persistentchat.backchat", state_key: "", content: { limit: BACKCHAT_LIMIT } }],
            });
            const res = await Promise.all(
                Array.from({ length: QUIET_MESSAGES }, (_, i) => clients.alice.sendTextMessage(quiet, `quiet ${i + 1}`)),
            );
            const quietSent = res.map((r) => r.event_id);
            const erin = await makeUser("erin", B);
            // B holds nothing of the room before this join: the backchat must
            // come from A.
            await expectFederation(A, [`PUT ${FED}/v2/send_join/{roomId}/{eventId}`], () => erin.joinRoom(quietAlias));
            await startSyncing("erin", { initialSyncLimit: undefined }); // the room's setting applies, as for carol
            const room = erin.getRoom(quiet);
            assert.ok(room, "erin has the room");
            const initial = room.getLiveTimeline().getEvents();
            assert.equal(initial.length, BACKCHAT_LIMIT, `erin's live timeline after the initial sync: ${describeEvs(initial)}`);
            assert.equal(initial[initial.length - 1].getStateKey(), uid("erin"), "her join last");
            assert.deepEqual(
                initial.slice(0, -1).map((e) => e.getId()),
                quietSent.slice(quietSent.length - (BACKCHAT_LIMIT - 1)),
                "the last messages sent on A, in order",
            );
            let pages = 0;
            while (room.oldState.paginationToken !== null) {
                const lenBefore = room.getLiveTimeline().getEvents().length;
                await erin.scrollback(room, 30);
                pages++;
                assert.ok(
                    room.getLiveTimeline().getEvents().length > lenBefore || room.oldState.paginationToken === null,
                    `scrollback page ${pages} added no event but left a token ${room.oldState.paginationToken}`,
                );
                assert.ok(pages <= 20, "the start of the room is reached within 20 pages");
            }
            const all = room.getLiveTimeline().getEvents();
            t.diagnostic(`erin back-paginated ${pages} page(s); her timeline holds ${all.length} events`);
            const ids = all.map((e) => e.getId());
            assert.equal(new Set(ids).size, ids.length, "no event twice in erin's timeline");
            assert.equal(all[0].getType(), "m.room.create", `the timeline starts with the creation event: ${describeEvs(all.slice(0, 5))}`);
            assert.deepEqual(all.filter((e) => e.getType() === "m.room.message").map((e) => e.getId()), quietSent, "every message once, in order");
            const joins = all.filter((e) => e.getType() === "m.room.member" && e.getContent().membership === "join").map((e) => e.getStateKey());
            assert.deepEqual(joins, [uid("alice"), uid("erin")]);
        },
        120000,
    );

    step("8. alice invites dave on B; dave sees the invite and joins", async () => {
        const dave = await makeUser("dave", B);
        await startSyncing("dave", {});
        // B signs the invite of its user (PUT /v2/invite) before A stores it.
        await expectFederation(B, [`PUT ${FED}/v2/invite/{roomId}/{eventId}`], () => clients.alice.invite(roomId, uid("dave"), "come and chat"));
        await until(() => dave.getRoom(roomId)?.getMyMembership() === "invite", {
            what: "dave to see the invite",
            state: () => `rooms ${JSON.stringify(dave.getRooms().map((r) => [r.roomId, r.getMyMembership()]))}`,
        });
        const invite = dave.getRoom(roomId).currentState.getStateEvents("m.room.member", uid("dave"));
        assert.equal(invite.getSender(), uid("alice"));
        assert.equal(invite.getContent().reason, "come and chat");
        assert.equal(dave.getRoom(roomId).name, ROOM_NAME, "the invite's room state names the room");
        await dave.joinRoom(roomId);
        await until(() => dave.getRoom(roomId)?.getMyMembership() === "join", { what: "dave's sync to show him joined" });
        for (const name of ["alice", "bob"]) {
            await until(() => clients[name].getRoom(roomId).getMember(uid("dave"))?.membership === "join", {
                what: `${name} to see dave joined`,
            });
        }
        const [m] = await sendAndSee("dave", ["dave here"], ["alice", "bob"]);
        assert.ok(m.eventId);
    });

    step("9. clients stop and both servers shut down cleanly on SIGTERM", async () => {
        for (const c of Object.values(clients)) c.stopClient();
        for (const hs of [A, B]) {
            const exit = await hs.stop({ killAfter: 15000 });
            assert.deepEqual(exit, { code: 0, signal: null }, `${hs.serverName} exit after SIGTERM`);
            const panics = hs.log.lines.filter((l) => /panic|DATA RACE/.test(l));
            assert.deepEqual(panics, [], `no panic in ${hs.serverName}'s log`);
        }
        const server5xx = httpLog.filter((e) => typeof e.status === "number" && e.status >= 500);
        assert.deepEqual(server5xx.map((e) => `${e.who} ${e.method} ${e.path} -> ${e.status} ${e.body}`), [], "no 5xx answers");
    });
});

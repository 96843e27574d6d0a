// End-to-end test: the real matrix-js-sdk (no store, no crypto) against a
// real homeserver process started by this test.
//
//   cd e2e && npm ci && HOMESERVER_BIN=/abs/path/bin/homeserver node --test --test-reporter=spec
//
// E2E_VERBOSE=1 also streams the SDK's and the server's logs; without it
// they are printed only when a step fails, with every HTTP exchange the
// clients made.
//
// The steps share state and run in order; after a failed step the rest are
// skipped, since they build on it.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as sdk from "matrix-js-sdk";

import {
    Homeserver,
    captureConsole,
    formatHttpLog,
    httpLog,
    rawMessages,
    rawSyncs,
    rawTimelineEvents,
    recordingFetch,
    sdkLog,
    unrefLongTimers,
    until,
    withTimeout,
} from "./lib/harness.mjs";

captureConsole();
unrefLongTimers();

const ROOM_NAME = "Persistent chat e2e";
const ROOM_TOPIC = "Testing the homeserver with matrix-js-sdk";
const NEW_TOPIC = "The topic, changed";
const PASSWORD = "correct horse battery staple";
const BACKCHAT = 60;
const CAROL_SYNC_LIMIT = 20;

const hs = new Homeserver(process.env.HOMESERVER_BIN);
const clients = {}; // name -> MatrixClient
const accounts = {}; // name -> {userId, deviceId, accessToken}
const live = {}; // name -> live timeline events of the room, in arrival order
const syncStates = {}; // name -> sync states seen
const echoes = new Map(); // txnId -> {event, firstId, statuses}
let roomId;
const sent = []; // {body, eventId, txnId?, sender} of every m.room.message, in order
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

function userId(localpart) {
    return `@${localpart}:${hs.serverName}`;
}

function errText(e) {
    if (!e) return String(e);
    if (e.httpStatus) return `HTTP ${e.httpStatus} ${e.errcode ?? ""} ${JSON.stringify(e.data ?? {})}`;
    return e.message ?? String(e);
}

function httpErrorsOf(who) {
    return formatHttpLog(httpLog.filter((e) => e.who === who && (typeof e.status !== "number" || e.status >= 400)).slice(-10));
}

// Registers localpart through the user-interactive auth flow of
// POST /register: a first request without auth must be answered 401 with a
// session and a flow of just m.login.dummy, then the dummy stage completes it.
async function registerWithDummyAuth(localpart) {
    const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch(`${localpart}-anon`) });
    const body = { username: localpart, password: PASSWORD, initial_device_display_name: `${localpart} e2e` };

    let uia;
    await assert.rejects(anon.registerRequest(body), (err) => {
        uia = err;
        return true;
    });
    assert.equal(uia.httpStatus, 401, `first POST /register without auth must be 401, got: ${errText(uia)}`);
    assert.equal(typeof uia.data?.session, "string", `401 body needs a session: ${JSON.stringify(uia.data)}`);
    assert.ok(Array.isArray(uia.data.flows), `401 body needs flows: ${JSON.stringify(uia.data)}`);
    assert.ok(
        uia.data.flows.some((f) => Array.isArray(f.stages) && f.stages.length === 1 && f.stages[0] === "m.login.dummy"),
        `open registration should offer the flow [m.login.dummy]: ${JSON.stringify(uia.data.flows)}`,
    );

    const res = await anon.registerRequest({ ...body, auth: { type: "m.login.dummy", session: uia.data.session } });
    assert.equal(res.user_id, userId(localpart));
    assert.equal(typeof res.access_token, "string");
    assert.ok(res.access_token.length > 0);
    assert.equal(typeof res.device_id, "string");
    return { userId: res.user_id, deviceId: res.device_id, accessToken: res.access_token };
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

async function whoamiMatches(name) {
    const who = await clients[name].whoami();
    assert.equal(who.user_id, accounts[name].userId);
    assert.equal(who.device_id, accounts[name].deviceId);
}

async function startSyncing(name, initialSyncLimit) {
    await clients[name].startClient({ initialSyncLimit });
    await until(() => syncStates[name].includes(sdk.SyncState.Prepared), {
        timeout: 20000,
        what: `${name}'s sync state PREPARED`,
        state: () => `sync states ${JSON.stringify(syncStates[name])}; recent HTTP errors:\n${httpErrorsOf(name)}`,
    });
}

function messagesFrom(name, sender) {
    return live[name].filter((e) => e.getType() === "m.room.message" && e.getSender() === userId(sender));
}

const topicOf = (room) => room?.currentState.getStateEvents("m.room.topic", "")?.getContent().topic;

describe("matrix-js-sdk against the homeserver", () => {
    before(async () => {
        try {
            await hs.start();
        } catch (e) {
            failed = "starting the homeserver";
            throw e;
        }
    });

    after(async () => {
        for (const c of Object.values(clients)) c.stopClient();
        const exit = await hs.stop();
        // The UIA 401s of /register and the 429s of rate limiting are part
        // of the scenario; anything else is worth a look even if it passed.
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
                    `# server exit: ${JSON.stringify(exit)}; data kept in ${hs.dir}\n` +
                    `# ---- homeserver log ----\n${hs.log.text()}\n` +
                    `# ---- HTTP exchanges of the clients ----\n${formatHttpLog()}\n` +
                    `# ---- matrix-js-sdk log ----\n${sdkLog.text()}\n`,
            );
        } else {
            hs.removeDataDir();
        }
    });

    step("1. alice and bob register through m.login.dummy UIA; whoami matches", async () => {
        makeClient("alice", await registerWithDummyAuth("alice"));
        makeClient("bob", await registerWithDummyAuth("bob"));
        assert.notEqual(accounts.alice.accessToken, accounts.bob.accessToken);
        await whoamiMatches("alice");
        await whoamiMatches("bob");
    });

    step("2. alice creates a public room with name and topic; bob joins it by ID", async () => {
        const res = await clients.alice.createRoom({
            name: ROOM_NAME,
            topic: ROOM_TOPIC,
            preset: sdk.Preset.PublicChat,
        });
        assert.match(res.room_id, /^!/);
        roomId = res.room_id;
        const room = await clients.bob.joinRoom(roomId);
        assert.equal(room.roomId, roomId);
        const joined = await clients.bob.getJoinedRooms();
        assert.deepEqual(joined.joined_rooms, [roomId]);
    });

    step("3. live sync: alice's messages reach bob in order, bob's reply reaches alice, local echo gets the remote ID", async () => {
        const { alice, bob } = clients;
        alice.on(sdk.RoomEvent.LocalEchoUpdated, (event, room, oldEventId, oldStatus) => {
            const e = echoes.get(event.getTxnId());
            if (e) e.statuses.push(`${oldStatus}->${event.status} (${oldEventId} -> ${event.getId()})`);
        });
        alice.on(sdk.RoomEvent.Timeline, (event, room) => {
            if (room?.roomId === roomId && event.getTxnId() && event.status !== null && !echoes.has(event.getTxnId())) {
                echoes.set(event.getTxnId(), { event, firstId: event.getId(), statuses: [] });
            }
        });
        await Promise.all([startSyncing("alice", 20), startSyncing("bob", 20)]);

        for (const name of ["alice", "bob"]) {
            const room = clients[name].getRoom(roomId);
            assert.ok(room, `${name} has the room after the initial sync`);
            assert.equal(room.getMyMembership(), "join", `${name}'s membership`);
            assert.equal(room.name, ROOM_NAME, `${name} sees the room name`);
            assert.equal(topicOf(room), ROOM_TOPIC, `${name} sees the room topic`);
            assert.equal(room.getJoinedMemberCount(), 2, `${name} sees 2 joined members`);
        }

        const run = Date.now().toString(36);
        const first = [1, 2, 3].map((i) => ({ body: `hello ${i}`, txnId: `e2e-${run}-${i}`, sender: "alice" }));
        // Sent without waiting in between: the SDK's scheduler queues them.
        const results = await Promise.all(first.map((m) => alice.sendTextMessage(roomId, m.body, m.txnId)));
        results.forEach((r, i) => {
            assert.match(r.event_id, /^\$/, "send returns an event ID");
            first[i].eventId = r.event_id;
        });
        assert.equal(new Set(results.map((r) => r.event_id)).size, 3, "three distinct event IDs");
        sent.push(...first);

        await until(() => messagesFrom("bob", "alice").length >= 3, {
            what: "bob to receive alice's 3 messages",
            state: () => `bob got ${messagesFrom("bob", "alice").length}; sync states ${JSON.stringify(syncStates.bob.slice(-5))}`,
        });
        const got = messagesFrom("bob", "alice");
        assert.deepEqual(got.map((e) => e.getContent().body), first.map((m) => m.body), "bob gets the bodies in order");
        assert.deepEqual(got.map((e) => e.getId()), first.map((m) => m.eventId), "bob gets the event IDs in order");

        // Local echo: each of alice's local events, created with a local ID,
        // is now the remote event (status null once the remote echo came).
        await until(() => first.every((m) => echoes.get(m.txnId)?.event.status === null), {
            what: "alice's local echoes to be replaced by their remote echoes",
            state: () => JSON.stringify(first.map((m) => ({ txn: m.txnId, ...echoes.get(m.txnId), event: undefined, status: echoes.get(m.txnId)?.event.status }))),
        });
        const aliceRoom = alice.getRoom(roomId);
        const aliceIds = aliceRoom.getLiveTimeline().getEvents().map((e) => e.getId());
        for (const m of first) {
            const echo = echoes.get(m.txnId);
            assert.ok(echo.firstId.startsWith("~"), `local echo starts with a local ID, got ${echo.firstId}`);
            assert.equal(echo.event.getId(), m.eventId, "local echo now carries the remote event ID");
            assert.equal(aliceRoom.findEventById(m.eventId), echo.event, "the timeline holds the local echo object itself");
            assert.equal(aliceIds.filter((id) => id === m.eventId).length, 1, "the event is in alice's timeline exactly once");
            assert.equal(echo.event.getUnsigned().transaction_id, m.txnId);
        }
        // On the wire: alice's /sync carries the transaction ID in unsigned
        // (the SDK would otherwise fill it in itself), bob's does not.
        for (const m of first) {
            const mine = rawTimelineEvents("alice", roomId).filter((e) => e.event_id === m.eventId);
            assert.ok(mine.length >= 1, `alice's raw /sync delivered ${m.eventId}`);
            assert.ok(
                mine.every((e) => e.unsigned?.transaction_id === m.txnId),
                `alice's /sync must carry unsigned.transaction_id=${m.txnId} for her own event ${m.eventId}; got unsigned=${JSON.stringify(mine.map((e) => e.unsigned))}`,
            );
            const theirs = rawTimelineEvents("bob", roomId).filter((e) => e.event_id === m.eventId);
            assert.ok(theirs.length >= 1, `bob's raw /sync delivered ${m.eventId}`);
            assert.ok(
                theirs.every((e) => e.unsigned?.transaction_id === undefined),
                `bob's /sync must not carry alice's transaction_id; got unsigned=${JSON.stringify(theirs.map((e) => e.unsigned))}`,
            );
        }

        // bob replies; alice receives it.
        const reply = {
            msgtype: "m.text",
            body: "hello alice, bob here",
            "m.relates_to": { "m.in_reply_to": { event_id: first[2].eventId } },
        };
        const r = await bob.sendMessage(roomId, reply);
        assert.match(r.event_id, /^\$/);
        sent.push({ body: reply.body, eventId: r.event_id, sender: "bob" });
        await until(() => messagesFrom("alice", "bob").length >= 1, { what: "alice to receive bob's reply" });
        const fromBob = messagesFrom("alice", "bob");
        assert.equal(fromBob.length, 1);
        assert.equal(fromBob[0].getId(), r.event_id);
        assert.equal(fromBob[0].getContent().body, reply.body);
        assert.equal(fromBob[0].replyEventId, first[2].eventId, "the reply relation survives the round trip");
    });

    step(
        `4. after ${BACKCHAT} more messages, carol joins with initialSyncLimit ${CAROL_SYNC_LIMIT} and back-paginates to the room's creation`,
        async (t) => {
            const { alice } = clients;
            const before429 = httpLog.filter((e) => e.who === "alice" && e.status === 429).length;
            const back = Array.from({ length: BACKCHAT }, (_, i) => ({ body: `backchat ${i + 1}`, sender: "alice" }));
            const results = await Promise.all(back.map((m) => alice.sendTextMessage(roomId, m.body)));
            results.forEach((r, i) => (back[i].eventId = r.event_id));
            assert.equal(new Set(results.map((r) => r.event_id)).size, BACKCHAT, "distinct event IDs");
            sent.push(...back);
            const limited = httpLog.filter((e) => e.who === "alice" && e.status === 429).length - before429;
            t.diagnostic(`alice's sends answered 429 M_LIMIT_EXCEEDED (and retried by the SDK): ${limited}`);
            const lastId = back[BACKCHAT - 1].eventId;
            await until(() => rawTimelineEvents("alice", roomId).some((e) => e.event_id === lastId), {
                what: "alice's sync to deliver her last backchat message",
            });

            const account = await registerWithDummyAuth("carol");
            // carol logs in with her password for a second device, and uses that.
            const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch("carol-anon") });
            const login = await anon.loginRequest({
                type: "m.login.password",
                identifier: { type: "m.id.user", user: "carol" },
                password: PASSWORD,
                initial_device_display_name: "carol e2e login",
            });
            assert.equal(login.user_id, userId("carol"));
            assert.equal(typeof login.access_token, "string");
            assert.notEqual(login.access_token, account.accessToken, "login makes a new access token");
            assert.notEqual(login.device_id, account.deviceId, "login makes a new device");
            const carol = makeClient("carol", { userId: login.user_id, deviceId: login.device_id, accessToken: login.access_token });
            await whoamiMatches("carol");

            await carol.joinRoom(roomId);
            await startSyncing("carol", CAROL_SYNC_LIMIT);
            const room = carol.getRoom(roomId);
            assert.ok(room, "carol has the room after her initial sync");
            assert.equal(room.getMyMembership(), "join");
            assert.equal(room.name, ROOM_NAME);
            assert.equal(topicOf(room), ROOM_TOPIC);
            assert.equal(room.getJoinedMemberCount(), 3);

            // The initial sync timeline: exactly the 20 most recent events,
            // which are the last 19 backchat messages and carol's own join.
            const initial = room.getLiveTimeline().getEvents();
            const describeEvs = (evs) => evs.map((e) => `${e.getType()}:${e.getContent().body ?? e.getStateKey() ?? ""}`).join(", ");
            assert.equal(initial.length, CAROL_SYNC_LIMIT, `carol's live timeline after the initial sync: ${describeEvs(initial)}`);
            const lastEv = initial[initial.length - 1];
            assert.equal(lastEv.getType(), "m.room.member");
            assert.equal(lastEv.getStateKey(), userId("carol"));
            assert.equal(lastEv.getContent().membership, "join");
            const expectTail = back.slice(BACKCHAT - (CAROL_SYNC_LIMIT - 1));
            assert.deepEqual(initial.slice(0, -1).map((e) => e.getId()), expectTail.map((m) => m.eventId), "the 19 before it are alice's last 19 messages");
            assert.deepEqual(initial.slice(0, -1).map((e) => e.getContent().body), expectTail.map((m) => m.body));
            const firstSync = rawSyncs("carol").find((b) => b?.rooms?.join?.[roomId]);
            assert.equal(firstSync.rooms.join[roomId].timeline.limited, true, "the initial sync timeline is limited");
            assert.equal(typeof firstSync.rooms.join[roomId].timeline.prev_batch, "string", "with a prev_batch token");
            assert.equal(typeof room.oldState.paginationToken, "string", "so the room has a back-pagination token");

            // Back-paginate until the start of the room.
            let pages = 0;
            while (room.oldState.paginationToken !== null) {
                const tokenBefore = room.oldState.paginationToken;
                const lenBefore = room.getLiveTimeline().getEvents().length;
                await carol.scrollback(room, 30);
                pages++;
                const lenAfter = room.getLiveTimeline().getEvents().length;
                assert.ok(
                    lenAfter > lenBefore || room.oldState.paginationToken === null,
                    `scrollback page ${pages} (from=${tokenBefore}) added no event but left a token ${room.oldState.paginationToken}`,
                );
                assert.ok(pages <= 20, "the start of the room is reached within 20 pages");
            }
            const all = room.getLiveTimeline().getEvents();
            t.diagnostic(`carol back-paginated ${pages} page(s); her timeline now holds ${all.length} events`);

            const ids = all.map((e) => e.getId());
            assert.equal(new Set(ids).size, ids.length, "no event twice in carol's timeline");
            assert.equal(all[0].getType(), "m.room.create", `the timeline starts with the creation event: ${describeEvs(all.slice(0, 5))}`);
            assert.equal(all[0].getSender(), userId("alice"));
            const msgs = all.filter((e) => e.getType() === "m.room.message");
            assert.deepEqual(msgs.map((e) => e.getId()), sent.map((m) => m.eventId), "every message exactly once, in order");
            assert.deepEqual(msgs.map((e) => e.getContent().body), sent.map((m) => m.body));
            assert.deepEqual(msgs.map((e) => e.getSender()), sent.map((m) => userId(m.sender)));
            const joins = all
                .filter((e) => e.getType() === "m.room.member" && e.getContent().membership === "join")
                .map((e) => e.getStateKey());
            assert.deepEqual(joins, [userId("alice"), userId("bob"), userId("carol")], "the three joins, in order");
            assert.ok(all.some((e) => e.getType() === "m.room.name" && e.getContent().name === ROOM_NAME), "the m.room.name event");

            // On the wire: the /messages pages do not overlap each other nor
            // the initial sync (the SDK would silently drop duplicates), and
            // the last page ends the history (no end token, or an empty chunk).
            const pagesRaw = rawMessages("carol");
            assert.equal(pagesRaw.length, pages, "one /messages request per scrollback");
            const wire = [
                ...firstSync.rooms.join[roomId].timeline.events.map((e) => e.event_id),
                ...pagesRaw.flatMap((p) => p.body.chunk.map((e) => e.event_id)),
            ];
            const dupes = wire.filter((id, i) => wire.indexOf(id) !== i);
            assert.deepEqual(dupes, [], "no event delivered twice by /sync + /messages");
            const lastPage = pagesRaw[pagesRaw.length - 1].body;
            assert.ok(lastPage.end === undefined || lastPage.chunk.length === 0, `the last page ends the history: end=${lastPage.end}`);
        },
        90000,
    );

    step("5. alice changes the topic; bob and carol see it through sync", async () => {
        const res = await clients.alice.sendStateEvent(roomId, "m.room.topic", { topic: NEW_TOPIC }, "");
        assert.match(res.event_id, /^\$/);
        for (const name of ["alice", "bob", "carol"]) {
            const room = clients[name].getRoom(roomId);
            await until(() => topicOf(room) === NEW_TOPIC, {
                what: `${name} to see the new topic`,
                state: () => `topic is ${JSON.stringify(topicOf(room))}`,
            });
            assert.equal(room.currentState.getStateEvents("m.room.topic", "").getId(), res.event_id, `${name}'s topic event ID`);
            assert.equal(room.currentState.getStateEvents("m.room.topic", "").getSender(), userId("alice"));
        }
        const carolLast = live.carol[live.carol.length - 1];
        assert.equal(carolLast.getId(), res.event_id, "the topic change is the last event on carol's live timeline");
    });

    step("6. clients stop and the server shuts down cleanly on SIGTERM", async () => {
        for (const name of ["alice", "bob", "carol"]) {
            clients[name].stopClient();
            assert.equal(clients[name].clientRunning, false, `${name} stopped`);
        }
        const t0 = Date.now();
        const exit = await hs.stop({ killAfter: 15000 });
        assert.deepEqual(exit, { code: 0, signal: null }, `server exit after SIGTERM (took ${Date.now() - t0} ms)`);
        const server5xx = httpLog.filter((e) => typeof e.status === "number" && e.status >= 500);
        assert.deepEqual(server5xx.map((e) => `${e.method} ${e.path} -> ${e.status} ${e.body}`), [], "no 5xx answers during the run");
        const panics = hs.log.lines.filter((l) => /panic|DATA RACE/.test(l));
        assert.deepEqual(panics, [], "no panic in the server log");
    });
});

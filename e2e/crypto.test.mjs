// End-to-end encryption with the real matrix-js-sdk and its Rust crypto
// (the WebAssembly build @matrix-org/matrix-sdk-crypto-wasm, in memory:
// initRustCrypto({useIndexedDB: false})) against a real homeserver process.
//
//   cd e2e && npm ci && HOMESERVER_BIN=/abs/path/bin/homeserver node --test crypto.test.mjs
//
// What the server must get right for this: /keys/upload, /keys/query,
// /keys/claim, device_lists and one-time key counts in /sync, /sendToDevice
// and to_device in /sync. Nothing here uses cross-signing or key backup.
//
// The steps share state and run in order; after a failed step the rest are
// skipped. On a failure the server's log, the clients' HTTP exchanges and
// the SDK's log are printed.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as sdk from "matrix-js-sdk";
import { AllDevicesIsolationMode } from "matrix-js-sdk/lib/crypto-api/index.js";

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
const MEGOLM = "m.megolm.v1.aes-sha2";

const hs = new Homeserver(process.env.HOMESERVER_BIN);
const clients = {}; // name -> MatrixClient (alice2 is alice's second device)
const accounts = {}; // name -> {userId, deviceId, accessToken}
const live = {}; // name -> live timeline events of the room, in arrival order
const syncStates = {}; // name -> sync states seen
let roomId;
let failed = null;

function step(name, fn, timeout = 45000) {
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

const userId = (localpart) => `@${localpart}:${hs.serverName}`;

function errText(e) {
    if (!e) return String(e);
    if (e.httpStatus) return `HTTP ${e.httpStatus} ${e.errcode ?? ""} ${JSON.stringify(e.data ?? {})}`;
    return e.message ?? String(e);
}

function httpErrorsOf(who) {
    return formatHttpLog(httpLog.filter((e) => e.who === who && (typeof e.status !== "number" || e.status >= 400)).slice(-10));
}

// A client with the Rust crypto in memory, syncing.
async function startCryptoClient(name, account) {
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
    await client.initRustCrypto({ useIndexedDB: false });
    const crypto = client.getCrypto();
    assert.ok(crypto, `${name} has a crypto API after initRustCrypto`);
    // Keys go to every device of the room's members, verified or not (the
    // SDK's default; set here so the scenario does not depend on it).
    crypto.globalBlacklistUnverifiedDevices = false;
    crypto.setDeviceIsolationMode(new AllDevicesIsolationMode(false));
    await client.startClient({ initialSyncLimit: 20 });
    await until(() => syncStates[name].includes(sdk.SyncState.Prepared), {
        timeout: 30000,
        what: `${name}'s sync state PREPARED`,
        state: () => `sync states ${JSON.stringify(syncStates[name])}; recent HTTP errors:\n${httpErrorsOf(name)}`,
    });
    return client;
}

// The device keys the server holds for who's device, by /keys/query as
// another user (asker) sees them.
async function serverDeviceKeys(asker, who) {
    const res = await clients[asker].http.authedRequest(sdk.Method.Post, "/keys/query", undefined, {
        device_keys: { [accounts[who].userId]: [] },
    });
    return res.device_keys?.[accounts[who].userId]?.[accounts[who].deviceId];
}

// The events of name's live timeline that were sent encrypted by sender,
// with what became of them.
function encryptedFrom(name, sender) {
    return live[name].filter((e) => e.getWireType() === "m.room.encrypted" && e.getSender() === userId(sender));
}

function describeEncrypted(evs) {
    return JSON.stringify(
        evs.map((e) => ({
            id: e.getId(),
            type: e.getType(),
            decrypting: e.isBeingDecrypted(),
            failure: e.isDecryptionFailure() ? `${e.decryptionFailureReason} ${e.getContent()?.body ?? ""}` : undefined,
            body: e.getClearContent()?.body,
        })),
    );
}

// Waits until name has decrypted every one of bodies (sent by sender, in
// order) and checks the clear events.
async function awaitDecrypted(name, sender, bodies, sentIds) {
    await until(
        () => {
            const evs = encryptedFrom(name, sender);
            const clear = evs.filter((e) => !e.isBeingDecrypted() && !e.isDecryptionFailure() && e.getClearContent());
            return sentIds.every((id) => clear.some((e) => e.getId() === id));
        },
        {
            timeout: 30000,
            what: `${name} to decrypt ${sender}'s ${bodies.length} message(s)`,
            state: () => `${name}'s encrypted events from ${sender}: ${describeEncrypted(encryptedFrom(name, sender))}; recent HTTP errors:\n${httpErrorsOf(name)}`,
        },
    );
    const evs = encryptedFrom(name, sender).filter((e) => sentIds.includes(e.getId()));
    assert.deepEqual(evs.map((e) => e.getId()), sentIds, `${name} gets ${sender}'s events once each, in order`);
    for (const [i, e] of evs.entries()) {
        assert.equal(e.getType(), "m.room.message", "the clear type");
        assert.equal(e.getClearContent().body, bodies[i], "the clear body");
        assert.equal(e.getWireContent().algorithm, MEGOLM, "sent with megolm");
        assert.equal(typeof e.getWireContent().ciphertext, "string", "the wire content is ciphertext");
        assert.ok(!JSON.stringify(e.getWireContent()).includes(bodies[i]), "the body is not on the wire in clear");
        assert.equal(e.isEncrypted(), true);
    }
    return evs;
}

async function sendAll(name, bodies) {
    const ids = [];
    // One at a time, so the order on the server is the order sent.
    for (const body of bodies) {
        const r = await clients[name].sendTextMessage(roomId, body);
        assert.match(r.event_id, /^\$/);
        ids.push(r.event_id);
    }
    return ids;
}

async function deviceIdsSeenBy(name, who) {
    const map = await clients[name].getCrypto().getUserDeviceInfo([userId(who)], true);
    return [...(map.get(userId(who))?.keys() ?? [])].sort();
}

describe("matrix-js-sdk with Rust crypto against the homeserver", () => {
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
        // The UIA 401s of /register, 429s of rate limiting and the 404 of
        // the key backup version (none exists) are part of the scenario.
        const odd = httpLog.filter(
            (e) =>
                typeof e.status === "number" &&
                e.status >= 400 &&
                !(e.status === 401 && e.method === "POST" && e.path.endsWith("/register")) &&
                !(e.status === 404 && e.path.includes("/room_keys/version")) &&
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
        assert.ok(!/panic/i.test(hs.log.text()), "no panic in the server's log");
        assert.equal(exit?.code, 0, `the server exits 0 on SIGTERM: ${JSON.stringify(exit)}`);
        assert.deepEqual(httpLog.filter((e) => typeof e.status === "number" && e.status >= 500).map((e) => `${e.method} ${e.path} ${e.status}`), [], "no 5xx");
    });

    step("1. alice and bob register and start Rust crypto; their device keys and one-time keys reach the server", async () => {
        for (const name of ["alice", "bob"]) {
            const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch(`${name}-anon`) });
            await startCryptoClient(name, await registerWithDummyAuth(anon, name, PASSWORD));
        }
        for (const [asker, who] of [["bob", "alice"], ["alice", "bob"]]) {
            const keys = await until(() => serverDeviceKeys(asker, who), { what: `${who}'s device keys on the server` });
            assert.equal(keys.user_id, accounts[who].userId);
            assert.equal(keys.device_id, accounts[who].deviceId);
            assert.ok(keys.algorithms.includes(MEGOLM), `${who}'s device supports megolm: ${JSON.stringify(keys.algorithms)}`);
            const own = await clients[who].getCrypto().getOwnDeviceKeys();
            assert.equal(keys.keys[`ed25519:${accounts[who].deviceId}`], own.ed25519, "the ed25519 key the SDK holds");
            assert.equal(keys.keys[`curve25519:${accounts[who].deviceId}`], own.curve25519, "the curve25519 key the SDK holds");
        }
        // The SDK uploads one-time keys after it sees their count in /sync.
        for (const name of ["alice", "bob"]) {
            await until(() => rawSyncs(name).some((b) => (b?.device_one_time_keys_count?.signed_curve25519 ?? 0) > 0), {
                what: `${name}'s /sync to count her uploaded one-time keys`,
                state: () => JSON.stringify(rawSyncs(name).map((b) => b?.device_one_time_keys_count)),
            });
            // and the fallback key it uploaded, not used yet.
            await until(() => rawSyncs(name).some((b) => b?.device_unused_fallback_key_types?.includes("signed_curve25519")), {
                what: `${name}'s /sync to list her unused fallback key`,
                state: () => JSON.stringify(rawSyncs(name).map((b) => b?.device_unused_fallback_key_types)),
            });
        }
    });

    step("2. alice creates a room with m.room.encryption (megolm); bob joins it", async () => {
        const res = await clients.alice.createRoom({
            name: "Encrypted e2e",
            preset: sdk.Preset.PublicChat,
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
        });
        roomId = res.room_id;
        await clients.bob.joinRoom(roomId);
        for (const name of ["alice", "bob"]) {
            await until(() => clients[name].getRoom(roomId)?.getJoinedMemberCount() === 2, {
                what: `${name} to see both members joined`,
            });
            assert.equal(await clients[name].getCrypto().isEncryptionEnabledInRoom(roomId), true, `${name}'s crypto knows the room is encrypted`);
        }
    });

    step("3. alice's encrypted messages reach bob, who decrypts them; bob's reply is decrypted by alice", async () => {
        const bodies = ["secret 1", "secret 2", "secret 3"];
        const ids = await sendAll("alice", bodies);
        await awaitDecrypted("bob", "alice", bodies, ids);
        // The room key went to bob's device as an Olm to-device message.
        const toDevice = rawSyncs("bob").flatMap((b) => b?.to_device?.events ?? []);
        assert.ok(
            toDevice.some((e) => e.type === "m.room.encrypted" && e.sender === userId("alice") && e.content?.algorithm === "m.olm.v1.curve25519-aes-sha2"),
            `bob's /sync carried an Olm to-device message from alice: ${JSON.stringify(toDevice.map((e) => [e.type, e.sender, e.content?.algorithm]))}`,
        );

        // On the wire: alice claimed a one-time key of bob's device and sent
        // the room key to it; the messages went as m.room.encrypted.
        const ok = (who, method, re) => httpLog.some((e) => e.who === who && e.method === method && re.test(e.path) && e.status === 200);
        assert.ok(ok("alice", "POST", /\/keys\/claim$/), "alice claimed a one-time key");
        assert.ok(ok("alice", "PUT", /\/sendToDevice\/m\.room\.encrypted\//), "alice sent an encrypted to-device message");
        assert.ok(ok("alice", "PUT", /\/rooms\/[^/]+\/send\/m\.room\.encrypted\//), "alice sent m.room.encrypted events");
        assert.ok(!httpLog.some((e) => e.who === "alice" && /\/send\/m\.room\.message\//.test(e.path)), "nothing went unencrypted");

        const reply = ["hello alice, bob here (encrypted)"];
        const replyIds = await sendAll("bob", reply);
        await awaitDecrypted("alice", "bob", reply, replyIds);
    });

    step("4. alice logs in a second device; bob's client sees it and it decrypts bob's later messages", async () => {
        const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch("alice2-anon") });
        const login = await anon.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: "alice" },
            password: PASSWORD,
            initial_device_display_name: "alice second device",
        });
        assert.equal(login.user_id, userId("alice"));
        assert.notEqual(login.device_id, accounts.alice.deviceId);
        await startCryptoClient("alice2", { userId: login.user_id, deviceId: login.device_id, accessToken: login.access_token });

        // bob learns of the new device through device_lists.changed in his
        // /sync, and downloads its keys.
        const want = [accounts.alice.deviceId, login.device_id].sort();
        await until(async () => JSON.stringify(await deviceIdsSeenBy("bob", "alice")) === JSON.stringify(want), {
            timeout: 30000,
            what: "bob's client to know both of alice's devices",
            state: () =>
                `bob's /sync device_lists: ${JSON.stringify(rawSyncs("bob").map((b) => b?.device_lists).filter(Boolean))}; recent HTTP errors:\n${httpErrorsOf("bob")}`,
        });
        assert.ok(
            rawSyncs("bob").some((b) => b?.device_lists?.changed?.includes(userId("alice"))),
            "bob's /sync said alice's device list changed",
        );
        const dev = (await clients.bob.getCrypto().getUserDeviceInfo([userId("alice")])).get(userId("alice")).get(login.device_id);
        assert.equal(dev.displayName, "alice second device");
        assert.equal(dev.getIdentityKey(), (await clients.alice2.getCrypto().getOwnDeviceKeys()).curve25519);

        await until(() => clients.alice2.getRoom(roomId)?.getMyMembership() === "join", { what: "alice2 to have the room" });
        const bodies = ["for both of alice's devices 1", "for both of alice's devices 2"];
        const ids = await sendAll("bob", bodies);
        await awaitDecrypted("alice2", "bob", bodies, ids);
        // The first device still decrypts them too.
        await awaitDecrypted("alice", "bob", bodies, ids);

        // And alice's second device can write: bob and alice's first device
        // decrypt it.
        const fromSecond = ["written on alice's second device"];
        const secondIds = await sendAll("alice2", fromSecond);
        await awaitDecrypted("bob", "alice", fromSecond, secondIds);
    });

    step("5. alice's second device logs out; bob's client drops it and alice's first device still decrypts", async () => {
        const gone = accounts.alice2.deviceId;
        const changedBefore = rawSyncs("bob").filter((b) => b?.device_lists?.changed?.includes(userId("alice"))).length;
        await clients.alice2.logout(true);
        delete clients.alice2; // stopped by logout
        assert.equal(await serverDeviceKeys("bob", "alice2"), undefined, "the server no longer lists the logged-out device's keys");
        await until(async () => JSON.stringify(await deviceIdsSeenBy("bob", "alice")) === JSON.stringify([accounts.alice.deviceId]), {
            timeout: 30000,
            what: `bob's client to forget alice's logged-out device ${gone}`,
            state: () => `bob's /sync device_lists: ${JSON.stringify(rawSyncs("bob").map((b) => b?.device_lists).filter(Boolean))}`,
        });
        assert.ok(
            rawSyncs("bob").filter((b) => b?.device_lists?.changed?.includes(userId("alice"))).length > changedBefore,
            "bob's /sync said alice's device list changed again",
        );
        const bodies = ["after the logout"];
        const ids = await sendAll("bob", bodies);
        await awaitDecrypted("alice", "bob", bodies, ids);
    });

    step("6. carol, a new user with Rust crypto, joins: alice's /sync lists her as changed, and alice's next message reaches her decryptable", async () => {
        const n = rawSyncs("alice").length;
        const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch("carol-anon") });
        await startCryptoClient("carol", await registerWithDummyAuth(anon, "carol", PASSWORD));
        await clients.carol.joinRoom(roomId);
        await until(() => rawSyncs("alice").slice(n).some((b) => b?.device_lists?.changed?.includes(userId("carol"))), {
            what: "alice's /sync to list carol in device_lists.changed once they share a room",
            state: () => `alice's /sync device_lists since: ${JSON.stringify(rawSyncs("alice").slice(n).map((b) => b?.device_lists).filter(Boolean))}`,
        });
        await until(() => clients.alice.getRoom(roomId)?.getJoinedMemberCount() === 3, { what: "alice to see carol joined" });
        const bodies = ["welcome carol"];
        const ids = await sendAll("alice", bodies);
        await awaitDecrypted("carol", "alice", bodies, ids);
        await awaitDecrypted("bob", "alice", bodies, ids);
    });

    step("7. bob leaves the only room he shares with alice: her /sync lists him in device_lists.left", async () => {
        const n = rawSyncs("alice").length;
        await clients.bob.leave(roomId);
        await until(() => rawSyncs("alice").slice(n).some((b) => b?.device_lists?.left?.includes(userId("bob"))), {
            timeout: 20000,
            what: "alice's /sync to list bob in device_lists.left",
            state: () => `alice's /sync device_lists since: ${JSON.stringify(rawSyncs("alice").slice(n).map((b) => b?.device_lists).filter(Boolean))}`,
        });
        // alice's client sees the leave, and her next message goes in a new
        // megolm session, which carol decrypts.
        await until(() => clients.alice.getRoom(roomId)?.getJoinedMemberCount() === 2, { what: "alice to see bob gone" });
        const before = encryptedFrom("carol", "alice").at(-1).getWireContent().session_id;
        const bodies = ["bob has gone"];
        const ids = await sendAll("alice", bodies);
        const [ev] = await awaitDecrypted("carol", "alice", bodies, ids);
        assert.notEqual(ev.getWireContent().session_id, before, "a new megolm session after a member left");
    });
});

// End-to-end encryption with the real matrix-js-sdk and its Rust crypto
// (the WebAssembly build @matrix-org/matrix-sdk-crypto-wasm, in memory:
// initRustCrypto({useIndexedDB: false})) against a real homeserver process.
//
//   cd e2e && npm ci && HOMESERVER_BIN=/abs/path/bin/homeserver node --test crypto.test.mjs
//
// What the server must get right for this: /keys/upload, /keys/query,
// /keys/claim, device_lists and one-time key counts in /sync, /sendToDevice
// and to_device in /sync; then cross-signing (/keys/device_signing/upload
// with user-interactive auth, /keys/signatures/upload, the keys and
// signatures in /keys/query), secret storage in account data, the key
// backup (/room_keys/version, /room_keys/keys) and dehydrated devices
// (MSC3814).
//
// The steps share state and run in order; after a failed step the rest are
// skipped. On a failure the server's log, the clients' HTTP exchanges and
// the SDK's log are printed.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as sdk from "matrix-js-sdk";
import {
    AllDevicesIsolationMode,
    CryptoEvent,
    VerificationPhase,
    VerificationRequestEvent,
    VerifierEvent,
} from "matrix-js-sdk/lib/crypto-api/index.js";

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
const sent = []; // {id, body, sender} of every message sent, in order
// Secret storage keys each user's clients know (key ID -> private key): the
// SDK's cryptoCallbacks read them, as an app would ask for the recovery key.
const secretKeys = { alice: new Map(), bob: new Map(), carol: new Map() };
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
    const keys = secretKeys[name.replace(/\d+$/, "")];
    const client = sdk.createClient({
        baseUrl: hs.baseUrl,
        userId: account.userId,
        deviceId: account.deviceId,
        accessToken: account.accessToken,
        fetchFn: recordingFetch(name),
        cryptoCallbacks: {
            getSecretStorageKey: async ({ keys: wanted }) => {
                const id = Object.keys(wanted).find((k) => keys.has(k));
                return id ? [id, keys.get(id)] : null;
            },
            cacheSecretStorageKey: (keyId, _info, key) => keys.set(keyId, key),
        },
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
        sent.push({ id: r.event_id, body, sender: userId(name.replace(/\d+$/, "")) });
    }
    return ids;
}

async function deviceIdsSeenBy(name, who) {
    const map = await clients[name].getCrypto().getUserDeviceInfo([userId(who)], true);
    return [...(map.get(userId(who))?.keys() ?? [])].sort();
}

// The user-interactive auth of /keys/device_signing/upload as an app does
// it: try without auth; on a 401 offering m.login.password, first a wrong
// password (which must be refused with a fresh 401 M_FORBIDDEN), then the
// right one in the same session. uia records what happened.
function passwordAuth(name, uia) {
    return async (makeRequest) => {
        try {
            await makeRequest(null);
            uia.push("no auth needed");
            return;
        } catch (e) {
            if (e.httpStatus !== 401 || typeof e.data?.session !== "string") throw e;
            assert.ok(
                e.data.flows?.some((f) => f.stages?.length === 1 && f.stages[0] === "m.login.password"),
                `the 401 offers m.login.password: ${JSON.stringify(e.data)}`,
            );
            uia.push("401 with a session");
            const auth = (password) => ({
                type: "m.login.password",
                identifier: { type: "m.id.user", user: name },
                password,
                session: e.data.session,
            });
            try {
                await makeRequest(auth("not the password"));
                assert.fail("a wrong password was accepted");
            } catch (e2) {
                if (e2.code === "ERR_ASSERTION") throw e2;
                assert.equal(e2.httpStatus, 401, `a wrong password: ${errText(e2)}`);
                assert.equal(e2.data?.errcode, "M_FORBIDDEN", `a wrong password: ${errText(e2)}`);
                uia.push("wrong password refused");
            }
            await makeRequest(auth(PASSWORD));
            uia.push("password accepted");
        }
    };
}

// A new device of a user with secret storage imports the cross-signing
// keys from it and signs itself (bootstrapCrossSigning). The import needs
// the user's public cross-signing keys, which the device downloads
// (/keys/query) after its first sync: it waits for them, as an app waits
// before offering to verify.
async function crossSignFromSecretStorage(name) {
    const crypto = clients[name].getCrypto();
    await until(async () => (await crypto.getCrossSigningStatus()).publicKeysOnDevice, {
        what: `${name} to download the cross-signing public keys`,
        state: () => `recent HTTP: ${formatHttpLog(httpLog.filter((e) => e.who === name).slice(-5))}`,
    });
    await crypto.bootstrapCrossSigning({});
    assert.equal(await crypto.isCrossSigningReady(), true, `${name}'s cross-signing is ready`);
}

async function serverQuery(asker, who) {
    return clients[asker].http.authedRequest(sdk.Method.Post, "/keys/query", undefined, { device_keys: { [userId(who)]: [] } });
}

// The events of the room on name's live timeline (from the initial sync
// and later), those that were sent encrypted.
function timelineEncrypted(name) {
    return (clients[name].getRoom(roomId)?.getLiveTimeline().getEvents() ?? []).filter((e) => e.getWireType() === "m.room.encrypted");
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
                // isDehydrationSupported: M_NOT_FOUND means supported, with
                // no dehydrated device yet.
                !(e.status === 404 && e.path.endsWith("/org.matrix.msc3814.v1/dehydrated_device") && e.body?.includes("M_NOT_FOUND")) &&
                // The UIA 401s of replacing cross-signing keys (one of them
                // for the wrong password, on purpose) and the 404s of
                // account data the SDK looks for before secret storage
                // exists.
                !(e.status === 401 && e.path.endsWith("/keys/device_signing/upload")) &&
                !(e.status === 404 && /\/account_data\/m\.(secret_storage|cross_signing|megolm_backup)/.test(e.path)) &&
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
        // The SDK uploads carol's device keys in the background after her
        // first sync; joining first would let alice look her up before
        // they exist and encrypt her next message for nobody (correctly:
        // keys are not shared again for messages already sent). An app
        // uploads at start-up, well before the user joins anything.
        await until(() => serverDeviceKeys("alice", "carol"), { what: "carol's device keys on the server" });
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

    step("8. alice and bob bootstrap cross-signing: the first upload needs no auth, resetting alice's keys asks for her password", async () => {
        await clients.bob.joinRoom(roomId); // back in a room with alice, so his client tracks her keys
        await until(() => clients.alice.getRoom(roomId)?.getJoinedMemberCount() === 3, { what: "alice to see bob back" });
        const uia = { alice: [], bob: [] };
        for (const name of ["alice", "bob"]) {
            const crypto = clients[name].getCrypto();
            assert.equal(await crypto.isCrossSigningReady(), false, `${name} has no cross-signing yet`);
            await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordAuth(name, uia[name]) });
            assert.deepEqual(uia[name], ["no auth needed"], `${name}'s first upload of cross-signing keys needs no UIA (MSC3967)`);
            assert.equal(await crypto.isCrossSigningReady(), true, `${name}'s cross-signing is ready`);
        }
        // A reset replaces keys the server holds: user-interactive auth.
        const oldMaster = await clients.alice.getCrypto().getCrossSigningKeyId();
        uia.alice = [];
        await clients.alice.getCrypto().bootstrapCrossSigning({
            setupNewCrossSigning: true,
            authUploadDeviceSigningKeys: passwordAuth("alice", uia.alice),
        });
        assert.deepEqual(uia.alice, ["401 with a session", "wrong password refused", "password accepted"]);
        const master = await clients.alice.getCrypto().getCrossSigningKeyId();
        assert.notEqual(master, oldMaster, "a new master key");

        // The server holds the new keys, and alice's device signed by her
        // new self-signing key.
        const q = await serverQuery("bob", "alice");
        const a = userId("alice");
        assert.deepEqual(Object.values(q.master_keys?.[a]?.keys ?? {}), [master], "the master key the SDK made");
        const ssk = await clients.alice.getCrypto().getCrossSigningKeyId("self_signing");
        assert.deepEqual(Object.values(q.self_signing_keys?.[a]?.keys ?? {}), [ssk], "the self-signing key the SDK made");
        assert.equal(q.user_signing_keys?.[a], undefined, "alice's user-signing key is hers only");
        const own = await serverQuery("alice", "alice");
        assert.ok(own.user_signing_keys?.[a], "alice sees her own user-signing key");
        const dev = q.device_keys[a][accounts.alice.deviceId];
        assert.ok(dev.signatures[a][`ed25519:${ssk}`], `alice's device is signed by her self-signing key: ${JSON.stringify(dev.signatures)}`);
        assert.ok(q.master_keys[a].signatures[a][`ed25519:${accounts.alice.deviceId}`], "her master key is signed by her device");
    });

    step("9. bob sees alice's device signed by her; after SAS verification each trusts the other's identity and devices", async () => {
        const a = userId("alice");
        const b = userId("bob");
        // bob's client learns of the new keys through device_lists.changed.
        await until(async () => (await clients.bob.getCrypto().getDeviceVerificationStatus(a, accounts.alice.deviceId))?.signedByOwner, {
            timeout: 30000,
            what: "bob's client to see alice's device signed by her self-signing key",
        });
        let st = await clients.bob.getCrypto().getDeviceVerificationStatus(a, accounts.alice.deviceId);
        assert.equal(st.crossSigningVerified, false, "not verified by bob yet");
        assert.equal((await clients.bob.getCrypto().getUserVerificationStatus(a)).isCrossSigningVerified(), false);

        // SAS over to-device messages, both sides confirming the emoji
        // (after comparing them).
        const received = new Promise((resolve) => clients.alice.once(CryptoEvent.VerificationRequestReceived, resolve));
        const bobReq = await clients.bob.getCrypto().requestDeviceVerification(a, accounts.alice.deviceId);
        const aliceReq = await received;
        assert.equal(aliceReq.otherUserId, b);
        await aliceReq.accept();
        await until(() => bobReq.phase === VerificationPhase.Ready, { what: "bob's request to be ready", state: () => `phase ${bobReq.phase}` });
        const emoji = {};
        const runVerifier = (name, verifier) => {
            verifier.on(VerifierEvent.ShowSas, (sas) => {
                emoji[name] = sas.sas.emoji.map((e) => e[1]);
                // Confirm once both sides show theirs, and only if equal.
                until(() => emoji.alice && emoji.bob, { what: "both sides' emoji" }).then(() => {
                    if (JSON.stringify(emoji.alice) === JSON.stringify(emoji.bob)) sas.confirm();
                    else sas.mismatch();
                });
            });
            return verifier.verify();
        };
        const bobVerifier = await bobReq.startVerification("m.sas.v1");
        await until(() => aliceReq.verifier, { what: "alice's side of the SAS", state: () => `phase ${aliceReq.phase}` });
        await Promise.all([runVerifier("bob", bobVerifier), runVerifier("alice", aliceReq.verifier)]);
        assert.equal(emoji.alice.length, 7, "seven emoji");
        assert.deepEqual(emoji.alice, emoji.bob, "both sides showed the same emoji");
        assert.equal(bobReq.phase, VerificationPhase.Done);

        // Each signed the other's master key with their user-signing key
        // (/keys/signatures/upload, without failures).
        for (const [name, other] of [["bob", "alice"], ["alice", "bob"]]) {
            await until(async () => (await clients[name].getCrypto().getUserVerificationStatus(userId(other))).isCrossSigningVerified(), {
                timeout: 30000,
                what: `${name} to trust ${other}'s identity`,
            });
            const usk = await clients[name].getCrypto().getCrossSigningKeyId("user_signing");
            const q = await serverQuery(name, other);
            assert.ok(
                q.master_keys[userId(other)].signatures?.[userId(name)]?.[`ed25519:${usk}`],
                `the server returns ${name}'s signature of ${other}'s master key to ${name}: ${JSON.stringify(q.master_keys[userId(other)].signatures)}`,
            );
        }
        assert.ok(
            httpLog.some((e) => e.who === "bob" && e.path.endsWith("/keys/signatures/upload") && e.status === 200),
            "bob uploaded his signature",
        );
        st = await clients.bob.getCrypto().getDeviceVerificationStatus(a, accounts.alice.deviceId);
        assert.equal(st.crossSigningVerified, true, "bob trusts alice's device through her cross-signing");
        assert.equal(st.isVerified(), true);
        st = await clients.alice.getCrypto().getDeviceVerificationStatus(b, accounts.bob.deviceId);
        assert.equal(st.crossSigningVerified, true, "alice trusts bob's device through his cross-signing");
        // carol, who verified nobody, sees alice's device signed by alice
        // but does not trust it.
        await until(async () => (await clients.carol.getCrypto().getDeviceVerificationStatus(a, accounts.alice.deviceId))?.signedByOwner, {
            what: "carol to see alice's device signed by alice",
        });
        assert.equal((await clients.carol.getCrypto().getDeviceVerificationStatus(a, accounts.alice.deviceId)).crossSigningVerified, false);
    });

    let backupVersion;
    let backedUpSessions;
    step("10. alice sets up secret storage and a new key backup: the room keys she holds reach the server's backup", async () => {
        const crypto = clients.alice.getCrypto();
        const recoveryKey = await crypto.createRecoveryKeyFromPassphrase();
        await crypto.bootstrapSecretStorage({
            createSecretStorageKey: async () => recoveryKey,
            setupNewSecretStorage: true,
            setupNewKeyBackup: true,
        });
        assert.equal(await crypto.isSecretStorageReady(), true, "secret storage is ready");
        const info = await clients.alice.http.authedRequest(sdk.Method.Get, "/room_keys/version");
        backupVersion = info.version;
        assert.equal(info.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
        assert.equal(typeof info.auth_data.public_key, "string");
        assert.equal(await crypto.getActiveSessionBackupVersion(), backupVersion, "the SDK backs up to the version the server holds");
        // The backup key and the cross-signing keys are in secret storage,
        // encrypted, in account data.
        for (const type of ["m.secret_storage.default_key", "m.megolm_backup.v1", "m.cross_signing.master", "m.cross_signing.self_signing", "m.cross_signing.user_signing"]) {
            const ad = await clients.alice.http.authedRequest(sdk.Method.Get, `/user/${encodeURIComponent(userId("alice"))}/account_data/${type}`);
            assert.ok(ad && Object.keys(ad).length, `account data ${type}`);
        }

        // Every megolm session of the room alice can decrypt: her own
        // outbound ones and those of bob's messages.
        const mine = live.alice.filter((e) => e.getWireType() === "m.room.encrypted").map((e) => e.getWireContent().session_id);
        const want = new Set([...mine, ...encryptedFrom("carol", "alice").map((e) => e.getWireContent().session_id)]);
        assert.ok(want.size >= 3, `several sessions: ${[...want]}`);
        let got;
        await until(
            async () => {
                got = await clients.alice.http.authedRequest(sdk.Method.Get, `/room_keys/keys/${encodeURIComponent(roomId)}`, { version: backupVersion });
                return [...want].every((s) => got.sessions?.[s]);
            },
            { timeout: 30000, what: "the backup to hold every session of the room", state: () => `want ${[...want]}, got ${Object.keys(got?.sessions ?? {})}` },
        );
        backedUpSessions = Object.keys(got.sessions);
        for (const [id, s] of Object.entries(got.sessions)) {
            assert.equal(typeof s.first_message_index, "number", id);
            assert.equal(typeof s.forwarded_count, "number", id);
            assert.equal(typeof s.is_verified, "boolean", id);
            assert.deepEqual(Object.keys(s.session_data).sort(), ["ciphertext", "ephemeral", "mac"], "encrypted for the backup key");
        }
        const v = await clients.alice.http.authedRequest(sdk.Method.Get, "/room_keys/version");
        assert.ok(v.count >= backedUpSessions.length, `the version counts the keys: ${JSON.stringify(v)}`);
        assert.equal(typeof v.etag, "string");
    });

    step("11. alice logs in a new device: with her recovery key it restores the backup and decrypts older messages, and cross-signs itself", async () => {
        const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch("alice3-anon") });
        const login = await anon.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: "alice" },
            password: PASSWORD,
            initial_device_display_name: "alice restoring",
        });
        const before = new Set(sent.map((m) => m.id));
        await startCryptoClient("alice3", { userId: login.user_id, deviceId: login.device_id, accessToken: login.access_token });
        await until(() => clients.alice3.getRoom(roomId)?.getMyMembership() === "join", { what: "alice3 to have the room" });
        // Its initial sync holds messages from before it existed, which it
        // has no keys for (key requests are off in the SDK).
        const old = () => timelineEncrypted("alice3").filter((e) => before.has(e.getId()));
        await until(() => old().length >= 4 && old().every((e) => !e.isBeingDecrypted() && e.isDecryptionFailure()), {
            what: "alice3 to fail to decrypt the older messages",
            state: () => describeEncrypted(old()),
        });
        const crypto = clients.alice3.getCrypto();
        // Its cross-signing keys come from secret storage; it signs itself
        // (so it trusts the backup alice's identity signed), and bob, who
        // verified alice, trusts it.
        await crossSignFromSecretStorage("alice3");
        await until(async () => (await clients.bob.getCrypto().getDeviceVerificationStatus(userId("alice"), login.device_id))?.crossSigningVerified, {
            timeout: 30000,
            what: "bob to trust alice's new device through her cross-signing",
        });

        await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
        const check = await crypto.checkKeyBackupAndEnable();
        assert.equal(check?.backupInfo?.version, backupVersion, "the backup version the server holds");
        assert.equal(check?.trustInfo?.trusted, true, `a backup signed by alice's identity is trusted: ${JSON.stringify(check?.trustInfo)}`);
        const res = await crypto.restoreKeyBackup();
        assert.ok(res.imported >= backedUpSessions.length, `restored the room's keys: ${JSON.stringify(res)}`);
        assert.ok(httpLog.some((e) => e.who === "alice3" && /\/room_keys\/keys\?/.test(e.path) && e.status === 200), "downloaded from /room_keys/keys");
        await until(() => old().every((e) => !e.isDecryptionFailure() && e.getClearContent()), {
            timeout: 30000,
            what: "alice3 to decrypt the older messages",
            state: () => describeEncrypted(old()),
        });
        for (const e of old()) {
            assert.equal(e.getClearContent().body, sent.find((m) => m.id === e.getId()).body, "the clear body");
        }
    });

    step("12. alice dehydrates a device (MSC3814); bob's next message reaches it, and a new device of alice rehydrates it and decrypts that message", async () => {
        const crypto = clients.alice.getCrypto();
        assert.equal(await crypto.isDehydrationSupported(), true, "the server serves MSC3814");
        await crypto.startDehydration({ createNewKey: true });
        const dehydrated = await clients.alice.http.authedRequest(sdk.Method.Get, "/dehydrated_device", undefined, undefined, {
            prefix: "/_matrix/client/unstable/org.matrix.msc3814.v1",
        });
        const dehydratedId = dehydrated.device_id;
        assert.equal(typeof dehydratedId, "string");
        const keys = await until(async () => (await serverQuery("bob", "alice")).device_keys[userId("alice")][dehydratedId], {
            what: "the dehydrated device's keys on the server",
        });
        assert.equal(keys.dehydrated, true, `marked dehydrated in /keys/query: ${JSON.stringify(keys)}`);
        // bob's client learns of it (device_lists.changed) before he writes.
        await until(async () => (await deviceIdsSeenBy("bob", "alice")).includes(dehydratedId), {
            timeout: 30000,
            what: "bob's client to know alice's dehydrated device",
        });
        const bodies = ["for alice's dehydrated device"];
        const ids = await sendAll("bob", bodies);
        await awaitDecrypted("alice", "bob", bodies, ids);

        // A new device, offline when bob wrote: its initial sync has the
        // message, which it cannot decrypt until it rehydrates.
        const anon = sdk.createClient({ baseUrl: hs.baseUrl, fetchFn: recordingFetch("alice4-anon") });
        const login = await anon.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: "alice" },
            password: PASSWORD,
            initial_device_display_name: "alice rehydrating",
        });
        await startCryptoClient("alice4", { userId: login.user_id, deviceId: login.device_id, accessToken: login.access_token });
        const msg = () => timelineEncrypted("alice4").find((e) => e.getId() === ids[0]);
        await until(() => msg() && !msg().isBeingDecrypted() && msg().isDecryptionFailure(), {
            what: "alice4 to have bob's message, undecryptable",
            state: () => describeEncrypted(timelineEncrypted("alice4")),
        });
        let roomKeys = 0;
        clients.alice4.on(CryptoEvent.RehydrationProgress, (n) => (roomKeys = n));
        const completed = new Promise((resolve) => clients.alice4.once(CryptoEvent.RehydrationCompleted, resolve));
        // Like the app: it is verified with the recovery key first
        // (dehydration needs cross-signing); the dehydration key comes from
        // secret storage.
        await crossSignFromSecretStorage("alice4");
        await clients.alice4.getCrypto().startDehydration();
        await completed;
        assert.ok(roomKeys >= 1, `room keys received by the dehydrated device: ${roomKeys}`);
        assert.ok(
            httpLog.some((e) => e.who === "alice4" && e.method === "POST" && e.path.includes(`/dehydrated_device/${encodeURIComponent(dehydratedId)}/events`) && e.status === 200),
            "alice4 fetched the dehydrated device's to-device events",
        );
        await until(() => msg().getClearContent()?.body === bodies[0], {
            timeout: 30000,
            what: "alice4 to decrypt bob's message with the rehydrated key",
            state: () => describeEncrypted([msg()]),
        });
        // And it dehydrated a new device in place of the one it used.
        const next = await clients.alice4.http.authedRequest(sdk.Method.Get, "/dehydrated_device", undefined, undefined, {
            prefix: "/_matrix/client/unstable/org.matrix.msc3814.v1",
        });
        assert.notEqual(next.device_id, dehydratedId, "a new dehydrated device");
    });
});

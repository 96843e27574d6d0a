// Test harness for the end-to-end test: starts a real homeserver process on
// a free loopback port with a generated config, records the HTTP traffic of
// the matrix-js-sdk clients, and keeps the logs of both sides so they can be
// printed when a step fails (and only then).

import { spawn, execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A free TCP port on 127.0.0.1: listen on port 0, note the port the kernel
// picked, close, and hand it to the server.
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on("error", reject);
        srv.listen(0, "127.0.0.1", () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

// Polls cond() (sync or async) until it returns a truthy value, which is
// returned. On timeout it throws, naming what was awaited and, if given,
// describing the state it ended in.
export async function until(cond, { timeout = 15000, interval = 25, what = "condition", state } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) {
            let msg = `timed out after ${timeout} ms waiting for ${what}`;
            if (state) msg += `\n  state: ${typeof state === "function" ? state() : state}`;
            throw new Error(msg);
        }
        await sleep(interval);
    }
}

// Races a promise against a timer.
export function withTimeout(promise, ms, what) {
    let timer;
    const t = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// matrix-js-sdk 37's timeoutSignal() (http-api/utils.js) starts a timer for
// each request with a local timeout and never clears it: 110 s for every
// /sync long-poll. Those timers would keep this process alive for about two
// minutes after the last test. Long timers are therefore unref'd: they still
// fire while the process is busy, but do not hold it open on their own.
export function unrefLongTimers(thresholdMs = 30000) {
    const orig = globalThis.setTimeout;
    globalThis.setTimeout = function setTimeoutUnrefLong(fn, ms, ...args) {
        const timer = orig(fn, ms, ...args);
        if (ms >= thresholdMs && typeof timer?.unref === "function") timer.unref();
        return timer;
    };
}

// A bounded list of log lines.
export class Ring {
    constructor(max = 2000) {
        this.max = max;
        this.lines = [];
        this.dropped = 0;
    }
    push(line) {
        this.lines.push(line);
        if (this.lines.length > this.max) {
            this.lines.shift();
            this.dropped++;
        }
    }
    text() {
        const head = this.dropped ? `[... ${this.dropped} earlier lines dropped ...]\n` : "";
        return head + this.lines.join("\n");
    }
}

// The matrix-js-sdk logs through console.* (looked up at call time), and it
// is chatty. Its output goes to a ring buffer instead, printed on failure;
// E2E_VERBOSE=1 lets it through as well. The test itself writes its own
// diagnostics with process.stderr.write, which this does not touch.
export const sdkLog = new Ring(3000);
export function captureConsole() {
    const verbose = !!process.env.E2E_VERBOSE;
    for (const level of ["log", "debug", "info", "warn", "error", "trace"]) {
        const orig = console[level].bind(console);
        console[level] = (...args) => {
            const line = args
                .map((a) => {
                    if (typeof a === "string") return a;
                    if (a instanceof Error) return a.stack || String(a);
                    try {
                        return JSON.stringify(a);
                    } catch {
                        return String(a);
                    }
                })
                .join(" ");
            sdkLog.push(`${new Date().toISOString()} ${level}: ${line}`);
            if (verbose) orig(...args);
        };
    }
}

// Every HTTP exchange the clients make, in order: who, method, path, status,
// whether the access token went in the Authorization header (authHeader)
// or the query (queryToken), and for an error status the start of the
// response body.
export const httpLog = [];

// Raw JSON bodies of the /sync and /messages responses, per client name, so
// the test can check what went over the wire: the SDK papers over some
// server mistakes (it fills in a missing transaction_id from its pending
// events, and silently drops events it already holds).
export const rawResponses = new Map();

// A fetch function for createClient({fetchFn}) that records the traffic of
// the client named who.
export function recordingFetch(who) {
    rawResponses.set(who, []);
    return async (input, init = {}) => {
        const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
        const method = (init.method || "GET").toUpperCase();
        // How the request carried its access token: the Authorization header
        // and/or the deprecated access_token query parameter.
        const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
        const entry = {
            who,
            method,
            path: url.pathname + redactQuery(url.search),
            status: 0,
            started: Date.now(),
            authHeader: headers.has("Authorization"),
            queryToken: url.searchParams.has("access_token"),
        };
        httpLog.push(entry);
        let res;
        try {
            res = await fetch(input, init);
        } catch (e) {
            entry.status = e.name === "AbortError" ? "aborted" : `network error: ${e.message}`;
            throw e;
        }
        entry.status = res.status;
        entry.ms = Date.now() - entry.started;
        if (res.status >= 400) {
            try {
                entry.body = (await res.clone().text()).slice(0, 600);
            } catch {
                entry.body = "(unreadable)";
            }
        } else if (method === "GET") {
            const kind = url.pathname.endsWith("/sync") ? "sync" : /\/rooms\/[^/]+\/messages$/.test(url.pathname) ? "messages" : null;
            if (kind) {
                try {
                    const body = await res.clone().json();
                    rawResponses.get(who).push({ kind, query: Object.fromEntries(url.searchParams), body });
                } catch (e) {
                    entry.body = `(response is not JSON: ${e.message})`;
                }
            }
        }
        return res;
    };
}

function redactQuery(search) {
    return search.replace(/(access_token=)[^&]*/g, "$1<redacted>");
}

export function formatHttpLog(entries = httpLog) {
    return entries
        .map((e) => {
            let s = `${e.who.padEnd(6)} ${e.method.padEnd(6)} ${e.path} -> ${e.status}`;
            if (e.ms !== undefined) s += ` (${e.ms} ms)`;
            if (e.body) s += `\n         body: ${e.body}`;
            return s;
        })
        .join("\n");
}

// Raw /sync bodies received by who.
export function rawSyncs(who) {
    return (rawResponses.get(who) || []).filter((r) => r.kind === "sync").map((r) => r.body);
}

// Raw /messages responses received by who: {query, body}.
export function rawMessages(who) {
    return (rawResponses.get(who) || []).filter((r) => r.kind === "messages");
}

// Every event of who's raw /sync joined-room timelines for roomId.
export function rawTimelineEvents(who, roomId) {
    const out = [];
    for (const body of rawSyncs(who)) {
        const evs = body?.rooms?.join?.[roomId]?.timeline?.events;
        if (Array.isArray(evs)) out.push(...evs);
    }
    return out;
}

// A homeserver process with its own temporary data directory.
export class Homeserver {
    constructor(bin) {
        this.bin = bin;
        this.log = new Ring(5000);
        this.proc = null;
        this.exit = null; // {code, signal} once it has exited
        this.exited = null; // promise of this.exit
    }

    // editConfig, if given, rewrites the generated config text before the
    // server reads it (the application service test lists its registration).
    // federation, if given ({port, clientPort, metricsPort, peers}: this
    // server's ports and the names of every server of the test federation), adds a TLS
    // federation listener on 127.0.0.1:port and names the server after it,
    // as testserver.Federation does for the Go tests: self-signed
    // certificates accepted, loopback allowed, requests only to the peers.
    async start({ timeout = 30000, editConfig = (text) => text, federation } = {}) {
        if (!this.bin) throw new Error("HOMESERVER_BIN is not set: point it at the built homeserver binary");
        if (!path.isAbsolute(this.bin)) this.bin = path.resolve(this.bin);
        if (!fs.existsSync(this.bin)) throw new Error(`HOMESERVER_BIN ${this.bin} does not exist (run go build first)`);
        this.port = federation?.clientPort ?? (await freePort());
        this.serverName = federation ? `127.0.0.1:${federation.port}` : `127.0.0.1:${this.port}`;
        this.baseUrl = `http://127.0.0.1:${this.port}`;
        this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "homeserver-e2e-"));
        this.configPath = path.join(this.dir, "homeserver.yaml");
        const args = [
            "generate-config",
            "--server-name", this.serverName,
            "--listen", `127.0.0.1:${this.port}`,
            "--data-dir", path.join(this.dir, "data"),
            "--registration", "open",
        ];
        if (federation) args.push("--federation-listen", this.serverName);
        let { stdout } = await execFileP(this.bin, args);
        if (federation) stdout = federationConfig(stdout, federation.peers);
        if (federation?.metricsPort) {
            this.metricsUrl = `http://127.0.0.1:${federation.metricsPort}/metrics`;
            stdout = editLine(stdout, "  enabled: false", "  enabled: true", "metrics:");
            stdout = editLine(stdout, '  listen: "127.0.0.1:9000"', `  listen: "127.0.0.1:${federation.metricsPort}"`, "metrics:");
        }
        // The generated config keeps rate limiting on (message 10/s, burst
        // 50; registration and login 1/s, burst 10), and this test leaves it
        // on: the SDK's scheduler retries sends answered with M_LIMIT_EXCEEDED
        // after retry_after_ms, so the backchat burst exercises that path.
        fs.writeFileSync(this.configPath, editConfig(stdout));

        this.proc = spawn(this.bin, ["serve", "--config", this.configPath], {
            stdio: ["ignore", "pipe", "pipe"],
        });
        for (const [name, stream] of [["out", this.proc.stdout], ["err", this.proc.stderr]]) {
            let partial = "";
            stream.setEncoding("utf8");
            stream.on("data", (chunk) => {
                const lines = (partial + chunk).split("\n");
                partial = lines.pop();
                for (const l of lines) this.log.push(name === "err" ? l : `[stdout] ${l}`);
                if (process.env.E2E_VERBOSE) process.stderr.write(chunk);
            });
        }
        this.exited = new Promise((resolve) => {
            this.proc.on("exit", (code, signal) => {
                this.exit = { code, signal };
                resolve(this.exit);
            });
        });
        // Do not leave a server behind if the test process dies abruptly.
        this._killOnExit = () => this.proc?.exitCode === null && this.proc.kill("SIGKILL");
        process.on("exit", this._killOnExit);

        let last = "no answer yet";
        await until(
            async () => {
                if (this.exit) {
                    throw new Error(`homeserver exited before answering (code ${this.exit.code}, signal ${this.exit.signal})`);
                }
                try {
                    const res = await fetch(`${this.baseUrl}/_matrix/client/versions`);
                    last = `HTTP ${res.status} ${(await res.text()).slice(0, 300)}`;
                    return res.status === 200;
                } catch (e) {
                    last = `${e.message}${e.cause ? `: ${e.cause.message ?? e.cause}` : ""}`;
                    return false;
                }
            },
            {
                timeout,
                interval: 50,
                what: `GET ${this.baseUrl}/_matrix/client/versions (no access token) to answer 200`,
                state: () => `last answer: ${last}`,
            },
        );
    }

    // SIGTERM, then waits for the exit; SIGKILL if it takes over killAfter.
    async stop({ killAfter = 20000 } = {}) {
        if (!this.proc) return null;
        if (!this.exit) {
            this.proc.kill("SIGTERM");
            const timer = setTimeout(() => {
                if (!this.exit) {
                    this.log.push(`[e2e] no exit ${killAfter} ms after SIGTERM: sending SIGKILL`);
                    this.proc.kill("SIGKILL");
                }
            }, killAfter);
            await this.exited;
            clearTimeout(timer);
        }
        process.off("exit", this._killOnExit);
        return this.exit;
    }

    // The server's HTTP request counts (metrics on), by "METHOD route"
    // (the router's pattern), summed over status classes; the federation
    // listener's requests included, so a test can tell what servers asked
    // of each other.
    async requestCounts() {
        if (!this.metricsUrl) throw new Error("metrics are off for this server");
        const text = await (await fetch(this.metricsUrl)).text();
        const counts = {};
        for (const m of text.matchAll(/^homeserver_http_requests_total\{(.*)\} (\S+)$/gm)) {
            const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
            const key = `${labels.method} ${labels.route}`;
            counts[key] = (counts[key] ?? 0) + Number(m[2]);
        }
        return counts;
    }

    removeDataDir() {
        if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
    }
}

// The settings of a test federation on loopback, edited into a generated
// config; each line must be there as generated.
function federationConfig(text, peers) {
    const edits = [
        ["federation_verify_certificates: true", "federation_verify_certificates: false"],
        ["federation_domain_whitelist: []", `federation_domain_whitelist: ${JSON.stringify(peers)}`],
        ["ip_range_whitelist: []", `ip_range_whitelist: ["127.0.0.0/8"]`],
    ];
    for (const [from, to] of edits) text = editLine(text, from, to);
    return text;
}

// Replaces the first line that is exactly from (after the line section, if
// given) with to; the line must be there.
function editLine(text, from, to, section) {
    const lines = text.split("\n");
    const start = section === undefined ? 0 : lines.indexOf(section);
    const i = start < 0 ? -1 : lines.indexOf(from, start);
    if (i < 0) throw new Error(`generated config has no line "${from}"${section ? ` after "${section}"` : ""}`);
    lines[i] = to;
    return lines.join("\n");
}

// Starts n homeservers federating with each other over loopback TLS, each
// named 127.0.0.1:PORT after its federation listener (so the name resolves
// to it directly), with metrics on (requestCounts). Every name is known
// before any server starts, for the domain whitelist.
export async function startFederation(bin, n, opts = {}) {
    const ports = await freePorts(3 * n); // federation, client and metrics ports
    const peers = ports.slice(0, n).map((p) => `127.0.0.1:${p}`);
    const servers = peers.map(() => new Homeserver(bin));
    await Promise.all(
        servers.map((hs, i) =>
            hs.start({ ...opts, federation: { port: ports[i], clientPort: ports[n + i], metricsPort: ports[2 * n + i], peers } }),
        ),
    );
    return servers;
}

// k distinct free ports: all held open at once, then released.
async function freePorts(k) {
    const held = [];
    try {
        for (let i = 0; i < k; i++) {
            const srv = net.createServer();
            await new Promise((resolve, reject) => {
                srv.on("error", reject);
                srv.listen(0, "127.0.0.1", resolve);
            });
            held.push(srv);
        }
        return held.map((s) => s.address().port);
    } finally {
        await Promise.all(held.map((s) => new Promise((resolve) => s.close(resolve))));
    }
}

// Registers localpart with password through the user-interactive auth of
// POST /register: the first request, without auth, must be answered 401
// with a session; the m.login.dummy stage then completes it. anon is an
// unauthenticated MatrixClient; the result is {userId, deviceId,
// accessToken}.
export async function registerWithDummyAuth(anon, localpart, password) {
    const body = { username: localpart, password, initial_device_display_name: `${localpart} e2e` };
    let session;
    try {
        await anon.registerRequest(body);
    } catch (e) {
        if (e.httpStatus !== 401 || typeof e.data?.session !== "string") throw e;
        session = e.data.session;
    }
    if (!session) throw new Error(`POST /register for ${localpart} without auth succeeded; open registration must ask for m.login.dummy`);
    const res = await anon.registerRequest({ ...body, auth: { type: "m.login.dummy", session } });
    return { userId: res.user_id, deviceId: res.device_id, accessToken: res.access_token };
}

// Conformance of examples/cms's WebSocket side (PROTOCOL.md §6–§7) with a
// WebSocket client no one here wrote: the npm "ws" package. Run: npm ci &&
// npm test (needs Go to build the example; .ci/run does both).
//
// Each test uses a tenant of its own (the token's "tenant" claim), so that
// no connection of another test can be a target of its pushes. "Nothing
// arrived" is asserted behind a barrier, never after a sleep: a ping sent
// after the push's answer is answered on the same ordered queue, so a push
// frame queued to the connection arrives before that pong.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { guard, startExample, tamper, token, withGuard } from "./harness.mjs";
import { connect } from "./clients.mjs";

let ex; // the running example (harness.mjs)

before(async () => {
  ex = await startExample();
});

after(async () => {
  await ex?.close();
});

const uuidRE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const wsURL = (q = "") => `${ex.url.replace(/^http/, "ws")}/api/v1/ws${q}`;
const publisher = (tenant) => token({ sub: "backend", scope: "publish", tenant });

// refusal attempts an upgrade that must be refused and resolves its HTTP
// status and JSON body (the ws client's unexpected-response event).
function refusal(url, headers = {}) {
  const ws = new WebSocket(url, { headers });
  return withGuard(
    new Promise((resolve, reject) => {
      ws.on("error", () => {});
      ws.once("open", () => {
        ws.terminate();
        reject(new Error("the upgrade was accepted"));
      });
      ws.once("unexpected-response", (req, res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (body += d));
        res.on("end", () => {
          req.destroy();
          resolve({ status: res.statusCode, body });
        });
      });
    }),
    "the refusal",
  );
}

async function notify(tenant, body) {
  const res = await ex.api("POST", "/notify", publisher(tenant), body);
  const text = await res.text();
  assert.equal(res.status, 200, `POST /notify ${JSON.stringify(body)}: ${text}`);
  return JSON.parse(text);
}

async function subscribe(c, m) {
  const f = await c.request({ type: "subscribe", ...m }, (f) => f.type === "subscribed" || f.type === "error", "subscribed");
  assert.equal(f.type, "subscribed", JSON.stringify(f));
  return f;
}

async function closeAll(...cs) {
  await Promise.all(cs.filter(Boolean).map((c) => withGuard(c.close(), "close")));
}

// --- connecting -----------------------------------------------------------------

test("connect with ?token=: the connected frame names the connection, user and tenant", async () => {
  const c = await connect(ex, token({ sub: "alice" }));
  try {
    assert.equal(c.hello.type, "connected");
    assert.match(c.hello.connectionId, uuidRE);
    assert.equal(c.hello.user, "alice");
    assert.equal(c.hello.tenant, "default");
  } finally {
    await closeAll(c);
  }
});

test("connect with an Authorization: Bearer header (and a tenant claim)", async () => {
  const a = await connect(ex, token({ sub: "alice", tenant: "t-header" }), { header: true });
  const b = await connect(ex, token({ sub: "alice", tenant: "t-header" }), { header: true });
  try {
    assert.deepEqual([a.hello.type, a.hello.user, a.hello.tenant], ["connected", "alice", "t-header"]);
    assert.match(a.hello.connectionId, uuidRE);
    assert.notEqual(a.hello.connectionId, b.hello.connectionId);
  } finally {
    await closeAll(a, b);
  }
});

test("a foreign Origin is refused with 403 before the upgrade; the same host is allowed", async () => {
  const tok = token({ sub: "alice" });
  const r = await refusal(wsURL(`?token=${tok}`), { Origin: "https://evil.example" });
  assert.equal(r.status, 403);
  const same = await connect(ex, tok, { origin: ex.url });
  await closeAll(same);
});

// closedWith opens a socket the server must refuse after the upgrade and
// resolves the frames it sent and the close code and reason it read.
function closedWith(url, headers = {}) {
  const ws = new WebSocket(url, { headers });
  const frames = [];
  return withGuard(
    new Promise((resolve, reject) => {
      ws.on("error", reject);
      ws.on("message", (d) => frames.push(JSON.parse(String(d))));
      ws.once("unexpected-response", (_req, res) => reject(new Error(`refused with ${res.statusCode} before the upgrade`)));
      ws.once("close", (code, reason) => resolve({ frames, code, reason: String(reason) }));
    }),
    "the refusal's close",
  );
}

test("no token, a bad token or a wildcard sub: one error frame, then close 4401", async () => {
  const expired = token({ sub: "alice", exp: Math.floor(Date.now() / 1000) - 3600 });
  for (const [url, headers] of [
    [wsURL(), {}],
    [wsURL(`?token=${tamper(token({ sub: "alice" }))}`), {}],
    [wsURL(), { Authorization: `Bearer ${expired}` }],
    [wsURL(`?token=${token({ sub: "user.*" })}`), {}],
  ]) {
    const r = await closedWith(url, headers);
    assert.equal(r.code, 4401, JSON.stringify(r));
    assert.equal(r.frames.length, 1, JSON.stringify(r.frames));
    assert.equal(r.frames[0].type, "error");
    assert.equal(r.frames[0].code, "unauthorized");
  }
});

// --- frames -----------------------------------------------------------------------

test("ping as JSON and as bare text (any case) is answered pong", async () => {
  const c = await connect(ex, token({ sub: "alice", tenant: "t-ping" }));
  try {
    for (const m of [{ type: "ping" }, "ping", "PING", " Ping\n"]) {
      const f = await c.request(m, () => true, `the answer to ${JSON.stringify(m)}`);
      assert.deepEqual(f, { type: "pong" }, `answer to ${JSON.stringify(m)}`);
    }
  } finally {
    await closeAll(c);
  }
});

test("bad input gives a bad_request error frame and the connection stays open", async () => {
  const c = await connect(ex, token({ sub: "alice", tenant: "t-bad" }));
  try {
    for (const m of ["{not json", "[1,2]", "42", JSON.stringify({ type: "nope" }), JSON.stringify({ type: "subscribe", channels: ["a..b"] })]) {
      const f = await c.request(m, () => true, `the answer to ${m}`);
      assert.equal(f.type, "error", `answer to ${m}: ${JSON.stringify(f)}`);
      assert.equal(f.code, "bad_request");
      assert.equal(typeof f.message, "string");
      const pong = await c.request({ type: "ping" }, () => true, "a pong after bad input");
      assert.deepEqual(pong, { type: "pong" });
    }
    assert.equal(c.ws.readyState, WebSocket.OPEN);
  } finally {
    await closeAll(c);
  }
});

// --- pushes -------------------------------------------------------------------------

test("channel wildcards: * matches one segment, a trailing > one or more", async () => {
  const t = "t-channels";
  const star = await connect(ex, token({ sub: "u1", tenant: t }));
  const rest = await connect(ex, token({ sub: "u2", tenant: t }));
  const none = await connect(ex, token({ sub: "u3", tenant: t })); // no subscription
  try {
    assert.deepEqual((await subscribe(star, { channels: ["orders.*"] })).channels, ["orders.*"]);
    assert.deepEqual((await subscribe(rest, { channels: ["orders.>", "user.u2"] })).channels, ["orders.>", "user.u2"]);

    const cases = [
      ["orders.new", 2],
      ["orders.eu.new", 1],
      ["orders", 0],
      ["payments.new", 0],
      ["user.u2", 1],
    ];
    for (const [channel, delivered] of cases) {
      const r = await notify(t, { channel, event: "order_created", data: { channel } });
      assert.equal(r.delivered, delivered, `delivered for ${channel}`);
      assert.match(r.envelopeId, uuidRE);
    }
    await Promise.all([star.barrier(), rest.barrier(), none.barrier()]);
    assert.deepEqual(star.pushes().map((f) => f.channel), ["orders.new"]);
    assert.deepEqual(rest.pushes().map((f) => f.channel), ["orders.new", "orders.eu.new", "user.u2"]);
    assert.deepEqual(none.pushes(), []);

    // The push frame of §6.
    const f = rest.pushes()[1];
    assert.equal(f.type, "message");
    assert.match(f.envelopeId, uuidRE);
    assert.equal(f.event, "order_created");
    assert.deepEqual(f.data, { channel: "orders.eu.new" });
    assert.ok(!Number.isNaN(Date.parse(f.timestamp)), `timestamp ${f.timestamp}`);
    assert.match(f.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);

    // unsubscribe answers what is left, and stops the pushes.
    const u = await rest.request({ type: "unsubscribe", channels: ["orders.>"] }, (f) => f.type === "unsubscribed", "unsubscribed");
    assert.deepEqual(u.channels, ["user.u2"]);
    assert.equal((await notify(t, { channel: "orders.eu.new", event: "e" })).delivered, 0);
  } finally {
    await closeAll(star, rest, none);
  }
});

test("no cross-tenant delivery", async () => {
  const a = await connect(ex, token({ sub: "alice", tenant: "t-acme" }));
  const b = await connect(ex, token({ sub: "alice", tenant: "t-globex" })); // same user name, other tenant
  try {
    await subscribe(a, { channels: ["news"] });
    await subscribe(b, { channels: ["news"] });
    for (const body of [{ event: "all" }, { users: ["alice"], event: "to-alice" }, { channel: "news", event: "on-news" }]) {
      const r = await notify("t-acme", body);
      assert.deepEqual([r.delivered, r.users], [1, 1], JSON.stringify(body));
    }
    await Promise.all([a.barrier(), b.barrier()]);
    assert.deepEqual(a.pushes().map((f) => f.event), ["all", "to-alice", "on-news"]);
    assert.deepEqual(b.pushes(), []);
    // A tenant in the body cannot override the token's: the field is
    // refused (strict input) and nothing is pushed.
    const res = await ex.api("POST", "/notify", publisher("t-acme"), { event: "smuggled", tenant: "t-globex" });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.message, 'unknown field "tenant"');
    await Promise.all([a.barrier(), b.barrier()]);
    assert.deepEqual(b.pushes(), []);
    assert.equal(a.pushes().length, 3);
  } finally {
    await closeAll(a, b);
  }
});

test("multicast: duplicate users ignored, excludeUsers never reached", async () => {
  const t = "t-multicast";
  const u1a = await connect(ex, token({ sub: "u1", tenant: t }));
  const u1b = await connect(ex, token({ sub: "u1", tenant: t }));
  const u2 = await connect(ex, token({ sub: "u2", tenant: t }));
  const u3 = await connect(ex, token({ sub: "u3", tenant: t }));
  const all = [u1a, u1b, u2, u3];
  try {
    let r = await notify(t, { users: ["u1", "u1", "u2", "u3", "u2"], excludeUsers: ["u3"], event: "multi" });
    assert.deepEqual([r.delivered, r.users], [3, 2]);
    assert.deepEqual(r.acks, []);
    assert.equal(r.timedOut, 0);
    r = await notify(t, { excludeUsers: ["u1"], event: "broadcast-but-u1" });
    assert.deepEqual([r.delivered, r.users], [2, 2]);
    r = await notify(t, { users: ["nobody"], event: "to-nobody" });
    assert.deepEqual([r.delivered, r.users], [0, 0]);
    await Promise.all(all.map((c) => c.barrier()));
    assert.deepEqual(all.map((c) => c.pushes().map((f) => f.event)), [
      ["multi"],
      ["multi"],
      ["multi", "broadcast-but-u1"],
      ["broadcast-but-u1"],
    ]);
  } finally {
    await closeAll(...all);
  }
});

test("filters: a connection with filters gets a push only when one matches", async () => {
  const t = "t-filters";
  const f = await connect(ex, token({ sub: "u1", tenant: t }));
  const plain = await connect(ex, token({ sub: "u2", tenant: t }));
  try {
    await subscribe(f, { filters: [{ type: "chat_message", questId: "q1" }, { level: 3, done: true }] });
    const pushes = [
      [{ event: "chat_message", data: { questId: "q1", text: "hi" } }, true],
      [{ event: "chat_message", data: { questId: "q2" } }, false],
      [{ event: "other", data: { questId: "q1" } }, false],
      [{ event: "chat_message", data: { nested: { questId: "q1" } } }, false],
      [{ event: "score", data: { level: 3, done: true } }, true], // number and boolean by their JSON text
      [{ event: "score", data: { level: 3, done: false } }, false],
      [{ event: "score", data: "not an object" }, false],
    ];
    for (const [body, match] of pushes) {
      const r = await notify(t, body);
      assert.equal(r.delivered, match ? 2 : 1, JSON.stringify(body));
    }
    await Promise.all([f.barrier(), plain.barrier()]);
    assert.deepEqual(f.pushes().map((m) => m.data), [{ questId: "q1", text: "hi" }, { level: 3, done: true }]);
    assert.equal(plain.pushes().length, pushes.length);

    // Too many filters in one message: bad_request, the connection stays.
    const tooMany = Array.from({ length: 51 }, (_, i) => ({ type: `e${i}` }));
    const e = await f.request({ type: "subscribe", filters: tooMany }, () => true, "the answer to 51 filters");
    assert.deepEqual([e.type, e.code], ["error", "bad_request"]);

    // unsubscribe removes them: every push reaches it again.
    await f.request({ type: "unsubscribe", filters: [] }, (m) => m.type === "unsubscribed", "unsubscribed");
    assert.equal((await notify(t, { event: "anything" })).delivered, 2);
  } finally {
    await closeAll(f, plain);
  }
});

test("acks: one connection acks, a silent one is reported as timed out", async () => {
  const t = "t-acks";
  const acker = await connect(ex, token({ sub: "u1", tenant: t }));
  const silent = await connect(ex, token({ sub: "u2", tenant: t }));
  try {
    const result = { ok: true, n: 7, list: ["a"] };
    acker.ws.on("message", (raw) => {
      const m = JSON.parse(raw.toString());
      if (m.type === "message") acker.send({ type: "ack", envelopeId: m.envelopeId, result });
    });
    const r = await notify(t, { event: "please_ack", data: { x: 1 }, awaitAcks: "1s" });
    assert.deepEqual([r.delivered, r.users, r.timedOut], [2, 2, 1]);
    assert.deepEqual(r.acks, [{ user: "u1", connectionId: acker.hello.connectionId, result }]);
    const got = await silent.next((m) => m.type === "message", "the push to the silent connection");
    assert.equal(got.envelopeId, r.envelopeId);

    // An ack for an unknown envelope, or a late one, is ignored quietly.
    silent.send({ type: "ack", envelopeId: r.envelopeId, result: "late" });
    silent.send({ type: "ack", envelopeId: "00000000-0000-0000-0000-000000000000" });
    await silent.barrier();
    assert.equal(silent.frames.filter((m) => m.type === "error").length, 0);

    // Everyone acks: nothing timed out.
    silent.ws.on("message", (raw) => {
      const m = JSON.parse(raw.toString());
      if (m.type === "message") silent.send({ type: "ack", envelopeId: m.envelopeId, result: null });
    });
    const r2 = await notify(t, { event: "again", awaitAcks: "10s" });
    assert.deepEqual([r2.delivered, r2.timedOut, r2.acks.length], [2, 0, 2]);
    assert.deepEqual(r2.acks.map((a) => a.user).sort(), ["u1", "u2"]);

    // awaitAcks above 30 s is refused.
    const res = await ex.api("POST", "/notify", publisher(t), { event: "e", awaitAcks: "31s" });
    assert.equal(res.status, 400);
  } finally {
    await closeAll(acker, silent);
  }
});

test("POST /notify and presence need the publish scope", async () => {
  const user = token({ sub: "alice", tenant: "t-scope" });
  assert.equal((await ex.api("POST", "/notify", user, { event: "e" })).status, 403);
  assert.equal((await ex.api("GET", "/presence", user)).status, 403);
  assert.equal((await ex.api("GET", "/presence/alice", user)).status, 403);
  assert.equal((await fetch(`${ex.url}/api/v1/presence`)).status, 401);
});

test("presence: users and connections of the token's tenant", async () => {
  const t = "t-presence";
  const pub = publisher(t);
  const get = async (p) => {
    const res = await ex.api("GET", p, pub);
    assert.equal(res.status, 200);
    return res.json();
  };
  const a1 = await connect(ex, token({ sub: "ann", tenant: t }));
  const a2 = await connect(ex, token({ sub: "ann", tenant: t }));
  const b = await connect(ex, token({ sub: "bob", tenant: t }));
  const other = await connect(ex, token({ sub: "carl", tenant: "t-presence-other" }));
  try {
    // connected is sent only once the connection counts for presence.
    assert.deepEqual(await get("/presence"), { tenant: t, users: ["ann", "bob"], connections: 3 });
    assert.deepEqual(await get("/presence/ann"), { user: "ann", online: true, connections: 2 });
    assert.deepEqual(await get("/presence/carl"), { user: "carl", online: false, connections: 0 });
    await closeAll(b);
    // The server sees the close after the client does: wait for it (hang guard only).
    const stop = Date.now() + guard;
    let p;
    while ((p = await get("/presence")).connections !== 2 && Date.now() < stop) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(p, { tenant: t, users: ["ann"], connections: 2 });
    assert.deepEqual(await get("/presence/bob"), { user: "bob", online: false, connections: 0 });
  } finally {
    await closeAll(a1, a2, b, other);
  }
});

test("a frame over 64 KiB closes the connection with 1009, and the client reads that code", async () => {
  const c = await connect(ex, token({ sub: "alice", tenant: "t-big" }));
  try {
    c.send(JSON.stringify({ type: "ping", pad: "x".repeat(64 * 1024) }));
    const { code } = await withGuard(c.closed, "the close");
    assert.equal(code, 1009);
  } finally {
    await closeAll(c);
  }
  // Just under the limit is fine (an ack of an unknown push, ignored quietly).
  const ok = await connect(ex, token({ sub: "alice", tenant: "t-big" }));
  try {
    const pad = "x".repeat(64 * 1024 - 100); // the frame: 22 bytes under the limit
    ok.send(JSON.stringify({ type: "ack", envelopeId: "00000000-0000-0000-0000-000000000000", result: pad }));
    const f = await ok.request({ type: "ping" }, () => true, "the answer after a large frame");
    assert.deepEqual(f, { type: "pong" });
  } finally {
    await closeAll(ok);
  }
});

// --- strict input, limits, refresh, publish (§1, §6) ------------------------------

test("strict input: an unknown or mistyped field is a bad_request naming it, on the socket and on POST /notify", async () => {
  const t = "t-strict";
  const c = await connect(ex, token({ sub: "alice", tenant: t }));
  try {
    for (const [m, msg] of [
      [{ type: "subscribe", channels: ["a"], chanels: ["b"] }, 'unknown field "chanels"'],
      [{ type: "subscribe", channels: "a" }, 'field "channels" must be an array of strings'],
      [{ type: "ack", envelopeId: "e", connectionId: "x" }, 'unknown field "connectionId"'],
    ]) {
      const f = await c.request(m, () => true, `the answer to ${JSON.stringify(m)}`);
      assert.deepEqual([f.type, f.code, f.message], ["error", "bad_request", msg]);
    }
    const sub = await subscribe(c, { channels: ["a"] });
    assert.deepEqual(sub.channels, ["a"], "the refused messages changed nothing");
  } finally {
    await closeAll(c);
  }
  for (const [body, msg] of [
    [{ users: ["u1"], exclude_users: ["u2"], event: "e" }, 'unknown field "exclude_users"'],
    [{ users: "u1", event: "e" }, 'field "users" must be an array of strings'],
  ]) {
    const res = await ex.api("POST", "/notify", publisher(t), body);
    assert.equal(res.status, 400);
    assert.deepEqual((await res.json()).error, { code: "bad_request", message: msg });
  }
  // event is optional: "message".
  const d = await connect(ex, token({ sub: "u1", tenant: t }));
  try {
    await notify(t, { users: ["u1"], data: { n: 1 } });
    const m = await d.next((f) => f.type === "message", "the push without event");
    assert.equal(m.event, "message");
  } finally {
    await closeAll(d);
  }
});

test("a text frame that is not UTF-8 closes with 1007", async () => {
  const c = await connect(ex, token({ sub: "alice", tenant: "t-utf8" }));
  c.ws.send(Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]), { binary: false });
  const { code } = await withGuard(c.closed, "the close");
  assert.equal(code, 1007);
});

test("a client over the message rate is closed with 1008; another connection is not", async () => {
  const t = "t-rate";
  const fast = await connect(ex, token({ sub: "alice", tenant: t }));
  const calm = await connect(ex, token({ sub: "alice", tenant: t }));
  try {
    for (let i = 0; i < 300 && fast.ws.readyState === WebSocket.OPEN; i++) fast.send({ type: "ping" });
    const { code, reason } = await withGuard(fast.closed, "the close");
    assert.equal(code, 1008);
    assert.match(reason, /rate/);
    const pongs = fast.frames.filter((f) => f.type === "pong").length;
    // At most the burst was answered (the close goes ahead of answers still queued).
    assert.ok(pongs > 0 && pongs <= 101, `${pongs} pongs, want at most the burst (100)`);
    assert.deepEqual(await calm.request({ type: "ping" }, () => true, "calm's pong"), { type: "pong" });
  } finally {
    await closeAll(fast, calm);
  }
});

test("refresh: a fresh token of the same identity extends the socket; another identity or a bad token is refused", async () => {
  const t = "t-refresh";
  const c = await connect(ex, token({ sub: "alice", tenant: t, exp: Math.floor(Date.now() / 1000) + 60 }));
  try {
    const exp = Math.floor(Date.now() / 1000) + 7200;
    const ok = await c.request({ type: "refresh", token: token({ sub: "alice", tenant: t, exp }) }, () => true, "refreshed");
    assert.deepEqual(ok, { type: "refreshed", exp });
    for (const [tok, code] of [
      [token({ sub: "bob", tenant: t }), "forbidden"],
      [token({ sub: "alice", tenant: "other" }), "forbidden"],
      [tamper(token({ sub: "alice", tenant: t })), "unauthorized"],
    ]) {
      const f = await c.request({ type: "refresh", token: tok }, () => true, "the refusal");
      assert.deepEqual([f.type, f.code], ["error", code]);
    }
    assert.equal(c.hello.connectionId, c.frames[0].connectionId);
    assert.equal(c.ws.readyState, WebSocket.OPEN);
  } finally {
    await closeAll(c);
  }
});

test("publish from the socket: on chat.* it reaches subscribers with from and history; elsewhere forbidden", async () => {
  const t = "t-publish";
  const sub = await connect(ex, token({ sub: "bob", tenant: t }));
  const pub = await connect(ex, token({ sub: "alice", tenant: t }));
  try {
    await subscribe(sub, { channels: ["chat.*"] });
    const ans = await pub.request({ type: "publish", channel: "chat.room1", event: "msg", data: { text: "hi" } }, () => true, "published");
    assert.equal(ans.type, "published", JSON.stringify(ans));
    assert.equal(ans.channel, "chat.room1");
    assert.match(ans.envelopeId, uuidRE);
    const m = await sub.next((f) => f.type === "message", "the published push");
    assert.deepEqual([m.envelopeId, m.channel, m.event, m.data, m.from], [ans.envelopeId, "chat.room1", "msg", { text: "hi" }, "alice"]);
    const h = await ex.api("GET", "/channels/chat.room1/history", token({ sub: "carol", tenant: t }));
    assert.deepEqual((await h.json()).messages.map((e) => [e.envelopeId, e.from]), [[ans.envelopeId, "alice"]]);
    for (const channel of ["news.today", "user.alice"]) {
      const f = await pub.request({ type: "publish", channel, event: "msg" }, () => true, "the refusal");
      assert.deepEqual([f.type, f.code, f.channel], ["error", "forbidden", channel]);
    }
    await sub.barrier();
    assert.equal(sub.pushes().length, 1, "the refused publishes reached nobody");
  } finally {
    await closeAll(sub, pub);
  }
});

// --- records on the socket (§6, §3's semantics) ------------------------------------

async function createPost(tok, fields) {
  const res = await ex.api("POST", "/posts", tok, fields);
  assert.equal(res.status, 201);
  return { id: (await res.json()).id, etag: res.headers.get("etag") };
}

async function patchPost(tok, id, fields) {
  const res = await ex.api("PATCH", `/posts/${id}`, tok, fields);
  assert.equal(res.status, 200);
  return res.headers.get("etag");
}

// recordFrames returns c's record frames of (collection, id) as [type, etag].
const recordFrames = (c, id) =>
  c.frames.filter((f) => f.collection === "posts" && f.id === id).map((f) => [f.type, f.etag ?? f.reason ?? f.code]);

// subscribeRecords sends a records subscribe; it skips the test while the
// server does not offer records over WebSocket yet.
async function subscribeRecords(t, c, records) {
  const f = await c.request(
    { type: "subscribe", records },
    (f) => f.type === "subscribed" || (f.type === "error" && f.code === "bad_request"),
    "the answer to a record subscription",
  );
  if (f.type === "error" && /not available/i.test(f.message ?? "")) {
    t.skip(`records over WebSocket not implemented yet: ${f.message}`);
    return null;
  }
  assert.equal(f.type, "subscribed", JSON.stringify(f));
  return f;
}

test("records: snapshot, resume from lastEventId, up to date, live changes, many on one socket", async (t) => {
  const alice = token({ sub: "alice" });
  const resumed = await createPost(alice, { title: "r0" });
  const missed = [await patchPost(alice, resumed.id, { title: "r1" }), await patchPost(alice, resumed.id, { title: "r2" })];
  const fresh = await createPost(alice, { title: "fresh" });
  const current = await createPost(alice, { title: "current" });
  const c = await connect(ex, alice);
  try {
    const sub = await subscribeRecords(t, c, [
      { collection: "posts", id: resumed.id, lastEventId: resumed.etag },
      { collection: "posts", id: fresh.id },
      { collection: "posts", id: current.id, lastEventId: current.etag },
    ]);
    if (!sub) return;
    // every later buffered event, in order; a snapshot without a resume point; nothing when up to date
    await c.next((f) => f.id === resumed.id && f.etag === missed[1], "the missed events");
    await c.next((f) => f.id === fresh.id && f.type === "snapshot", "the snapshot");
    const live = [await patchPost(alice, resumed.id, { title: "r3" }), await patchPost(alice, current.id, { title: "c1" })];
    await c.next((f) => f.id === current.id && f.etag === live[1], "the live change of current");
    await c.next((f) => f.id === resumed.id && f.etag === live[0], "the live change of resumed");
    assert.deepEqual(recordFrames(c, resumed.id), [["changed", missed[0]], ["changed", missed[1]], ["changed", live[0]]]);
    assert.deepEqual(recordFrames(c, fresh.id), [["snapshot", fresh.etag]]);
    assert.deepEqual(recordFrames(c, current.id), [["changed", live[1]]]);
    const last = c.frames.find((f) => f.etag === live[0]);
    assert.equal(last.data.title, "r3");

    // a delete is a deleted frame with the record's id
    assert.equal((await ex.api("DELETE", `/posts/${fresh.id}`, alice)).status, 204);
    const del = await c.next((f) => f.id === fresh.id && f.type === "deleted", "the deleted frame");
    assert.deepEqual(del.data, { id: fresh.id });
  } finally {
    await closeAll(c);
  }
});

test("records: an unknown resume point gives resync then the snapshot; refusals name the record", async (t) => {
  const alice = token({ sub: "alice" });
  const bob = token({ sub: "bob" });
  const post = await createPost(alice, { title: "x" });
  const now = await patchPost(alice, post.id, { title: "y" });
  const secret = await createPost(alice, { title: "secret", private: true });
  const c = await connect(ex, bob);
  try {
    const sub = await subscribeRecords(t, c, [
      { collection: "posts", id: post.id, lastEventId: '"not-an-etag-of-ours"' },
    ]);
    if (!sub) return;
    await c.next((f) => f.id === post.id && f.type === "snapshot", "the snapshot after resync");
    assert.deepEqual(recordFrames(c, post.id), [["resync", "buffer-miss"], ["snapshot", now]]);

    for (const [id, code] of [[secret.id, "forbidden"], ["no-such-post", "not_found"]]) {
      const from = c.frames.length;
      c.send({ type: "subscribe", records: [{ collection: "posts", id }] });
      const e = await c.next((f) => f.type === "error" && f.id === id, `the ${code} error`, from);
      assert.deepEqual([e.code, e.collection], [code, "posts"]);
    }
    // The connection stays, and the private post's changes never reach it.
    await patchPost(alice, secret.id, { title: "still secret" });
    await patchPost(alice, post.id, { title: "z" });
    await c.next((f) => f.id === post.id && f.data?.title === "z", "the public change");
    assert.equal(c.frames.filter((f) => f.id === secret.id && f.type !== "error").length, 0);
  } finally {
    await closeAll(c);
  }
});

// Conformance of examples/cms's channels (PROTOCOL.md §8) with clients no
// one here wrote: the npm "ws" WebSocket client and the npm "eventsource"
// EventSource. Covers: since resume on a WebSocket (exactly the missed
// pushes; a miss gives resync), an EventSource on channels/subscribe with
// wildcards and its Last-Event-ID resume through a cut connection, history
// oldest first, and the example's AuthorizeChannel rule (user 456 is
// refused user.123 on the WebSocket, on SSE and on history).
//
// Each test uses a tenant of its own. "Nothing more arrived" is asserted
// behind a ping/pong barrier, never after a sleep.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { guard, startExample, token } from "./harness.mjs";

let ex; // the running example (harness.mjs)
let proxy; // a TCP proxy in front of it that can cut and hold connections

before(async () => {
  ex = await startExample();
  proxy = await startProxy();
});

after(async () => {
  await proxy?.close();
  await ex?.close();
});

const wsURL = (q = "") => `${ex.url.replace(/^http/, "ws")}/api/v1/ws${q}`;
const publisher = (tenant) => token({ sub: "backend", scope: "publish", tenant });

// push sends POST /notify as the tenant's backend and returns its envelopeId.
async function push(tenant, body) {
  const res = await ex.api("POST", "/notify", publisher(tenant), body);
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()).envelopeId;
}

async function pushMany(tenant, channel, from, to) {
  const ids = [];
  for (let i = from; i < to; i++) ids.push(await push(tenant, { channel, event: `e${i}`, data: { n: i } }));
  return ids;
}

async function history(tenant, sub, channel, q = "") {
  const res = await ex.api("GET", `/channels/${channel}/history${q}`, token({ sub, tenant }));
  return { status: res.status, body: await res.json() };
}

// withGuard rejects when p has not settled within the hang guard.
function withGuard(p, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), guard);
    }),
  ]).finally(() => clearTimeout(t));
}

// connect opens a WebSocket and resolves once the connected frame arrived.
// Every frame is recorded in c.frames (parsed JSON).
async function connect(tok, { header = false, origin } = {}) {
  const headers = {};
  if (header) headers.Authorization = `Bearer ${tok}`;
  if (origin) headers.Origin = origin;
  const ws = new WebSocket(header ? wsURL() : wsURL(`?token=${encodeURIComponent(tok)}`), { headers });
  const c = { ws, frames: [], waiters: new Set(), closed: null };
  c.closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on("message", (data, isBinary) => {
    const text = data.toString();
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      f = { unparsed: text, isBinary };
    }
    c.frames.push(f);
    for (const w of c.waiters) w();
  });
  ws.on("error", () => {}); // reported through close / the waits
  ws.on("close", () => {
    for (const w of c.waiters) w();
  });
  // next waits for the first frame from index `from` matching pred and
  // returns it.
  c.next = (pred, what, from = 0) =>
    withGuard(
      new Promise((resolve, reject) => {
        const check = () => {
          const f = c.frames.slice(from).find(pred);
          if (f) {
            c.waiters.delete(check);
            resolve(f);
          } else if (ws.readyState === WebSocket.CLOSED) {
            c.waiters.delete(check);
            reject(new Error(`connection closed while waiting for ${what}; frames: ${JSON.stringify(c.frames)}`));
          }
        };
        c.waiters.add(check);
        check();
      }),
      `${what}; frames so far: ${JSON.stringify(c.frames)}`,
    );
  c.send = (m) => ws.send(typeof m === "string" ? m : JSON.stringify(m));
  // request sends m and waits for the first later frame matching pred.
  c.request = (m, pred, what) => {
    const from = c.frames.length;
    c.send(m);
    return c.next(pred, what, from);
  };
  // barrier returns once every frame queued to c before the call arrived.
  c.barrier = () => c.request({ type: "ping" }, (f) => f.type === "pong", "the barrier pong");
  c.pushes = () => c.frames.filter((f) => f.type === "message");
  c.close = () => {
    if (ws.readyState !== WebSocket.CLOSED) ws.close();
    return c.closed;
  };
  await withGuard(
    new Promise((resolve, reject) => {
      ws.once("unexpected-response", (_req, res) => reject(new Error(`refused: ${res.statusCode}`)));
      ws.once("close", () => reject(new Error("closed before connected")));
      const check = () => {
        if (c.frames.length > 0) {
          c.waiters.delete(check);
          resolve();
        }
      };
      c.waiters.add(check);
    }),
    "the connected frame",
  );
  c.hello = c.frames[0];
  return c;
}

function startProxy() {
  const conns = new Set();
  let holding = false;
  let held = [];
  const pipe = (sock) => {
    const up = net.connect(ex.port, "127.0.0.1");
    const pair = { sock, up };
    conns.add(pair);
    const drop = () => {
      sock.destroy();
      up.destroy();
      conns.delete(pair);
    };
    sock.on("error", drop).on("close", drop);
    up.on("error", drop).on("close", drop);
    sock.pipe(up);
    up.pipe(sock);
  };
  const srv = net.createServer((sock) => (holding ? held.push(sock) : pipe(sock)));
  return new Promise((resolve) =>
    srv.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${srv.address().port}`,
        // cut drops every open connection and holds new ones until release.
        cut() {
          holding = true;
          for (const { sock, up } of conns) {
            sock.destroy();
            up.destroy();
          }
          conns.clear();
        },
        release() {
          holding = false;
          const h = held;
          held = [];
          h.forEach(pipe);
        },
        heldCount: () => held.length,
        close() {
          for (const { sock, up } of conns) {
            sock.destroy();
            up.destroy();
          }
          held.forEach((s) => s.destroy());
          return new Promise((r) => srv.close(r));
        },
      }),
    ),
  );
}


// follow opens an EventSource on url and records the events named in types.
function follow(url, types, init) {
  const es = new EventSource(url, init);
  const events = [];
  const waiters = [];
  for (const type of types) {
    es.addEventListener(type, (e) => {
      events.push({ type, id: e.lastEventId, data: JSON.parse(e.data) });
      waiters.splice(0).forEach((w) => w());
    });
  }
  let opened = 0;
  es.onopen = () => {
    opened++;
    waiters.splice(0).forEach((w) => w());
  };
  const until = async (pred, what) => {
    const stop = Date.now() + guard;
    while (!pred(events)) {
      if (Date.now() > stop) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(events)}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
  };
  const opens = async (n) => {
    const stop = Date.now() + guard;
    while (opened < n) {
      if (Date.now() > stop) throw new Error(`timed out waiting for open #${n}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
  };
  return { es, events, until, opens };
}

const chanURL = (base, tenant, sub, channels) =>
  `${base}/api/v1/channels/subscribe?channels=${encodeURIComponent(channels)}&token=${token({ sub, tenant })}`;

// --- tests ----------------------------------------------------------------------

test("a WebSocket resuming with since gets exactly the pushes it missed, then live ones", async () => {
  const tenant = "ch-since";
  const tok = token({ sub: "alice", tenant });
  const a = await connect(tok);
  await a.request({ type: "subscribe", channels: ["orders.new"] }, (f) => f.type === "subscribed", "subscribed");
  const seen = await pushMany(tenant, "orders.new", 0, 2);
  await a.next((f) => f.envelopeId === seen[1], "the second push");
  await a.close();

  const missed = await pushMany(tenant, "orders.new", 2, 5);
  await pushMany(tenant, "orders.other", 0, 1);
  const b = await connect(tok);
  const from = b.frames.length;
  await b.request({ type: "subscribe", channels: ["orders.new"], since: { "orders.new": seen[1] } }, (f) => f.type === "subscribed", "subscribed");
  await b.next((f) => f.envelopeId === missed[2], "the last missed push", from);
  const live = await pushMany(tenant, "orders.new", 5, 6);
  await b.next((f) => f.envelopeId === live[0], "the live push", from);
  await b.barrier();
  assert.deepEqual(b.pushes().map((f) => f.envelopeId), [...missed, ...live]);
  assert.deepEqual(b.pushes().map((f) => f.event), ["e2", "e3", "e4", "e5"]);
  await b.close();
});

test("since on an unknown envelopeId gives resync, then live pushes", async () => {
  const tenant = "ch-miss";
  await pushMany(tenant, "orders.new", 0, 1);
  const c = await connect(token({ sub: "alice", tenant }));
  const f = await c.request(
    { type: "subscribe", channels: ["orders.new"], since: { "orders.new": "not-an-envelope" } },
    (f) => f.type === "resync",
    "resync",
  );
  assert.deepEqual(f, { type: "resync", channel: "orders.new", reason: "buffer-miss" });
  const live = await pushMany(tenant, "orders.new", 1, 2);
  await c.next((f) => f.envelopeId === live[0], "the live push");
  await c.barrier();
  assert.equal(c.pushes().length, 1);
  const bad = await c.request({ type: "subscribe", channels: ["orders.*"], since: { "orders.*": live[0] } }, (f) => f.type === "error", "the refusal");
  assert.equal(bad.code, "bad_request");
  await c.close();
});

test("an EventSource on channels/subscribe with wildcards receives the pushes and resumes with Last-Event-ID", async () => {
  const tenant = "ch-sse";
  const names = ["order_created", "hello", "e0", "e1", "e2", "e3", "e4", "resync"];
  const s = follow(chanURL(ex.url, tenant, "alice", "orders.*,user.alice"), names);
  await s.opens(1);
  const a = await push(tenant, { channel: "orders.new", event: "order_created", data: { id: 1 } });
  await push(tenant, { channel: "orders.eu.new", event: "hello" }); // * is one segment
  await push(tenant, { channel: "user.bob", event: "hello" });
  const b = await push(tenant, { channel: "user.alice", event: "hello", users: ["alice"] });
  await s.until((ev) => ev.length >= 2, "two pushes");
  assert.deepEqual(s.events.map((e) => [e.type, e.id]), [["order_created", a], ["hello", b]]);
  assert.deepEqual(s.events[0].data.data, { id: 1 });
  assert.equal(s.events[0].data.type, "message");
  assert.equal(s.events[0].data.channel, "orders.new");
  s.es.close();

  // One concrete channel, through a proxy that cuts the connection: the
  // EventSource reconnects on its own with Last-Event-ID and gets the rest.
  const r = follow(chanURL(proxy.url, tenant, "alice", "orders.new"), names);
  await r.opens(1);
  const first = await pushMany(tenant, "orders.new", 0, 2);
  await r.until((ev) => ev.length === 2, "the first two pushes");
  proxy.cut();
  const missed = await pushMany(tenant, "orders.new", 2, 4);
  proxy.release();
  await r.opens(2);
  await r.until((ev) => ev.length === 4, "the missed pushes");
  const live = await pushMany(tenant, "orders.new", 4, 5);
  await r.until((ev) => ev.length === 5, "the live push");
  assert.deepEqual(r.events.map((e) => e.id), [...first, ...missed, ...live]);
  r.es.close();

  // A Last-Event-ID the buffer does not know: resync (no id), then live.
  const m = follow(chanURL(ex.url, tenant, "alice", "orders.new"), names, {
    fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, "Last-Event-ID": "unknown" } }),
  });
  await m.until((ev) => ev.length === 1, "resync");
  assert.deepEqual(m.events[0], { type: "resync", id: "", data: { channel: "orders.new", reason: "buffer-miss" } });
  m.es.close();
});

test("history returns the buffered messages oldest first", async () => {
  const tenant = "ch-history";
  const ids = await pushMany(tenant, "feed", 0, 4);
  let h = await history(tenant, "alice", "feed");
  assert.equal(h.status, 200);
  assert.equal(h.body.channel, "feed");
  assert.deepEqual(h.body.messages.map((m) => m.envelopeId), ids);
  assert.deepEqual(h.body.messages.map((m) => m.event), ["e0", "e1", "e2", "e3"]);
  h = await history(tenant, "alice", "feed", "?limit=2");
  assert.deepEqual(h.body.messages.map((m) => m.envelopeId), ids.slice(2));
  h = await history(tenant, "alice", "feed.*");
  assert.equal(h.status, 400);
});

test("user 456 is refused user.123 on the WebSocket, on SSE and on history", async () => {
  const tenant = "ch-authz";
  const secret = await push(tenant, { channel: "user.123", event: "secret", users: ["123"] });
  const mallory = token({ sub: "456", tenant });

  const c = await connect(mallory);
  const from = c.frames.length;
  await c.request(
    { type: "subscribe", channels: ["user.123", "user.*", "news", "user.456"], since: { "user.123": secret } },
    (f) => f.type === "subscribed",
    "subscribed",
  );
  const errors = c.frames.slice(from).filter((f) => f.type === "error");
  assert.deepEqual(errors.map((f) => [f.code, f.channel]), [["forbidden", "user.123"], ["forbidden", "user.*"]]);
  assert.deepEqual(c.frames.at(-1).channels, ["news", "user.456"]);
  await push(tenant, { channel: "user.123", event: "secret" });
  await c.barrier();
  assert.equal(c.pushes().length, 0);
  await c.close();

  for (const chs of ["user.123", "news,user.123", "*.123", "user.>"]) {
    const res = await fetch(chanURL(ex.url, tenant, "456", chs));
    assert.equal(res.status, 403, chs);
    assert.equal((await res.json()).error.code, "forbidden");
  }
  const es = new EventSource(chanURL(ex.url, tenant, "456", "user.123"));
  await new Promise((resolve) => (es.onerror = resolve));
  assert.equal(es.readyState, EventSource.CLOSED); // a 403 is not retried
  es.close();

  assert.equal((await history(tenant, "456", "user.123")).status, 403);
  // The owner may.
  const own = await history(tenant, "123", "user.123");
  assert.equal(own.status, 200);
  assert.deepEqual(own.body.messages.map((m) => m.envelopeId).slice(0, 1), [secret]);
});

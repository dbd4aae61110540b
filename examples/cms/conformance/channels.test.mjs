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
import { EventSource } from "eventsource";
import { startExample, token } from "./harness.mjs";
import { connect, follow, startProxy } from "./clients.mjs";

let ex; // the running example (harness.mjs)
let proxy; // a TCP proxy in front of it that can cut and hold connections

before(async () => {
  ex = await startExample();
  proxy = await startProxy(ex.port);
});

after(async () => {
  await proxy?.close();
  await ex?.close();
});

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

const chanURL = (base, tenant, sub, channels) =>
  `${base}/api/v1/channels/subscribe?channels=${encodeURIComponent(channels)}&token=${token({ sub, tenant })}`;

// --- tests ----------------------------------------------------------------------

test("a WebSocket resuming with since gets exactly the pushes it missed, then live ones", async () => {
  const tenant = "ch-since";
  const tok = token({ sub: "alice", tenant });
  const a = await connect(ex, tok);
  await a.request({ type: "subscribe", channels: ["orders.new"] }, (f) => f.type === "subscribed", "subscribed");
  const seen = await pushMany(tenant, "orders.new", 0, 2);
  await a.next((f) => f.envelopeId === seen[1], "the second push");
  await a.close();

  const missed = await pushMany(tenant, "orders.new", 2, 5);
  await pushMany(tenant, "orders.other", 0, 1);
  const b = await connect(ex, tok);
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
  const c = await connect(ex, token({ sub: "alice", tenant }));
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

  const c = await connect(ex, mallory);
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

// Conformance of examples/cms's pushes on every transport (PROTOCOL.md §8,
// issue 14) with clients no one here wrote: the npm "eventsource"
// EventSource on GET /api/v1/pushes/subscribe, Node's fetch on
// GET /api/v1/pushes/poll and POST /api/v1/acks, the npm "ws" client
// publishing from a socket. Covers: the connected event, user pushes,
// broadcasts and listed channels (excludeUsers, filters), acks over HTTP
// awaited by POST /notify, resume of one concrete channel through a cut
// connection, a long poll and its resume point.
//
// Each test uses a tenant of its own.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
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

async function notify(tenant, body) {
  const res = await ex.api("POST", "/notify", publisher(tenant), body);
  const text = await res.text();
  assert.equal(res.status, 200, `POST /notify ${JSON.stringify(body)}: ${text}`);
  return JSON.parse(text);
}

const pushesURL = (base, tok, q = "") => `${base}/api/v1/pushes/subscribe?token=${tok}${q}`;

test("an EventSource on pushes/subscribe: connected, then user pushes, broadcasts and its channels, acked over HTTP", async () => {
  const tenant = "p-stream";
  const tok = token({ sub: "alice", tenant });
  const s = follow(pushesURL(ex.url, tok, `&channels=${encodeURIComponent("orders.*")}`), ["connected", "to_alice", "broadcast", "order", "excluded", "q"]);
  try {
    await s.until((ev) => ev.length === 1, "the connected event");
    const hello = s.events[0];
    assert.equal(hello.type, "connected");
    assert.equal(hello.id, "", "connected has no id");
    assert.deepEqual([hello.data.type, hello.data.user, hello.data.tenant], ["connected", "alice", tenant]);

    const r1 = await notify(tenant, { users: ["alice"], event: "to_alice", data: { n: 1 } });
    assert.deepEqual([r1.delivered, r1.users], [1, 1]);
    await notify(tenant, { event: "broadcast" });
    await notify(tenant, { event: "excluded", excludeUsers: ["alice"] });
    const r3 = await notify(tenant, { channel: "orders.new", event: "order" });
    await s.until((ev) => ev.length === 4, "three pushes");
    assert.deepEqual(s.events.slice(1).map((e) => e.type), ["to_alice", "broadcast", "order"]);
    assert.equal(s.events[1].data.envelopeId, r1.envelopeId);
    assert.deepEqual(s.events[1].data.data, { n: 1 });
    assert.equal(s.events[3].id, r3.envelopeId, "a channel push carries its envelopeId as id");

    // Acks over HTTP: the sender awaiting acks gets this stream's.
    const sent = notify(tenant, { users: ["alice"], event: "q", awaitAcks: "10s" });
    await s.until((ev) => ev.some((e) => e.type === "q"), "the push to ack");
    const q = s.events.find((e) => e.type === "q");
    const ack = await ex.api("POST", "/acks", tok, { envelopeId: q.data.envelopeId, result: { ok: true } });
    assert.equal(ack.status, 204);
    const r = await sent;
    assert.deepEqual([r.delivered, r.timedOut], [1, 0]);
    assert.deepEqual(r.acks, [{ user: "alice", connectionId: hello.data.connectionId, result: { ok: true } }]);

    const bad = await ex.api("POST", "/acks", tok, { envelopeId: q.data.envelopeId, connectionId: "x" });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.message, 'unknown field "connectionId"');
  } finally {
    s.es.close();
  }
});

test("pushes/subscribe with one concrete channel resumes through a cut connection (Last-Event-ID), user pushes carry no id", async () => {
  const tenant = "p-resume";
  const tok = token({ sub: "alice", tenant });
  const s = follow(pushesURL(proxy.url, tok, "&channels=orders.new"), ["connected", "o", "direct"]);
  try {
    await s.until((ev) => ev.length === 1, "connected");
    const a = await notify(tenant, { channel: "orders.new", event: "o", data: { n: 0 } });
    await notify(tenant, { users: ["alice"], event: "direct" });
    await s.until((ev) => ev.length === 3, "a channel push and a direct one");
    assert.equal(s.events[2].id, a.envelopeId, "the direct push left Last-Event-ID at the channel push");
    proxy.cut();
    const missed = [];
    for (let n = 1; n <= 2; n++) missed.push((await notify(tenant, { channel: "orders.new", event: "o", data: { n } })).envelopeId);
    proxy.release();
    await s.until((ev) => ev.filter((e) => e.type === "o").length === 3, "the missed channel pushes");
    assert.deepEqual(s.events.filter((e) => e.type === "o").map((e) => e.data.envelopeId), [a.envelopeId, ...missed]);
  } finally {
    s.es.close();
  }
});

test("pushes/poll: the same selection as a long poll, resumable on one concrete channel", async () => {
  const tenant = "p-poll";
  const tok = token({ sub: "alice", tenant });
  const poll = async (q) => {
    const res = await fetch(`${ex.url}/api/v1/pushes/poll?${q}`, { headers: { Authorization: `Bearer ${tok}` } });
    assert.equal(res.status, 200);
    return res.json();
  };
  assert.deepEqual(await poll("timeout=0.05"), { messages: [] });
  const waiting = poll("timeout=20");
  let sent;
  for (;;) {
    sent = await notify(tenant, { users: ["alice"], event: "hello", data: { x: 1 } });
    if (sent.delivered === 1) break; // the poll is registered
    await new Promise((r) => setTimeout(r, 20));
  }
  const got = await waiting;
  assert.deepEqual(got.messages.map((m) => [m.envelopeId, m.event, m.data]), [[sent.envelopeId, "hello", { x: 1 }]]);

  const ids = [];
  for (let n = 0; n < 3; n++) ids.push((await notify(tenant, { channel: "news.today", event: "n", data: { n } })).envelopeId);
  const resumed = await poll(`channels=news.today&lastEventId=${ids[0]}`);
  assert.deepEqual(resumed.messages.map((m) => m.envelopeId), ids.slice(1));
  assert.equal(resumed.lastEventId, ids[2]);
  const miss = await poll("channels=news.today&lastEventId=gone");
  assert.deepEqual(miss.messages, [{ type: "resync", channel: "news.today", reason: "buffer-miss" }]);
});

test("a browser's publish reaches a pushes stream of the channel, with from", async () => {
  const tenant = "p-publish";
  const s = follow(pushesURL(ex.url, token({ sub: "bob", tenant }), "&channels=chat.room1"), ["connected", "msg"]);
  const pub = await connect(ex, token({ sub: "alice", tenant }));
  try {
    await s.until((ev) => ev.length === 1, "connected");
    const ans = await pub.request({ type: "publish", channel: "chat.room1", event: "msg", data: "hi" }, () => true, "published");
    assert.equal(ans.type, "published");
    await s.until((ev) => ev.length === 2, "the published push");
    assert.deepEqual([s.events[1].id, s.events[1].data.from, s.events[1].data.data], [ans.envelopeId, "alice", "hi"]);
  } finally {
    s.es.close();
    await pub.close();
  }
});

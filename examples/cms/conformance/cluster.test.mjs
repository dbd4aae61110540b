// Two instances of examples/cms on one SQLite file and one real Redis
// (PROTOCOL.md §9), driven by the npm "eventsource" and "ws" clients:
// events, resumes, pushes, presence and acks across instances, and a Redis
// that dies and comes back. The suite starts its own redis-server (on a free
// port, nothing on disk) so it can kill it; on CI a missing redis-server is
// a failure (.ci/run installs it), elsewhere the suite is skipped.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { needs, startCluster, token, until } from "./harness.mjs";
import { connect, follow, startProxy } from "./clients.mjs";

const skip = needs("redis-server");

let cluster; // the redis-server and the two instances (harness.mjs)
let redis, a, b;

before(async () => {
  if (skip) return;
  cluster = await startCluster();
  ({ redis, a, b } = cluster);
});

after(async () => {
  await cluster?.close();
});

const alice = token({ sub: "alice" });
const backend = token({ sub: "backend", scope: "publish" });

async function createPost(ex, fields) {
  const res = await ex.api("POST", "/posts", alice, fields);
  assert.equal(res.status, 201);
  return { post: await res.json(), etag: res.headers.get("etag") };
}

async function patchPost(ex, id, fields) {
  const res = await ex.api("PATCH", `/posts/${id}`, alice, fields);
  assert.equal(res.status, 200, await res.clone().text());
  return res.headers.get("etag");
}

test("a change on one instance reaches SSE and WebSocket subscribers of the other; a resume crosses instances", { skip }, async () => {
  const { post, etag } = await createPost(a, { title: "t0", body: "b" });
  const sse = follow(`${b.url}/api/v1/posts/${post.id}/subscribe?token=${alice}`);
  await sse.until((ev) => ev.length === 1, "the snapshot on B");
  assert.deepEqual([sse.events[0].type, sse.events[0].id], ["snapshot", etag]);
  const ws = await connect(b, alice);
  ws.send({ type: "subscribe", records: [{ collection: "posts", id: String(post.id), lastEventId: etag }] });
  await ws.next((f) => f.type === "subscribed", "subscribed");

  const e1 = await patchPost(a, post.id, { title: "t1" });
  await sse.until((ev) => ev.length === 2, "the change on B");
  assert.deepEqual([sse.events[1].type, sse.events[1].id, sse.events[1].data.title], ["changed", e1, "t1"]);
  const f = await ws.next((f) => f.type === "changed", "the change over B's WebSocket");
  assert.equal(f.etag, e1);
  sse.es.close();

  // What B's client saw was e1; two more changes are made on B; the client
  // resumes on A and gets exactly those.
  const e2 = await patchPost(b, post.id, { title: "t2" });
  const e3 = await patchPost(b, post.id, { title: "t3" });
  const resumed = follow(`${a.url}/api/v1/posts/${post.id}/subscribe?token=${alice}&lastEventId=${encodeURIComponent(e1)}`);
  await resumed.until((ev) => ev.length === 2, "the replay on A");
  assert.deepEqual(resumed.events.map((e) => [e.type, e.id]), [["changed", e2], ["changed", e3]]);
  resumed.es.close();
  ws.close();
});

test("an instance killed mid-stream: its clients resume on the other with nothing lost", { skip }, async () => {
  const lb = await startProxy(b.port); // the balancer: switchTo moves it to A
  const { post } = await createPost(a, { title: "k0" });
  const sse = follow(`${lb.url}/api/v1/posts/${post.id}/subscribe?token=${alice}`);
  await sse.until((ev) => ev.length === 1, "the snapshot through the balancer (on B)");
  const e1 = await patchPost(a, post.id, { title: "k1" });
  await sse.until((ev) => ev.length === 2, "k1");

  await b.kill(); // no clean end: the client just loses its connection
  lb.switchTo(a.port);
  const e2 = await patchPost(a, post.id, { title: "k2" });
  const e3 = await patchPost(a, post.id, { title: "k3" });
  // The EventSource reconnects by itself (through the balancer, now to A)
  // with Last-Event-ID e1: exactly k2 and k3, no resync, nothing twice.
  await sse.until((ev) => ev.length === 4, "the missed events after the reconnect");
  assert.deepEqual(sse.events.map((e) => [e.type, e.id]), [
    ["snapshot", sse.events[0].id],
    ["changed", e1],
    ["changed", e2],
    ["changed", e3],
  ]);
  sse.es.close();
  await lb.close();
  await b.start(); // back for the next tests
});

test("pushes, presence and acks across instances", { skip }, async () => {
  const tenant = "cluster-push";
  const pub = token({ sub: "backend", scope: "publish", tenant });
  const onB = await connect(b, token({ sub: "u-b", tenant }));
  const silentOnA = await connect(a, token({ sub: "u-a", tenant }));

  let res = await a.api("GET", "/presence", pub);
  assert.deepEqual(await res.json(), { tenant, users: ["u-a", "u-b"], connections: 2 });
  res = await a.api("GET", "/presence/u-b", pub);
  assert.deepEqual(await res.json(), { user: "u-b", online: true, connections: 1 });

  const answer = a.api("POST", "/notify", pub, { users: ["u-b", "u-a", "u-b"], event: "hello", data: { n: 1 }, awaitAcks: "2s" });
  const m = await onB.next((f) => f.type === "message", "the push on B");
  assert.equal(m.event, "hello");
  onB.send({ type: "ack", envelopeId: m.envelopeId, result: { seen: true } });
  res = await answer;
  const body = await res.json();
  assert.equal(res.status, 200);
  assert.equal(body.delivered, 2);
  assert.equal(body.users, 2);
  assert.deepEqual(body.acks.map((x) => [x.user, x.result]), [["u-b", { seen: true }]]);
  assert.equal(body.timedOut, 1);
  onB.close();
  silentOnA.close();
});

test("Redis killed: publishing answers 503 and health is degraded; Redis back: subscribers end in the right state", { skip }, async () => {
  const { post } = await createPost(a, { title: "before" });
  const sse = follow(`${b.url}/api/v1/posts/${post.id}/subscribe?token=${alice}`);
  await sse.until((ev) => ev.length === 1, "the snapshot");

  await redis.kill();
  await until(async () => (await fetch(`${a.url}/healthz`)).status === 503, "A's health to be degraded");
  let res = await a.api("POST", `/posts/${post.id}/events`, backend, { event: "changed", data: { id: String(post.id), title: "x" } });
  assert.equal(res.status, 503);
  res = await a.api("POST", "/notify", backend, { event: "e" });
  assert.equal(res.status, 503);
  // A write to the database during the outage: committed, its event cannot
  // be sent now.
  await patchPost(a, post.id, { title: "during" });

  await redis.start(); // empty: every buffered event is gone
  await until(async () => (await fetch(`${a.url}/healthz`)).status === 200, "A's health to recover");
  await sse.until((ev) => ev.some((e) => e.data.title === "during"), "the subscriber to get the state written during the outage");
  // Redis came back empty: the subscriber got the write of the outage
  // exactly (the outbox published it, naming the version the subscriber
  // had), or, if its node resumed it before that, resync and the stored
  // record. Never the new state without either.
  const during = sse.events.findIndex((e) => e.data.title === "during");
  assert.ok(sse.events[during].type === "changed" && during === 1 || sse.events.slice(1, during).some((e) => e.type === "resync"),
    `neither the exact event nor a resync before the new state: ${JSON.stringify(sse.events)}`);
  await sse.until((ev) => ev[ev.length - 1].data.title === "during", "the stored record last");
  // Live events flow again.
  const e = await patchPost(a, post.id, { title: "after" });
  await sse.until((ev) => ev.some((x) => x.id === e), "a change after the outage");
  sse.es.close();
});

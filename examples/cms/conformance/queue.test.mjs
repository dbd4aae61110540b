// The queue way in (PROTOCOL.md §8, redisbroker "The queue"): two instances
// of examples/cms on one SQLite file and one real Redis; requests XADDed by
// the real redis-cli reach WebSocket and SSE subscribers on both instances;
// a malformed request lands in the dead-letter stream and blocks nothing.
// The suite starts its own redis-server (free port, nothing on disk); on CI
// a missing redis-server or redis-cli is a failure, elsewhere the suite is
// skipped.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { needs, startCluster, token, until } from "./harness.mjs";
import { connect, follow } from "./clients.mjs";

const skip = needs("redis-server", "redis-cli");

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

/** cli runs the real redis-cli against the suite's Redis and returns its output. */
const cli = (...args) => execFileSync("redis-cli", ["-p", String(redis.port), ...args], { encoding: "utf8" }).trim();

/** enqueue XADDs a request (a JSON string or an object) and returns the entry id. */
const enqueue = (request) =>
  cli("XADD", "rt:queue", "*", "request", typeof request === "string" ? request : JSON.stringify(request));

const alice = token({ sub: "alice" });

test("requests XADDed by redis-cli reach WebSocket and SSE subscribers on both instances", { skip }, async () => {
  const res = await a.api("POST", "/posts", alice, { title: "q0", body: "b" });
  assert.equal(res.status, 201);
  const post = await res.json();
  const id = String(post.id);

  const ws = [];
  const sse = [];
  for (const ex of [a, b]) {
    const c = await connect(ex, alice);
    c.send({ type: "subscribe", channels: ["orders.*"] });
    await c.next((f) => f.type === "subscribed" && f.channels?.includes("orders.*"), "subscribed to orders.*");
    c.send({ type: "subscribe", records: [{ collection: "posts", id }] });
    await c.next((f) => f.type === "subscribed" && f.records?.length > 0, "subscribed to the record");
    ws.push(c);
    const s = follow(`${ex.url}/api/v1/posts/${id}/subscribe?token=${alice}`);
    await s.until((ev) => ev.length === 1, "the snapshot");
    sse.push(s);
  }

  enqueue({ type: "notify", channel: "orders.new", event: "order_created", data: { order_id: 123 } });
  enqueue({ type: "publish", collection: "posts", id, event: "changed", data: { ...post, title: "from the queue" } });

  for (const c of ws) {
    const m = await c.next((f) => f.type === "message" && f.event === "order_created", "the queued push");
    assert.equal(m.channel, "orders.new");
    assert.deepEqual(m.data, { order_id: 123 });
    const ch = await c.next((f) => f.type === "changed" && f.id === id, "the queued record event over the WebSocket");
    assert.equal(ch.data.title, "from the queue");
  }
  for (const s of sse) {
    await s.until((ev) => ev.some((e) => e.type === "changed"), "the queued record event over SSE");
    const ch = s.events.find((e) => e.type === "changed");
    assert.equal(ch.data.title, "from the queue");
    s.es.close();
  }
  // Processed, acknowledged and deleted: nothing left in the queue.
  await until(() => cli("XLEN", "rt:queue") === "0", "the queue to be empty");
  for (const c of ws) c.close();
});

test("a malformed request lands in the dead-letter stream and blocks nothing", { skip }, async () => {
  const onA = await connect(a, alice);
  const onB = await connect(b, alice);
  const bad = enqueue('{"type":"notify","event":');
  const unknown = enqueue({ type: "shout", event: "x" });
  const waits = enqueue({ type: "notify", event: "x", awaitAcks: "5s" });
  enqueue({ type: "notify", users: ["alice"], event: "after_the_bad_ones", data: { ok: true } });
  for (const c of [onA, onB]) {
    const m = await c.next((f) => f.type === "message" && f.event === "after_the_bad_ones", "the request after the bad ones");
    assert.deepEqual(m.data, { ok: true });
  }
  await until(() => cli("XLEN", "rt:queue:dead") === "3", "three dead letters");
  const dead = cli("XRANGE", "rt:queue:dead", "-", "+");
  for (const [entry, reason] of [
    [bad, "not a JSON object"],
    [unknown, 'unknown type "shout"'],
    [waits, "awaitAcks is not allowed"],
  ]) {
    assert.ok(dead.includes(entry), `entry ${entry} not in the dead letters:\n${dead}`);
    assert.ok(dead.includes(reason), `no reason "${reason}" in the dead letters:\n${dead}`);
  }
  assert.ok(dead.includes('{"type":"notify","event":'), "the original request is kept");
  await until(() => cli("XLEN", "rt:queue") === "0", "the queue to be empty");
  onA.close();
  onB.close();
});

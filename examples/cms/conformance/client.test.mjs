// Unit tests of the browser client, client/realtime.js, under Node: its
// backoff schedule, and — against the real example, with the npm "ws" and
// "eventsource" packages injected as the WebSocket and EventSource — its
// resubscription after a dropped socket, resync turned into a fresh
// snapshot, resumption across a server restart, and the token refresh
// callback called before expiry.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { sleep, startExample, token, until } from "./harness.mjs";
import { Backoff, DEFAULT_BACKOFF, Realtime, backoffDelay, channelMatches, tokenExpiry } from "../../../client/realtime.js";

let ex;
const clients = new Set();

before(async () => {
  ex = await startExample();
});
after(async () => {
  for (const c of clients) c.close();
  await ex?.close();
});

const publisher = (tenant) => token({ sub: "backend", scope: "publish", tenant });

/** client makes a Realtime on the example with ws/eventsource injected. */
function client(opts) {
  const rt = new Realtime({
    base: `${ex.url}/api/v1`,
    WebSocket,
    EventSource,
    window: null,
    backoff: { initial: 200, max: 2000 },
    random: () => 1, // the longest delay of each step: deterministic
    ...opts,
  });
  rt.on("error", () => {});
  clients.add(rt);
  return rt;
}

/** recorder returns record handlers that log every call in calls. */
function recorder() {
  const calls = [];
  const h = {
    calls,
    onSnapshot: (d, etag) => calls.push(["snapshot", d.title, etag]),
    onChanged: (d, etag) => calls.push(["changed", d.title, etag]),
    onDeleted: (d, etag) => calls.push(["deleted", d.id, etag]),
    onResync: (reason) => calls.push(["resync", reason]),
    onError: (e) => calls.push(["error", e.code]),
  };
  return h;
}

async function createPost(tok, title) {
  const res = await ex.api("POST", "/posts", tok, { title, body: "" });
  assert.equal(res.status, 201);
  return { id: (await res.json()).id, etag: res.headers.get("etag") };
}
async function patch(tok, id, fields) {
  const res = await ex.api("PATCH", `/posts/${id}`, tok, fields);
  assert.equal(res.status, 200);
  return res.headers.get("etag");
}
function notify(tenant, body) {
  return fetch(`${ex.url}/api/v1/notify`, {
    method: "POST",
    headers: { Authorization: `Bearer ${publisher(tenant)}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  }).then((r) => r.json());
}
// connections counts a user's connections in presence (sockets and pushes streams).
async function connections(tenant, user) {
  const res = await fetch(`${ex.url}/api/v1/presence/${user}`, { headers: { Authorization: `Bearer ${publisher(tenant)}` } });
  return (await res.json()).connections;
}

// ---- pure functions ---------------------------------------------------------

test("backoff: exponential, jittered within [d/2, d], capped, reset", () => {
  const o = { initial: 500, max: 30000, factor: 2, jitter: 0.5 };
  const nominal = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  nominal.forEach((d, i) => {
    assert.equal(backoffDelay(i, o, () => 0), d / 2, `attempt ${i}, lowest`);
    assert.equal(backoffDelay(i, o, () => 1), d, `attempt ${i}, highest`);
    for (let k = 0; k < 50; k++) {
      const v = backoffDelay(i, o);
      assert.ok(v >= d / 2 && v <= d, `attempt ${i}: ${v} outside [${d / 2}, ${d}]`);
    }
  });
  // Jitter spreads clients: many draws of one step are not all equal.
  assert.ok(new Set(Array.from({ length: 20 }, () => backoffDelay(3, o))).size > 1);
  assert.equal(backoffDelay(100, o, () => 1), 30000, "never above the cap");
  const b = new Backoff({}, () => 1);
  assert.deepEqual([b.next(), b.next(), b.next()], [500, 1000, 2000]);
  b.reset();
  assert.equal(b.next(), DEFAULT_BACKOFF.initial);
});

test("channel patterns and token expiry", () => {
  assert.ok(channelMatches("orders.*", "orders.new"));
  assert.ok(!channelMatches("orders.*", "orders.eu.new"));
  assert.ok(channelMatches("orders.>", "orders.eu.new"));
  assert.ok(!channelMatches("orders.>", "orders"));
  assert.ok(channelMatches("user.123", "user.123"));
  assert.ok(!channelMatches("user.123", ""));
  const exp = Math.floor(Date.now() / 1000) + 60;
  assert.equal(tokenExpiry(token({ sub: "u", exp })), exp * 1000);
  assert.equal(tokenExpiry("not a jwt"), null);
});

// ---- against the example ---------------------------------------------------

test("a dropped socket: reconnects with backoff, resubscribes channels, filters and records from their last ETag", async () => {
  const tenant = "client-drop";
  const tok = token({ sub: "carol", tenant });
  const post = await createPost(tok, "v1");
  const rt = client({ token: tok });
  const states = [];
  rt.on("state", (s) => states.push(s));
  const reconnects = [];
  rt.on("reconnecting", (r) => reconnects.push(r));
  const h = recorder();
  rt.record("posts", post.id, h);
  const pushes = [];
  rt.pushSub("news.*", (data, msg, ack) => {
    pushes.push(msg.event + ":" + data.n);
    ack({ got: data.n });
  });
  rt.setFilters([{ type: "hello" }]);
  await until(() => h.calls.length === 1, "the snapshot");
  assert.deepEqual(h.calls[0], ["snapshot", "v1", post.etag]);
  const first = rt.connectionId;

  // Drop the TCP connection (close 1006), and write while it is down.
  rt._sock.ws.terminate();
  const v2 = await patch(tok, post.id, { title: "v2" });
  const v3 = await patch(tok, post.id, { title: "v3" });
  await until(() => rt.state === "open" && rt.connectionId !== first, "the reconnection");
  assert.equal(reconnects[0].attempt, 1);
  assert.equal(reconnects[0].delay, 200); // random() = 1: the step's full delay
  assert.ok(states.includes("reconnecting"), states.join());
  // Resumed from the last ETag: both missed versions, in order, no snapshot again.
  await until(() => h.calls.length === 3, "the replayed events");
  assert.deepEqual(h.calls.slice(1), [["changed", "v2", v2], ["changed", "v3", v3]]);

  // Channels and filters came back too: a matching push arrives and is acked,
  // one the filter refuses does not.
  await until(async () => {
    const r = await notify(tenant, { channel: "news.today", event: "other", data: { n: 0 } });
    return r.delivered === 0;
  }, "the filter");
  const ok = await notify(tenant, { channel: "news.today", event: "hello", data: { n: 1 }, awaitAcks: "5s" });
  assert.equal(ok.delivered, 1);
  assert.deepEqual(ok.acks.map((a) => [a.connectionId, a.result]), [[rt.connectionId, { got: 1 }]]);
  assert.deepEqual(pushes, ["hello:1"]);

  // Two drops in a row: the delays grow (200, then 400).
  rt._sock.ws.terminate();
  await until(() => reconnects.length === 2, "the second reconnecting");
  await sleep(50);
  rt._sock?.ws?.terminate();
  await until(() => rt.state === "open" && reconnects.length >= 2, "open again");
  if (reconnects.length >= 3) assert.equal(reconnects[2].delay, reconnects[1].delay * 2);
  rt.close();
  assert.equal(rt.state, "closed");
});

test("resync is turned into a fresh snapshot (WebSocket and EventSource)", async () => {
  const tok = token({ sub: "dave", tenant: "client-resync" });
  const post = await createPost(tok, "current");
  const rt = client({ token: tok });
  for (const transport of ["websocket", "eventsource"]) {
    const h = recorder();
    const f = rt.record("posts", post.id, h, { transport, lastEventId: '"unknown-version"' });
    await until(() => h.calls.length === 2, `${transport}: resync and snapshot`);
    assert.deepEqual(h.calls, [["resync", "buffer-miss"], ["snapshot", "current", post.etag]], transport);
    assert.equal(f.lastEventId(), post.etag);
    f.close();
  }
  // Up to date: nothing at all.
  const h = recorder();
  rt.record("posts", post.id, h, { lastEventId: post.etag });
  const v2 = await patch(tok, post.id, { title: "next" });
  await until(() => h.calls.length === 1, "the change");
  assert.deepEqual(h.calls, [["changed", "next", v2]]);
  rt.close();
});

test("a server restart: record and collection streams come back; resync when the buffer is gone", async () => {
  const tok = token({ sub: "erin", tenant: "client-restart" });
  const post = await createPost(tok, "before");
  const rt = client({ token: tok });
  const ws = recorder(), es = recorder(), col = recorder();
  const opens = [];
  rt.record("posts", post.id, ws);
  rt.record("posts", post.id, es, { transport: "eventsource" });
  rt.collection("posts", { ...col, onOpen: (o) => opens.push(o.resumed) });
  await until(() => ws.calls.length === 1 && es.calls.length === 1 && opens.length === 1, "both snapshots and the list");
  const c1 = await patch(tok, post.id, { title: "seen" });
  await until(() => ws.calls.length === 2 && es.calls.length === 2 && col.calls.length === 1, "the change everywhere");

  await ex.stop();
  await until(() => rt.state === "reconnecting", "reconnecting");
  await ex.start();
  const after = await patch(tok, post.id, { title: "after the restart" });
  await until(() => ws.calls.at(-1)?.[2] === after && es.calls.at(-1)?.[2] === after, "the new version on both transports");
  await until(() => opens.length === 2, "the list reopened");
  assert.deepEqual(opens, [false, true]);
  // Nothing in between was lost: either a replay or a resync and a snapshot.
  for (const [name, calls] of [["ws", ws.calls], ["es", es.calls]]) {
    const tail = calls.slice(2).map((c) => c[0]).join(",");
    assert.match(tail, /^(changed|resync,snapshot(,changed)?)$/, `${name}: ${JSON.stringify(calls)}`);
  }
  assert.equal(col.calls[0][2], c1);
  await until(() => col.calls.some((c) => c[0] === "resync" || c[2] === after), "the list resynced (or replayed)");
  rt.close();
});

test("token refresh: the callback runs before expiry and the socket takes the new token in place, without a gap", async () => {
  const tenant = "client-refresh";
  const exp = Math.floor(Date.now() / 1000) + 34;
  const short = token({ sub: "frank", tenant, exp });
  let calls = 0;
  let calledAt = 0;
  let fresh = "";
  const rt = client({
    token: short,
    refreshBefore: 31000, // refresh ~3 s from now, well before exp
    refreshToken: async () => {
      calls++;
      calledAt = Date.now();
      fresh = token({ sub: "frank", tenant, exp: exp + 3600 });
      return fresh;
    },
  });
  const post = await createPost(token({ sub: "frank", tenant }), "r1");
  const h = recorder();
  rt.record("posts", post.id, h);
  const refreshed = [], rotated = [];
  rt.on("refreshed", (r) => refreshed.push(r));
  rt.on("rotated", (r) => rotated.push(r));
  await until(() => h.calls.length === 1, "the snapshot");
  const before = rt.connectionId;
  await until(() => refreshed.length === 1, "the refresh on the socket");
  assert.equal(calls, 1);
  assert.ok(calledAt < exp * 1000 - 25000, "called before expiry, refreshBefore ahead");
  assert.equal(refreshed[0].exp, exp + 3600, "the connection's expiry is the new token's");
  assert.equal(rt.connectionId, before, "the same connection");
  assert.deepEqual(rotated, []);
  assert.equal(rt.state, "open");
  const v2 = await patch(token({ sub: "frank", tenant }), post.id, { title: "r2" });
  await until(() => h.calls.length === 2, "the change after the refresh");
  await sleep(100);
  assert.deepEqual(h.calls.slice(1), [["changed", "r2", v2]], "once, not doubled");

  // A token of another user is refused by the socket (forbidden): the
  // client moves to a new socket with it (make before break).
  rt._setToken(token({ sub: "grace", tenant }));
  await until(() => rotated.length === 1, "the rotation");
  assert.notEqual(rt.connectionId, before);
  assert.equal(rt.state, "open");
  rt.close();
});

/** blockable returns a WebSocket constructor that fails like a blocked one while blocked.on. */
function blockable() {
  const blocked = { on: true, attempts: 0 };
  class MaybeWS {
    constructor(url) {
      blocked.attempts++;
      if (!blocked.on) return new WebSocket(url);
      this.readyState = 0;
      setTimeout(() => {
        this.readyState = 3;
        this.onerror?.({});
        this.onclose?.({ code: 1006, reason: "" });
      }, 5);
    }
    send() {
      throw new Error("not open");
    }
    close() {}
  }
  return { blocked, MaybeWS };
}

for (const mode of ["sse", "poll"]) {
  test(`fallback (${mode}): a WebSocket that cannot connect moves pushes, channels, acks and records to HTTP, and back once it can`, async () => {
    const tenant = `client-fallback-${mode}`;
    const tok = token({ sub: "hana", tenant });
    const post = await createPost(tok, "f1");
    const { blocked, MaybeWS } = blockable();
    const rt = client({ token: tok, WebSocket: MaybeWS, fallback: mode, backoff: { initial: 100, max: 400 } });
    const transports = [];
    rt.on("transport", (t) => transports.push(t));
    const h = recorder();
    rt.record("posts", post.id, h);
    const got = [];
    rt.pushSub("news.*", (data, msg, ack) => {
      got.push(`${msg.channel}:${data.n}`);
      ack({ n: data.n });
    });
    rt.onMessage("direct", (data, msg, ack) => {
      got.push(`direct:${data.n}`);
      ack({ direct: data.n });
    });
    await until(() => rt.transportInUse === mode && rt.state === "open", `the ${mode} fallback`);
    assert.ok(blocked.attempts >= 2, "the WebSocket was tried first");
    await until(() => h.calls.length === 1, "the snapshot over the record's SSE stream");
    assert.deepEqual(h.calls[0], ["snapshot", "f1", post.etag]);
    const v2 = await patch(tok, post.id, { title: "f2" });
    await until(() => h.calls.length === 2, "the change over SSE");
    assert.deepEqual(h.calls[1], ["changed", "f2", v2]);

    // Pushes to the user and to its channels arrive and are acked over HTTP.
    let r;
    for (;;) {
      r = await notify(tenant, { users: ["hana"], event: "direct", data: { n: 1 }, awaitAcks: "5s" });
      if (r.delivered === 1) break; // a poll may be between two requests
    }
    assert.deepEqual(r.acks.map((a) => [a.user, a.result]), [["hana", { direct: 1 }]]);
    for (;;) {
      r = await notify(tenant, { channel: "news.today", event: "n", data: { n: 2 }, awaitAcks: "5s" });
      if (r.delivered === 1) break;
    }
    assert.deepEqual(r.acks.map((a) => a.result), [{ n: 2 }]);
    await until(() => got.includes("news.today:2"), "the channel push");

    // The WebSocket can connect again: it takes over, the fallback ends.
    blocked.on = false;
    await until(() => rt.transportInUse === "websocket" && rt._fb === null, "back on the WebSocket");
    assert.deepEqual(transports, [mode, "websocket"]);
    const wsConn = rt.connectionId;
    // The server notices the fallback's stream ending when its connection
    // closes: wait for it before counting.
    await until(async () => (await connections(tenant, "hana")) === 1, "the fallback's stream to end on the server");
    r = await notify(tenant, { users: ["hana"], event: "direct", data: { n: 3 }, awaitAcks: "5s" });
    assert.deepEqual([r.delivered, r.acks[0].connectionId], [1, wsConn], "only the socket is left");
    const v3 = await patch(tok, post.id, { title: "f3" });
    await until(() => h.calls.length === 3, "the change over the socket");
    await sleep(100);
    assert.deepEqual(h.calls[2], ["changed", "f3", v3]);
    assert.equal(h.calls.length, 3, "nothing doubled at the hand-over");
    assert.equal(got.filter((g) => g === "direct:1").length, 1);
    rt.close();
  });
}

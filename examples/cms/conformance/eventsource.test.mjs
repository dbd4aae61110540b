// Conformance of examples/cms with a WHATWG EventSource no one here wrote
// (the npm "eventsource" package). Run: npm ci && npm test (needs Go to
// build the example; .ci/run does both).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { EventSource } from "eventsource";
import { b64, guard, startExample, tamper, token } from "./harness.mjs";
import { follow, startProxy } from "./clients.mjs";

let ex; // the running example (harness.mjs)
let proxy; // a TCP proxy in front of it that can cut and hold connections

const alice = token({ sub: "alice" });
const bob = token({ sub: "bob" });
const backend = token({ sub: "backend", scope: "publish" });

const startServer = () => ex.start();
const stopServer = () => ex.stop();

// --- helpers ------------------------------------------------------------------

const api = (...args) => ex.api(...args);

async function createPost(tok, fields) {
  const res = await api("POST", "/posts", tok, fields);
  assert.equal(res.status, 201);
  return { post: await res.json(), etag: res.headers.get("etag") };
}

async function patchPost(tok, id, fields) {
  const res = await api("PATCH", `/posts/${id}`, tok, fields);
  assert.equal(res.status, 200);
  return res.headers.get("etag");
}

before(async () => {
  ex = await startExample();
  proxy = await startProxy(ex.port);
});

after(async () => {
  await proxy?.close();
  await ex?.close();
});

// --- tests ----------------------------------------------------------------------

test("event ids are the REST ETags of the same versions", async () => {
  const { post, etag } = await createPost(alice, { title: "one", body: "b" });
  const f = follow(`${proxy.url}/api/v1/posts/${post.id}/subscribe?token=${alice}`);
  try {
    await f.until((ev) => ev.length >= 1, "the snapshot");
    assert.deepEqual([f.events[0].type, f.events[0].id], ["snapshot", etag]);
    const e2 = await patchPost(alice, post.id, { title: "two" });
    await f.until((ev) => ev.length >= 2, "the change");
    assert.deepEqual([f.events[1].type, f.events[1].id, f.events[1].data.title], ["changed", e2, "two"]);
  } finally {
    f.es.close();
  }
});

test("a cut connection resumes from Last-Event-ID with exactly the missed events", async () => {
  const { post } = await createPost(alice, { title: "v0" });
  const f = follow(`${proxy.url}/api/v1/posts/${post.id}/subscribe?token=${alice}`);
  try {
    await f.until((ev) => ev.length >= 1, "the snapshot");
    proxy.cut(); // the client's connection dies; its reconnect is held
    const missed = [];
    for (const title of ["v1", "v2", "v3"]) missed.push(await patchPost(alice, post.id, { title }));
    const stop = Date.now() + guard;
    while (proxy.heldCount() === 0 && Date.now() < stop) await new Promise((r) => setTimeout(r, 50));
    proxy.release();
    await f.until((ev) => ev.length >= 4, "the missed events");
    const live = await patchPost(alice, post.id, { title: "v4" });
    await f.until((ev) => ev.length >= 5, "the next live event");
    assert.deepEqual(
      f.events.map((e) => [e.type, e.id]),
      [["snapshot", f.events[0].id], ...missed.map((id) => ["changed", id]), ["changed", live]],
    );
  } finally {
    f.es.close();
  }
});

test("after a restart that lost the buffer: the next version resumes exactly; an unknown point gets resync, then the stored record", async () => {
  const { post } = await createPost(alice, { title: "before" });
  const f = follow(`${proxy.url}/api/v1/posts/${post.id}/subscribe?token=${alice}`);
  try {
    await f.until((ev) => ev.length >= 1, "the snapshot");
    proxy.cut();
    await stopServer();
    await startServer(); // a new process: its buffer is empty
    const now = await patchPost(alice, post.id, { title: "after" });
    proxy.release();
    // The first write after the restart names the version the client had
    // (PrevETag): it missed nothing, and gets exactly that write.
    await f.until((ev) => ev.length >= 2, "the next version");
    assert.deepEqual(f.events.slice(1).map((e) => [e.type, e.id]), [["changed", now]]);
    assert.equal(f.events[1].data.title, "after");
    // A point the buffer cannot place: resync, then the stored record.
    const g = follow(`${proxy.url}/api/v1/posts/${post.id}/subscribe?token=${alice}&lastEventId=${encodeURIComponent('"unknown-version"')}`);
    try {
      await g.until((ev) => ev.length >= 2, "resync and snapshot");
      assert.deepEqual(
        g.events.map((e) => [e.type, e.type === "resync" ? e.data.reason : e.id]),
        [["resync", "buffer-miss"], ["snapshot", now]],
      );
      assert.equal(g.events[1].data.title, "after");
    } finally {
      g.es.close();
    }
  } finally {
    f.es.close();
  }
});

test("line breaks in published data cannot forge frames", async () => {
  const { post } = await createPost(alice, { title: "t" });
  const f = follow(`${proxy.url}/api/v1/posts/${post.id}/subscribe?token=${alice}`);
  try {
    await f.until((ev) => ev.length >= 1, "the snapshot");
    const evil = "x\n\nevent: deleted\nid: forged\ndata: {}\n\r\nevent: deleted\rdata: {}\r\r";
    // Pretty-printed JSON puts raw line breaks between tokens too.
    const body = `{\n  "event": "changed",\r\n  "data": {\r  "id": ${JSON.stringify(post.id)},\n  "title": ${JSON.stringify(evil)}\n}\n}`;
    const res = await api("POST", `/posts/${post.id}/events`, backend, body);
    assert.equal(res.status, 202);
    const { id } = await res.json();
    await f.until((ev) => ev.length >= 2, "the published event");
    await new Promise((r) => setTimeout(r, 200)); // anything forged would have arrived with it
    assert.deepEqual(
      f.events.slice(1).map((e) => [e.type, e.id, e.data.title]),
      [["changed", id, evil]],
    );
  } finally {
    f.es.close();
  }
});

test("a private post never reaches another user's collection stream", async () => {
  const a = follow(`${proxy.url}/api/v1/posts/subscribe?token=${alice}`);
  const b = follow(`${proxy.url}/api/v1/posts/subscribe?token=${bob}`);
  try {
    await new Promise((r) => setTimeout(r, 200)); // both streams open
    const secret = await createPost(alice, { title: "secret", private: true });
    await patchPost(alice, secret.post.id, { title: "still secret" });
    assert.equal((await api("DELETE", `/posts/${secret.post.id}`, alice)).status, 204);
    const open = await createPost(alice, { title: "public" });
    await a.until((ev) => ev.length >= 4, "alice's four events");
    await b.until((ev) => ev.some((e) => e.id === open.etag), "bob's public event");
    assert.deepEqual(
      b.events.map((e) => [e.type, e.data.id]),
      [["snapshot", open.post.id]],
    );
    assert.deepEqual(
      a.events.map((e) => e.type),
      ["snapshot", "changed", "deleted", "snapshot"],
    );
  } finally {
    a.es.close();
    b.es.close();
  }
});

test("refused credentials end the EventSource (no retry loop)", async () => {
  const { post } = await createPost(alice, { title: "t" });
  const bad = [
    "",
    token({ sub: "alice", exp: Math.floor(Date.now() / 1000) - 60 }),
    tamper(token({ sub: "alice" })),
    `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "alice", exp: 9999999999 })}.`,
  ];
  for (const tok of bad) {
    const f = follow(`${proxy.url}/api/v1/posts/${post.id}/subscribe?token=${tok}`);
    const stop = Date.now() + guard;
    while (f.errors.length === 0 && Date.now() < stop) await new Promise((r) => setTimeout(r, 50));
    assert.equal(f.errors[0]?.code, 401, `token ${JSON.stringify(tok.slice(0, 20))}`);
    assert.equal(f.es.readyState, EventSource.CLOSED);
    assert.equal(f.events.length, 0);
    f.es.close();
  }
});

// The fault suite's checker (faultcheck.mjs) on made-up runs: each kind of
// violation is found where it is, and nothing where there is none.
import { test } from "node:test";
import assert from "node:assert/strict";
import { check, report } from "./faultcheck.mjs";

const tag = (post, v) => `"${post}-v${v}"`;

/** run builds a run of one subscriber of tenant t1 following post p (versions 0..last). */
function run(frames, { last = 5, post = "p", tenant = "t1", extra = {} } = {}) {
  const written = new Map([[post, new Map()]]);
  for (let v = 0; v <= last; v++) written.get(post).set(v, tag(post, v));
  const sub = {
    name: "sub-1",
    tenant,
    posts: [post],
    frames: new Map([[post, frames.map((f, i) => ({ t: i * 10, conn: 1, inst: 0, post, ...f }))]]),
    ...extra,
  };
  return check({
    subs: [sub],
    tenantOf: new Map([[post, "t1"], ["q", "t2"]]),
    written,
    stored: new Map([[post, { v: last, etag: tag(post, last) }]]),
    faults: [{ kind: "redis", start: 0, end: 10 }],
  });
}

const rec = (v, type = "changed") => ({ type, v, etag: tag("p", v) });
const resync = { type: "resync" };
const kindsOf = (r) => r.violations.map((v) => v.kind);

test("in order, no violation; resync then a jump is announced", () => {
  let r = run([rec(0, "snapshot"), rec(1), rec(2), rec(3), rec(4), rec(5)]);
  assert.deepEqual(kindsOf(r), []);
  assert.equal(r.counts.frames, 6);
  r = run([rec(0, "snapshot"), rec(1), resync, rec(4, "snapshot"), rec(5)]);
  assert.deepEqual(kindsOf(r), []);
  assert.equal(r.counts.resyncs, 1);
  assert.equal(r.counts.announcedJumps, 1);
  assert.equal(r.perFault.redis.resyncs, 1);
});

test("resync then the version the subscriber had is fine, and counted as needless", () => {
  const r = run([rec(0, "snapshot"), rec(1), resync, rec(1, "snapshot"), rec(2), rec(3), rec(4), rec(5)]);
  assert.deepEqual(kindsOf(r), []);
  assert.equal(r.counts.needlessResyncs, 1);
});

test("a resync with no Redis restart since the subscriber's last frame is avoidable", () => {
  const frames = [rec(0, "snapshot"), rec(1), resync, rec(3, "snapshot"), rec(4), rec(5)];
  // run() puts a redis fault over 0..10 ms: frame 1 is at 10 ms, the resync at 20 ms.
  assert.equal(run(frames).counts.avoidableResyncs, 1);
  const early = frames.map((f, i) => ({ ...f, t: i * 10 }));
  early[1] = { ...early[1], t: 5 }; // the last frame before the restart (10 ms)
  const sub = { name: "s", tenant: "t1", posts: ["p"], frames: new Map([["p", early.map((f) => ({ conn: 1, inst: 0, post: "p", ...f }))]]) };
  const r = check({
    subs: [sub],
    tenantOf: new Map([["p", "t1"]]),
    written: new Map([["p", new Map([0, 1, 2, 3, 4, 5].map((v) => [v, tag("p", v)]))]]),
    stored: new Map([["p", { v: 5, etag: tag("p", 5) }]]),
    faults: [{ kind: "redis", start: 0, end: 10 }],
  });
  assert.equal(r.counts.avoidableResyncs, 0);
  assert.equal(r.perFault.redis.resyncs, 1);
});

test("duplicates, reorders and unannounced gaps", () => {
  let r = run([rec(0, "snapshot"), rec(1), rec(1), rec(2), rec(3), rec(4), rec(5)]);
  assert.deepEqual(kindsOf(r), ["duplicate"]);
  r = run([rec(0, "snapshot"), rec(2), rec(1), rec(3), rec(4), rec(5)]);
  assert.deepEqual(kindsOf(r), ["gap", "reorder"]);
  r = run([rec(0, "snapshot"), rec(1), rec(4), rec(5)]);
  assert.deepEqual(kindsOf(r), ["gap"]);
  assert.equal(r.counts.gapVersions, 2);
  assert.match(r.violations[0].detail, /missed 2,3/);
  r = run([rec(0, "snapshot"), rec(1), rec(2), resync, rec(1, "snapshot"), rec(2), rec(3), rec(4), rec(5)]);
  assert.deepEqual(kindsOf(r), ["reorder", "duplicate"]);
});

test("a duplicate across a reconnect is told from one within a connection", () => {
  const frames = [rec(0, "snapshot"), rec(1), rec(2), rec(3), rec(4), rec(5)].map((f) => ({ ...f, conn: 1 }));
  frames.splice(3, 0, { ...rec(2), conn: 2 });
  const r = run(frames);
  assert.deepEqual(kindsOf(r), ["duplicate"]);
  assert.equal(r.counts.acrossReconnect, 1);
});

test("a wrong ETag, a frame of another tenant, a deleted frame, a stale final view", () => {
  let r = run([rec(0, "snapshot"), { type: "changed", v: 1, etag: '"other"' }, rec(2), rec(3), rec(4), rec(5)]);
  assert.deepEqual(kindsOf(r), ["etag"]);
  r = run([rec(0, "snapshot"), rec(1), rec(2), rec(3), rec(4)]);
  assert.deepEqual(kindsOf(r), ["final"]);
  r = run([rec(0, "snapshot"), rec(1), rec(2), rec(3), rec(4), rec(5), { type: "deleted", etag: '"tomb"' }]);
  assert.deepEqual(kindsOf(r), ["deleted"]);
  const sub = {
    name: "sub-2",
    tenant: "t1",
    posts: ["p"],
    frames: new Map([
      ["p", [rec(5, "snapshot")].map((f) => ({ ...f, t: 0, conn: 1, inst: 0, post: "p" }))],
      ["q", [{ type: "changed", v: 1, etag: tag("q", 1), t: 1, conn: 1, inst: 0, post: "q" }]],
    ]),
  };
  r = check({
    subs: [sub],
    tenantOf: new Map([["p", "t1"], ["q", "t2"]]),
    written: new Map([["p", new Map([[5, tag("p", 5)]])], ["q", new Map([[1, tag("q", 1)]])]]),
    stored: new Map([["p", { v: 5, etag: tag("p", 5) }]]),
  });
  assert.deepEqual(kindsOf(r), ["foreign"]);
});

test("a version no write named must have one ETag everywhere", () => {
  const written = new Map([["p", new Map([[0, tag("p", 0)], [2, tag("p", 2)]])]]);
  const mk = (name, etag1) => ({
    name,
    tenant: "t1",
    posts: ["p"],
    frames: new Map([["p", [rec(0, "snapshot"), { type: "changed", v: 1, etag: etag1 }, rec(2)].map((f, i) => ({ ...f, t: i, conn: 1, inst: 0, post: "p" }))]]),
  });
  const args = (a, b) => ({ subs: [mk("a", a), mk("b", b)], tenantOf: new Map([["p", "t1"]]), written, stored: new Map([["p", { v: 2, etag: tag("p", 2) }]]) });
  assert.deepEqual(kindsOf(check(args('"x"', '"x"'))), []);
  assert.deepEqual(kindsOf(check(args('"x"', '"y"'))), ["etag"]);
});

test("the report names every kind found, with the frames around", () => {
  const r = run([rec(0, "snapshot"), rec(1), rec(1), rec(4), rec(5)]);
  const text = report(r);
  assert.match(text, /duplicates 1, reorders 0, unannounced gaps 1/);
  assert.match(text, /duplicate: 1; e\.g\./);
  assert.match(text, /  > 0\.020s changed v1/);
});

test("a deleted post: one deleted frame, again only after a resync, nothing after it, one ETag", () => {
  const doomed = (frames, subs = 1) => {
    const written = new Map([["p", new Map([0, 1, 2].map((v) => [v, tag("p", v)]))]]);
    const mk = (n) => ({
      name: `sub-${n}`,
      tenant: "t1",
      posts: ["p"],
      frames: new Map([["p", (Array.isArray(frames[0]) ? frames[n] : frames).map((f, i) => ({ t: i * 10, conn: 1, inst: 0, post: "p", ...f }))]]),
    });
    return check({
      subs: Array.from({ length: subs }, (_, n) => mk(n)),
      tenantOf: new Map([["p", "t1"]]),
      written,
      stored: new Map([["p", { deleted: true }]]),
    });
  };
  const gone = { type: "deleted", etag: '"tomb"' };
  assert.deepEqual(kindsOf(doomed([rec(0, "snapshot"), rec(1), rec(2), gone])), []);
  assert.deepEqual(kindsOf(doomed([rec(0, "snapshot"), rec(1), resync, gone, resync, gone])), []);
  assert.deepEqual(kindsOf(doomed([rec(0, "snapshot"), gone, gone])), ["duplicate"]);
  assert.deepEqual(kindsOf(doomed([rec(0, "snapshot"), gone, rec(1)])), ["reorder"]);
  assert.deepEqual(kindsOf(doomed([rec(0, "snapshot"), rec(1)])), ["final"]);
  assert.deepEqual(kindsOf(doomed([[rec(0, "snapshot"), gone], [rec(0, "snapshot"), { type: "deleted", etag: '"other"' }]], 2)), ["etag"]);
});

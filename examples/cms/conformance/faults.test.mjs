// The order promise under faults (PROTOCOL.md §2, §3, §6, §9): three
// instances of examples/cms sharing one redis-server and one database
// (a SQLite file, then a fresh PostgreSQL database, then a fresh MariaDB one),
// 20 posts in two tenants (and 4 more that are deleted during the faults),
// 4 writers adding 1 to posts' counters through random instances, and 100 subscribers (60 EventSources of the npm
// "eventsource" package and 40 WebSockets of the npm "ws" package following
// 4 records each), every one going through a TCP proxy per instance and
// moving to a random instance whenever it is cut; 16 more join during the
// faults, half of them from the ETag of a GET (their first frame: nothing
// may be skipped after it). Meanwhile faults drawn
// from a seeded PRNG: an instance SIGKILLed and restarted, the redis-server
// SIGKILLed for 2–5 s and restarted empty, the redis-server SIGSTOPped for
// 1–5 s (a stall: commands time out, then run late), an instance SIGSTOPped
// for 1–2 s, an instance stopped with SIGTERM (a deploy: it closes its
// clients and drains) and started again, client connections dropped. Then
// a quiet period, a last write to every post left, time to settle, and the
// checker (faultcheck.mjs): per record and subscriber, versions strictly
// increasing, no duplicate, no jump without a resync first, no frame of
// another tenant, every ETag the one its write answered, a deleted post's
// deleted received once with nothing after it, and each subscriber's last
// view equal to the database.
//
//   FAULT_SEED      the PRNG's seed (default: random, printed; replays the
//                   same schedule of faults)
//   FAULT_DURATION  seconds of faults per database (default 20)
//   FAULT_DBS       which databases, comma-separated (default
//                   sqlite,postgres,mysql; a server that does not answer is
//                   skipped, except on CI; none: no run)
//   FAULT_KINDS     which faults, comma-separated (default
//                   kill,redis,redisstop,stop,term,drop)
//   FAULT_REPORT    a file to write each run's counts and violations to (JSON)
//   FAULT_LOGS      a directory to copy each instance's log to (<db>-<i>.log;
//                   LOG_LEVEL=debug makes them say more)
//   TEST_POSTGRES_URL, TEST_MYSQL_URL  where databases are created (defaults:
//                   the servers .ci/run starts)
//
//   FAULT_DURATION=120 FAULT_DBS=postgres node --test faults.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { buildExample, createDatabase, databaseSkip, needs, sleep, startExample, startRedis, token } from "./harness.mjs";
import { startProxy } from "./clients.mjs";
import { check, report } from "./faultcheck.mjs";

const seed = process.env.FAULT_SEED ? Number(process.env.FAULT_SEED) >>> 0 : crypto.randomInt(2 ** 31);
const faultMs = Math.round(Number(process.env.FAULT_DURATION || 20) * 1000);
const dbKinds = (process.env.FAULT_DBS || "sqlite,postgres,mysql").split(",").map((s) => s.trim()).filter((s) => s && s !== "none");
for (const k of dbKinds) if (!["sqlite", "postgres", "mysql"].includes(k)) throw new Error(`FAULT_DBS: unknown database ${k} (sqlite, postgres, mysql, or none)`);
const allFaults = ["kill", "redis", "redisstop", "stop", "term", "drop"];
const faultKinds = (process.env.FAULT_KINDS || allFaults.join(",")).split(",").map((s) => s.trim()).filter(Boolean);
for (const k of faultKinds) if (!allFaults.includes(k)) throw new Error(`FAULT_KINDS: unknown fault ${k} (${allFaults.join(", ")})`);

const POSTS = 20;
const DOOMED = 4; // more posts, written like the others and deleted during the faults
const LATE = 16; // subscribers joining during the faults, half from a GET's ETag
const TENANTS = ["fault-a", "fault-b"];
const WRITERS = 4;
const SSE_SUBS = 60;
const WS_SUBS = 40;
const WS_RECORDS = 4; // records per WebSocket
const QUIET_MS = 3000;
const SETTLE_MS = 30000;
// Every loop is bounded in time (the run's phases) and in count:
const MAX_WRITES = 20000; // per writer
const MAX_FAULTS = 1000;
const MAX_CONNECTIONS = 2000; // per subscriber

// --- a seeded PRNG (mulberry32), one stream per purpose ------------------------

function prng(s) {
  let a = s >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const streamOf = (name) => prng(seed ^ crypto.createHash("sha256").update(name).digest().readUInt32BE(0));
const pickOf = (rnd, xs) => xs[Math.floor(rnd() * xs.length)];

let bin; // examples/cms, built once for every database

console.log(`faults: seed ${seed} (replay: FAULT_SEED=${seed}), ${faultMs / 1000} s of ${faultKinds.join(",")} per database, databases ${dbKinds.join(",")}`);

const redisSkip = needs("redis-server");
for (const kind of dbKinds) {
  const skip = redisSkip || databaseSkip(kind);
  test(`faults on ${kind}: per record, every subscriber gets every version once, in order, or a resync first`, { skip, timeout: faultMs + 240000 }, async () => {
    bin ??= buildExample();
    const result = await runFaults(kind);
    const text = report(result, 3);
    console.log(`[${kind}] seed ${seed}\n${text}`);
    if (process.env.FAULT_REPORT) {
      let prior = [];
      try {
        prior = JSON.parse(fs.readFileSync(process.env.FAULT_REPORT, "utf8"));
      } catch {}
      prior.push({ kind, seed, faultMs, counts: result.counts, perFault: result.perFault, stats: result.stats, violations: result.violations.slice(0, 2000) });
      fs.writeFileSync(process.env.FAULT_REPORT, JSON.stringify(prior, null, 1));
    }
    assert.equal(result.violations.length, 0, `seed ${seed} on ${kind}: ${result.violations.length} violations\n${text.split("\n").slice(0, 3).join("\n")}`);
  });
}

/** runFaults runs one database's fault run and returns the checker's result. */
async function runFaults(kind) {
  const t0 = performance.now();
  const now = () => Math.round(performance.now() - t0);
  const log = (...a) => console.log(`[${kind} ${(now() / 1000).toFixed(1)}s]`, ...a);
  const rnd = { fault: streamOf("faults"), write: streamOf("writes"), sub: streamOf("subscribers"), drop: streamOf("drops") };
  const cleanup = []; // run last-pushed first, whatever happens
  const stats = { writes: 0, writeFailures: {}, writeUnknown: 0, subscribeFailures: {}, faults: {}, skippedFaults: 0, logErrors: 0 };
  const ctx = { stopping: false };
  try {
    // --- the system -------------------------------------------------------------
    const redis = await startRedis();
    cleanup.push(() => redis.kill());
    const env = { REDIS_URL: redis.url };
    if (kind !== "sqlite") {
      const db = createDatabase(kind);
      cleanup.push(() => db.drop());
      env.DATABASE_URL = db.url;
    }
    const insts = [];
    for (let i = 0; i < 3; i++) {
      const ex = await startExample({ env, bin, degraded: true, db: insts[0]?.db });
      insts.push(ex);
      cleanup.push(() => ex.close());
    }
    const state = insts.map(() => ({ killed: false, stopped: false, busy: false }));
    const proxies = [];
    for (const ex of insts) {
      const p = await startProxy(ex.port);
      proxies.push(p);
      cleanup.push(() => p.close());
    }
    /** pick: a random instance that is not down (a load balancer's choice). */
    const pick = (r) => {
      const live = insts.map((_, i) => i).filter((i) => !state[i].killed);
      return pickOf(r, live.length ? live : [0, 1, 2]);
    };
    log(`redis on ${redis.port}; instances on ${insts.map((e) => e.port).join(", ")}; proxies ${proxies.map((p) => p.url.split(":").pop()).join(", ")}`);

    // --- the posts --------------------------------------------------------------
    const writerTok = Object.fromEntries(TENANTS.map((t) => [t, token({ sub: "writer", tenant: t })]));
    const posts = [];
    const tenantOf = new Map();
    const written = new Map(); // post → version → ETag its write answered
    const writeConflicts = [];
    const record = (post, v, etag, how) => {
      const m = written.get(post);
      if (m.has(v)) writeConflicts.push({ post, detail: `two writes answered version ${v}: ${m.get(v)} and ${etag} (${how})` });
      else m.set(v, etag);
    };
    for (let i = 0; i < POSTS + DOOMED; i++) {
      const tenant = TENANTS[i % TENANTS.length];
      const res = await insts[i % 3].api("POST", "/posts", writerTok[tenant], { title: `post ${i}`, body: "fault run" });
      const text = await res.text();
      assert.equal(res.status, 201, `create: ${res.status} ${text}`);
      const p = JSON.parse(text);
      posts.push({ id: p.id, tenant, doomed: i >= POSTS });
      tenantOf.set(p.id, tenant);
      written.set(p.id, new Map([[p.counter, res.headers.get("etag")]]));
    }
    const postsOf = (tenant) => posts.filter((p) => p.tenant === tenant).map((p) => p.id);
    const kept = posts.filter((p) => !p.doomed);

    // --- the subscribers --------------------------------------------------------
    const subs = [];
    const closers = [];
    cleanup.push(() => {
      ctx.stopping = true;
      closers.forEach((c) => c());
    });
    for (let n = 0; n < SSE_SUBS; n++) {
      const post = posts[n % posts.length];
      const sub = { name: `sse-${n}`, kind: "sse", tenant: post.tenant, posts: [post.id], frames: new Map([[post.id, []]]), refusals: [], conns: 0 };
      subs.push(sub);
      closers.push(followSSE(sub, { ctx, proxies, pick, rnd: rnd.sub, now, stats }));
    }
    for (let n = 0; n < WS_SUBS; n++) {
      const tenant = TENANTS[n % TENANTS.length];
      const mine = [...postsOf(tenant)];
      const chosen = [];
      while (chosen.length < WS_RECORDS) chosen.push(...mine.splice(Math.floor(rnd.sub() * mine.length), 1));
      const sub = { name: `ws-${n}`, kind: "ws", tenant, posts: chosen, frames: new Map(chosen.map((id) => [id, []])), refusals: [], conns: 0 };
      // Two of them also ask for a post of the other tenant: refused
      // (not_found), and never a frame of it.
      if (n < 2) sub.probe = postsOf(TENANTS[(n + 1) % TENANTS.length])[0]; // not a doomed one
      subs.push(sub);
      closers.push(followWS(sub, { ctx, proxies, pick, rnd: rnd.sub, now, stats }));
    }
    const streams = () => subs.flatMap((s) => s.posts.map((p) => [s, p]));
    const lastFrame = (s, p) => s.frames.get(p)?.findLast((f) => f.type !== "resync");
    await waitFor(() => streams().every(([s, p]) => lastFrame(s, p)), 20000);
    const unstarted = streams().filter(([s, p]) => !lastFrame(s, p));
    assert.equal(unstarted.length, 0, `before any fault, ${unstarted.length} streams have no snapshot: ${unstarted.slice(0, 5).map(([s, p]) => `${s.name}/${p}`).join(" ")}`);
    log(`${subs.length} subscribers follow ${streams().length} record streams`);

    // --- writers ----------------------------------------------------------------
    let writing = true;
    const patch = async (i, post) => {
      try {
        const res = await fetch(`${insts[i].url}/api/v1/posts/${post.id}`, {
          method: "PATCH",
          headers: { Authorization: `Bearer ${writerTok[post.tenant]}`, "Content-Type": "application/json" },
          body: '{"increment":1}',
          signal: AbortSignal.timeout(10000),
        });
        const text = await res.text();
        if (res.status === 404 && !post.doomed) writeConflicts.push({ post: post.id, detail: `PATCH via instance ${i} answered 404: ${text.slice(0, 200)}` });
        if (res.status !== 200) {
          const k = res.status === 404 && post.doomed ? "404 (deleted)" : res.status;
          stats.writeFailures[k] = (stats.writeFailures[k] ?? 0) + 1;
          // A 5xx may have committed (the answer failed after): unknown.
          if (res.status >= 500) stats.writeUnknown++;
          return false;
        }
        stats.writes++;
        record(post.id, JSON.parse(text).counter, res.headers.get("etag"), `via instance ${i}`);
        return true;
      } catch {
        stats.writeUnknown++; // cut or timed out: committed or not, unknown
        return false;
      }
    };
    const writers = [];
    for (let w = 0; w < WRITERS; w++) {
      writers.push(
        (async () => {
          for (let n = 0; writing && n < MAX_WRITES; n++) {
            await patch(pick(rnd.write), pickOf(rnd.write, posts));
            await sleep(20 + rnd.write() * 50);
          }
        })(),
      );
    }

    // --- deletes: each doomed post once, at a random time during the faults -----
    const deleted = new Set(); // DELETE answered 204 (or 404 after a try of unknown outcome)
    const rndDelete = streamOf("deletes");
    const deleters = posts
      .filter((p) => p.doomed)
      .map(async (post) => {
        await sleep((0.2 + rndDelete() * 0.6) * faultMs);
        let unknown = false;
        for (let attempt = 0; attempt < 20; attempt++) {
          const i = pick(rndDelete);
          try {
            const res = await fetch(`${insts[i].url}/api/v1/posts/${post.id}`, {
              method: "DELETE",
              headers: { Authorization: `Bearer ${writerTok[post.tenant]}` },
              signal: AbortSignal.timeout(10000),
            });
            const text = await res.text();
            if (res.status === 204 || (res.status === 404 && unknown)) {
              deleted.add(post.id);
              log(`deleted post ${post.id} via instance ${i}`);
              return;
            }
            if (res.status < 500) {
              writeConflicts.push({ post: post.id, detail: `DELETE via instance ${i} answered ${res.status}: ${text.slice(0, 200)}` });
              return;
            }
            unknown = true; // a 5xx may have committed
          } catch {
            unknown = true; // cut or timed out
          }
          await sleep(500);
        }
      });

    // --- late joiners: during the faults, a subscriber joins now and then -------
    // Half fetch the post first and subscribe from its ETag (PROTOCOL §3:
    // no gap after the GET: the GET is their first frame), half subscribe
    // with no resume point (a snapshot first).
    const rndJoin = streamOf("joiners");
    const joining = (async () => {
      for (let j = 0; j < LATE && writing; j++) {
        await sleep((faultMs / (LATE + 1)) * (0.5 + rndJoin()));
        if (!writing) break;
        const post = pickOf(rndJoin, kept);
        const sse = j % 4 < 2;
        const sub = { name: `late-${sse ? "sse" : "ws"}-${j}`, kind: sse ? "sse" : "ws", tenant: post.tenant, posts: [post.id], frames: new Map([[post.id, []]]), refusals: [], conns: 0 };
        let from = null;
        if (j % 2 === 0) {
          for (let attempt = 0; attempt < 3 && !from; attempt++) {
            const i = pick(rndJoin);
            try {
              const res = await fetch(`${insts[i].url}/api/v1/posts/${post.id}`, { headers: { Authorization: `Bearer ${writerTok[post.tenant]}` }, signal: AbortSignal.timeout(5000) });
              const text = await res.text();
              if (res.status !== 200) continue;
              from = res.headers.get("etag");
              push(sub, { t: now(), type: "snapshot", conn: 0, inst: i, post: post.id, etag: from, v: JSON.parse(text).counter, viaGET: true });
            } catch {}
          }
        }
        subs.push(sub);
        closers.push((sse ? followSSE : followWS)(sub, { ctx, proxies, pick, rnd: rnd.sub, now, stats, from }));
      }
    })();

    // --- faults -----------------------------------------------------------------
    const faults = [];
    const healthy = () => state.filter((s) => !s.killed && !s.stopped && !s.busy).length;
    let redisBusy = false;
    const restart = async (i) => {
      for (let attempt = 1; ; attempt++) {
        try {
          await insts[i].start();
          return;
        } catch (err) {
          if (attempt === 5) throw new Error(`instance ${i} does not start again: ${err.message}`);
          log(`instance ${i} did not start (attempt ${attempt}): ${err.message.split("\n")[0]}`);
          await sleep(1000);
        }
      }
    };
    const runFault = async (n, kind, target, length, fraction) => {
      const f = { n, kind, target, start: now(), end: null };
      const st = state[target];
      switch (kind) {
        case "kill":
          if (st.busy || healthy() < 2) return stats.skippedFaults++;
          st.busy = st.killed = true;
          faults.push(f);
          await insts[target].kill();
          log(`fault ${n}: instance ${target} SIGKILLed`);
          await sleep(500 + length * 2500);
          await restart(target);
          st.busy = st.killed = false;
          log(`fault ${n}: instance ${target} restarted`);
          break;
        case "redis": {
          if (redisBusy) return stats.skippedFaults++;
          redisBusy = true;
          faults.push(f);
          await redis.kill();
          const down = 2000 + length * 3000;
          log(`fault ${n}: redis-server SIGKILLed for ${(down / 1000).toFixed(1)} s`);
          await sleep(down);
          await redis.start();
          redisBusy = false;
          log(`fault ${n}: redis-server restarted (empty)`);
          break;
        }
        case "redisstop": {
          if (redisBusy) return stats.skippedFaults++;
          redisBusy = true;
          faults.push(f);
          redis.signal("SIGSTOP");
          const down = 1000 + length * 4000; // beyond the broker's probe timeout (3 s) at times
          log(`fault ${n}: redis-server SIGSTOPped for ${(down / 1000).toFixed(1)} s`);
          await sleep(down);
          redis.signal("SIGCONT");
          redisBusy = false;
          break;
        }
        case "term":
          if (st.busy || healthy() < 2) return stats.skippedFaults++;
          st.busy = st.killed = true;
          faults.push(f);
          await insts[target].stop();
          log(`fault ${n}: instance ${target} stopped (SIGTERM)`);
          await sleep(300 + length * 1500);
          await restart(target);
          st.busy = st.killed = false;
          log(`fault ${n}: instance ${target} restarted`);
          break;
        case "stop": {
          if (st.busy || healthy() < 2) return stats.skippedFaults++;
          st.busy = st.stopped = true;
          faults.push(f);
          insts[target].signal("SIGSTOP");
          const down = 1000 + length * 1000;
          log(`fault ${n}: instance ${target} SIGSTOPped for ${(down / 1000).toFixed(1)} s`);
          await sleep(down);
          insts[target].signal("SIGCONT");
          st.busy = st.stopped = false;
          break;
        }
        case "drop": {
          faults.push(f);
          const share = 0.2 + fraction * 0.8;
          const on = length < 0.25 ? proxies : [proxies[target]]; // now and then every instance's
          const dropped = on.reduce((sum, p) => sum + p.drop(share, rnd.drop), 0);
          log(`fault ${n}: dropped ${dropped} client connections (${Math.round(share * 100)}% ${on.length > 1 ? "of all" : `to instance ${target}`})`);
          await sleep(200);
          break;
        }
      }
      f.end = now();
      stats.faults[kind] = (stats.faults[kind] ?? 0) + 1;
    };
    const weights = [["kill", 3], ["redis", 1.2], ["redisstop", 1], ["stop", 2], ["term", 1.5], ["drop", 3]].filter(([k]) => faultKinds.includes(k));
    const totalWeight = weights.reduce((s, [, w]) => s + w, 0);
    const faultsEnd = now() + faultMs;
    const running = new Set();
    for (let n = 1; n <= MAX_FAULTS; n++) {
      // Four draws per fault, whether it runs or not: the schedule is the seed's.
      const gap = 400 + rnd.fault() * 1800;
      let x = rnd.fault() * totalWeight;
      const kind = weights.find(([, w]) => (x -= w) < 0)?.[0] ?? "drop";
      const target = Math.floor(rnd.fault() * 3);
      const [length, fraction] = [rnd.fault(), rnd.fault()];
      await sleep(gap);
      if (now() >= faultsEnd) break;
      const p = runFault(n, kind, target, length, fraction).finally(() => running.delete(p));
      running.add(p);
    }
    await Promise.all(running);
    writing = false;
    await Promise.all(writers);
    await Promise.all(deleters);
    await joining;
    log(`faults over: ${Object.entries(stats.faults).map(([k, c]) => `${k} ${c}`).join(", ")} (${stats.skippedFaults} skipped: target busy); ${stats.writes} writes answered, ${stats.writeUnknown} unknown`);

    // --- quiet, a last write to every post, settle ------------------------------
    await sleep(QUIET_MS);
    for (const [i, post] of kept.entries()) {
      let ok = false;
      for (let attempt = 0; attempt < 10 && !ok; attempt++) {
        ok = await patch((i + attempt) % 3, post);
        if (!ok) await sleep(500);
      }
      assert.ok(ok, `the last write to ${post.id} failed 10 times`);
    }
    const stored = new Map();
    const readAll = async () => {
      for (const post of posts) {
        const res = await insts[0].api("GET", `/posts/${post.id}`, writerTok[post.tenant]);
        if (deleted.has(post.id)) {
          assert.equal(res.status, 404, `GET of the deleted post ${post.id}: ${res.status} ${await res.text()}`);
          await res.arrayBuffer().catch(() => {});
          stored.set(post.id, { deleted: true });
          continue;
        }
        assert.equal(res.status, 200);
        stored.set(post.id, { v: (await res.json()).counter, etag: res.headers.get("etag") });
      }
    };
    await readAll();
    const caughtUp = (s, p) => (stored.get(p).deleted ? lastFrame(s, p)?.type === "deleted" : lastFrame(s, p)?.etag === stored.get(p).etag);
    const settled = () => streams().every(([s, p]) => caughtUp(s, p));
    const settleStart = now();
    await waitFor(settled, SETTLE_MS);
    log(`settled in ${((now() - settleStart) / 1000).toFixed(1)} s${settled() ? "" : ` — NOT all: ${streams().filter(([s, p]) => !caughtUp(s, p)).length} streams behind`}`);
    await readAll(); // nothing wrote meanwhile: the same
    ctx.stopping = true;
    closers.forEach((c) => c());

    // What the instances logged as errors (never a token: the app logs none).
    for (const [i, ex] of insts.entries()) {
      const errors = ex.log().split("\n").filter((l) => /level=ERROR|panic/.test(l));
      stats.logErrors += errors.length;
      if (errors.length) log(`instance ${i} logged ${errors.length} errors, e.g.\n  ${errors.slice(0, 3).map((l) => l.slice(0, 300)).join("\n  ")}`);
      if (process.env.FAULT_LOGS) {
        fs.mkdirSync(process.env.FAULT_LOGS, { recursive: true });
        fs.writeFileSync(path.join(process.env.FAULT_LOGS, `${kind}-${i}.log`), ex.log());
      }
    }
    for (const s of subs) {
      if (s.probe && !s.probeRefused) s.refusals.push({ t: now(), post: s.probe, what: `the other tenant's post ${s.probe} was not refused` });
    }
    const result = check({ subs, tenantOf, written, stored, faults, writeConflicts });
    result.stats = stats;
    log(`writes: ${stats.writes} answered, failures ${JSON.stringify(stats.writeFailures)}, ${stats.writeUnknown} of unknown outcome; subscribe failures ${JSON.stringify(stats.subscribeFailures)}; connections ${subs.reduce((n, s) => n + s.conns, 0)}`);
    return result;
  } finally {
    ctx.stopping = true;
    const start = now();
    for (const f of cleanup.reverse()) {
      try {
        await f();
      } catch (err) {
        log(`cleanup: ${err.message}`);
      }
    }
    log(`stopped everything in ${((now() - start) / 1000).toFixed(1)} s`);
  }
}

/** waitFor polls cond every 100 ms until it holds or ms have passed. */
async function waitFor(cond, ms) {
  const stop = Date.now() + ms;
  while (!cond() && Date.now() < stop) await sleep(100);
}

/** trace notes what happened to sub's connections. */
function trace(sub, now, what) {
  (sub.trace ??= []).push({ t: now(), what });
}

/** push records frame f in sub's frames of f.post. */
function push(sub, f) {
  if (!sub.frames.has(f.post)) sub.frames.set(f.post, []);
  sub.frames.get(f.post).push(f);
}

/**
 * followSSE follows sub's record with an EventSource (npm "eventsource")
 * whose every (re)connection goes to a random live instance through its
 * proxy: the EventSource reconnects by itself with Last-Event-ID; when it
 * gives up (a non-200 answer) a new one starts from the last ETag seen.
 * Returns the closer.
 */
function followSSE(sub, { ctx, proxies, pick, rnd, now, stats, from = null }) {
  const post = sub.posts[0];
  const tok = token({ sub: sub.name, tenant: sub.tenant });
  let es;
  let timer;
  let lastId = from; // a late joiner's ETag from a GET, or null
  let conn = 0;
  let inst = -1;
  const open = () => {
    if (ctx.stopping || sub.conns >= MAX_CONNECTIONS) return;
    const from = lastId ? `&lastEventId=${encodeURIComponent(lastId)}` : "";
    es = new EventSource(`http://balancer.invalid/api/v1/posts/${post}/subscribe?token=${tok}${from}`, {
      fetch: (url, init) => {
        inst = pick(rnd);
        conn = ++sub.conns;
        trace(sub, now, `open c${conn}@i${inst}`);
        const u = new URL(url);
        return fetch(`${proxies[inst].url}${u.pathname}${u.search}`, init);
      },
    });
    for (const type of ["snapshot", "changed", "deleted", "resync"]) {
      es.addEventListener(type, (e) => {
        let data = {};
        try {
          data = JSON.parse(e.data);
        } catch {}
        const f = { t: now(), type, conn, inst, post: type === "resync" ? post : String(data.id ?? post) };
        if (type !== "resync") {
          f.etag = e.lastEventId;
          f.v = data.counter;
          lastId = e.lastEventId;
        } else if (data.reason) f.reason = data.reason;
        push(sub, f);
      });
    }
    es.addEventListener("error", (e) => {
      if (ctx.stopping) return;
      trace(sub, now, `c${conn} error${e.code ? ` ${e.code}` : ""}${es.readyState === EventSource.CLOSED ? ", closed" : ""}`);
      if (es.readyState !== EventSource.CLOSED) return; // it reconnects by itself
      // Failed for good (a non-200 answer): count it, start again.
      stats.subscribeFailures[`sse ${e.code}`] = (stats.subscribeFailures[`sse ${e.code}`] ?? 0) + 1;
      if ([401, 403, 404].includes(e.code)) sub.refusals.push({ t: now(), post, what: `SSE answered ${e.code} at c${conn}@i${inst}` });
      timer = setTimeout(open, 300 + rnd() * 700);
    });
  };
  open();
  return () => {
    clearTimeout(timer);
    es?.close();
  };
}

/**
 * followWS follows sub's records over a WebSocket (npm "ws") to a random
 * live instance through its proxy; when the socket closes it reconnects to
 * another random one and subscribes each record again from the last ETag
 * seen. A record subscription that failed (unavailable) is asked for again.
 * Returns the closer.
 */
function followWS(sub, { ctx, proxies, pick, rnd, now, stats, from = null }) {
  const tok = token({ sub: sub.name, tenant: sub.tenant });
  const last = new Map(from ? [[sub.posts[0], from]] : []); // a late joiner's ETag from a GET
  let ws;
  let timer;
  const retries = new Set();
  const connect = () => {
    if (ctx.stopping || sub.conns >= MAX_CONNECTIONS) return;
    const inst = pick(rnd);
    const conn = ++sub.conns;
    const sock = (ws = new WebSocket(`${proxies[inst].url.replace(/^http/, "ws")}/api/v1/ws?token=${tok}`));
    trace(sub, now, `open c${conn}@i${inst}`);
    const ask = (ids) => {
      if (sock.readyState !== WebSocket.OPEN) return;
      const records = ids.map((id) => ({ collection: "posts", id, ...(last.has(id) ? { lastEventId: last.get(id) } : {}) }));
      sock.send(JSON.stringify({ type: "subscribe", records }));
    };
    sock.on("message", (data) => {
      let m;
      try {
        m = JSON.parse(data.toString());
      } catch {
        return;
      }
      switch (m.type) {
        case "connected":
          trace(sub, now, `c${conn} connected`);
          ask(sub.probe ? [...sub.posts, sub.probe] : sub.posts);
          break;
        case "subscribed":
          trace(sub, now, `c${conn} subscribed ${(m.records ?? []).length} records`);
          break;
        case "snapshot":
        case "changed":
        case "deleted":
        case "resync": {
          const f = { t: now(), type: m.type, conn, inst, post: String(m.id) };
          if (m.type !== "resync") {
            f.etag = m.etag;
            f.v = m.data?.counter;
            last.set(f.post, m.etag);
          } else if (m.reason) f.reason = m.reason;
          push(sub, f);
          break;
        }
        case "error": {
          trace(sub, now, `c${conn} error ${m.code}${m.id ? ` ${m.id}` : ""}`);
          if (m.id === undefined) break; // not about a record
          if (m.id === sub.probe) {
            if (m.code === "not_found" || m.code === "forbidden") sub.probeRefused = true;
            break;
          }
          stats.subscribeFailures[`ws ${m.code}`] = (stats.subscribeFailures[`ws ${m.code}`] ?? 0) + 1;
          if (m.code === "not_found" || m.code === "forbidden") sub.refusals.push({ t: now(), post: m.id, what: `WebSocket ${m.code} at c${conn}@i${inst}` });
          // Not subscribed on this socket: ask again a little later.
          const t = setTimeout(() => {
            retries.delete(t);
            if (ws === sock) ask([String(m.id)]);
          }, 300 + rnd() * 700);
          retries.add(t);
          break;
        }
      }
    });
    sock.on("error", () => {});
    sock.on("close", (code) => {
      if (!ctx.stopping) trace(sub, now, `c${conn} closed ${code}`);
      if (ws === sock && !ctx.stopping) timer = setTimeout(connect, 100 + rnd() * 500);
    });
  };
  connect();
  return () => {
    clearTimeout(timer);
    retries.forEach(clearTimeout);
    ws?.terminate();
  };
}

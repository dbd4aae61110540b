// End-to-end tests of the example's page (examples/cms/index.html, built on
// client/realtime.js) in headless Chromium driven by playwright-core: two
// browser contexts (two users, two "tabs") see each other's edits; the
// server restarted mid-session and the page recovering by itself; a network
// drop (Playwright's offline mode) caught up by replay; a user push acked
// from the page; WebSockets blocked (Playwright's WebSocket routing closes
// every socket) and the page living on the HTTP fallback, then back on the
// WebSocket. Screenshots go to screenshots/ (git-ignored).
//
// Needs Debian's chromium (/usr/bin/chromium, or CHROMIUM_PATH): on CI
// (CI=true) a missing browser fails, elsewhere the suite is skipped.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { guard, startExample, token } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.join(here, "screenshots");
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const haveChromium = fs.existsSync(chromiumPath);
const onCI = process.env.CI === "true";
const skip = !haveChromium && !onCI ? `no chromium at ${chromiumPath}: skipping the browser tests` : false;

const tenant = "acme";
const alice = token({ sub: "alice", tenant, scope: "publish" }); // may push from the page
const bob = token({ sub: "bob", tenant });
const publisher = token({ sub: "backend", tenant, scope: "publish" });

let ex, browser, ctxA, ctxB, pageA, pageB, postId;

const errors = []; // uncaught page errors: none expected
async function openPage(ctx, tok, label) {
  const page = await ctx.newPage();
  page.on("pageerror", (e) => errors.push(`${label}: ${e.message}`));
  await page.goto(`${ex.url}/?token=${tok}#post=${postId}`);
  await waitConn(page, "open");
  await page.waitForFunction((id) => document.querySelector(`#posts li[data-id="${id}"]`) && document.querySelector("#lEtag").textContent.startsWith('"'), postId, { timeout: guard });
  return page;
}
const waitConn = (page, s) => page.waitForSelector(`#conn[data-state="${s}"]`, { timeout: guard });
const text = (page, sel) => page.textContent(sel);
const shot = (page, name) => page.screenshot({ path: path.join(shots, name), fullPage: true });
const logTexts = (page) => page.$$eval("#log li", (lis) => lis.map((li) => `${li.dataset.kind} ${li.querySelector(".txt").textContent}`));

async function editAsBob(fields) {
  const res = await ex.api("PATCH", `/posts/${postId}`, bob, fields);
  assert.equal(res.status, 200, await res.text());
  return res.headers.get("etag");
}

before(async () => {
  if (!haveChromium) {
    if (onCI) throw new Error(`chromium is required on CI (.ci/run installs it): nothing at ${chromiumPath}`);
    return;
  }
  fs.mkdirSync(shots, { recursive: true });
  const { chromium } = await import("playwright-core");
  ex = await startExample();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"],
  });
  // Some content, as a user would have.
  for (const [title, body] of [
    ["Welcome to the Live CMS", "Every post here is live: open this page in two tabs and edit."],
    ["Release notes 1.4", "Faster sync, fewer reconnects."],
  ]) {
    assert.equal((await ex.api("POST", "/posts", alice, { title, body })).status, 201);
  }
  const res = await ex.api("POST", "/posts", alice, { title: "Draft: quarterly update", body: "Numbers are in." });
  postId = (await res.json()).id;
  const viewport = { width: 1360, height: 820 };
  ctxA = await browser.newContext({ viewport });
  ctxB = await browser.newContext({ viewport });
  pageA = await openPage(ctxA, alice, "alice");
  pageB = await openPage(ctxB, bob, "bob");
});

after(async () => {
  if (process.env.KEEP_LOG) {
    for (const [n, p] of [["alice", pageA], ["bob", pageB]]) {
      if (!p) continue;
      console.log(n, await p.evaluate(() => ({ state: window.cms.rt.state, records: [...window.cms.rt._records.values()].map((r) => [r.key, r.lastEventId]) })));
      console.log(n, (await logTexts(p)).reverse().join("\n  "));
    }
  }
  await browser?.close();
  if (ex && process.env.KEEP_LOG) console.log(ex.log());
  await ex?.close();
  assert.deepEqual(errors, [], "uncaught errors in the pages");
});

test("the page loads the client module and shows the live state", { skip }, async () => {
  assert.equal(await text(pageA, "#lTitle"), "Draft: quarterly update");
  assert.equal(await text(pageB, "#whoText"), "bob @ acme");
  assert.equal(await pageA.$eval("#listState", (e) => e.dataset.state), "open");
  assert.equal(await pageA.$$eval("#posts li", (l) => l.length), 3);
  await shot(pageA, "01-loaded.png");
});

// Latencies are reported (t.diagnostic), never asserted: a loaded CI machine
// makes any bound flaky. What is asserted is that the edit came as a live
// "changed" event, not through a reload.
test("two tabs see each other's edits live", { skip }, async (t) => {
  // Alice edits in her tab: Bob's tab shows it (live view, editor, list).
  await pageA.fill("#eTitle", "Quarterly update: Q3 results");
  await pageA.fill("#eBody", "Revenue up 12 %.\nChurn down to 2 %.");
  const t0 = Date.now();
  await pageA.click("#save");
  await pageB.waitForFunction(() => document.querySelector("#lTitle").textContent === "Quarterly update: Q3 results", null, { timeout: guard });
  t.diagnostic(`Bob's tab showed Alice's edit after ${Date.now() - t0} ms`);
  assert.ok((await logTexts(pageB)).includes("changed “Quarterly update: Q3 results”"), "Bob's tab got the edit as a changed event");
  assert.equal(await text(pageB, "#lBody"), "Revenue up 12 %.\nChurn down to 2 %.");
  assert.equal(await pageB.inputValue("#eTitle"), "Quarterly update: Q3 results");
  assert.match(await text(pageA, "#editMsg"), /Saved/);
  await pageB.waitForFunction((id) => document.querySelector(`#posts li[data-id="${id}"] .t`).textContent.startsWith("Quarterly"), postId, { timeout: guard });

  // Bob answers from his tab (If-Match with the version he sees).
  await pageB.fill("#eBody", "Revenue up 12 %.\nChurn down to 2 %.\n\n— reviewed by Bob");
  const changedA = async () => (await logTexts(pageA)).filter((l) => l === "changed “Quarterly update: Q3 results”").length;
  const before1 = await changedA();
  const t1 = Date.now();
  await pageB.click("#save");
  await pageA.waitForFunction(() => document.querySelector("#lBody").textContent.endsWith("reviewed by Bob"), null, { timeout: guard });
  t.diagnostic(`Alice's tab showed Bob's edit after ${Date.now() - t1} ms`);
  assert.ok((await changedA()) > before1, "Alice's tab got Bob's edit as a changed event");

  // A post Bob creates appears in Alice's list.
  await pageB.fill("#cTitle", "Team offsite agenda");
  await pageB.click("#createForm button");
  await pageA.waitForFunction(() => [...document.querySelectorAll("#posts li .t")].some((t) => t.textContent === "Team offsite agenda"), null, { timeout: guard });
  await pageB.waitForFunction(() => document.querySelector("#lTitle").textContent === "Team offsite agenda", null, { timeout: guard });
  await pageB.click(`#posts li[data-id="${postId}"]`); // back to the shared post
  await pageB.waitForFunction(() => document.querySelector("#lBody").textContent.endsWith("reviewed by Bob"), null, { timeout: guard });

  await shot(pageA, "02-two-tabs-alice.png");
  await shot(pageB, "02-two-tabs-bob.png");
});

test("the server restarted mid-session: the page recovers by itself", { skip }, async () => {
  await ex.stop();
  await waitConn(pageA, "reconnecting");
  await pageA.waitForSelector("#banner.show", { timeout: guard });
  await shot(pageA, "03-server-down.png");
  await ex.start();
  // Edited before the page is back: the new server has no buffer to replay
  // from, so the page resumes with a visible resync and a fresh snapshot.
  const etag = await editAsBob({ title: "Edited across a restart" });
  await waitConn(pageA, "open");
  await waitConn(pageB, "open");
  await pageA.waitForFunction(() => document.querySelector("#lTitle").textContent === "Edited across a restart", null, { timeout: guard });
  await pageA.waitForFunction((e) => document.querySelector("#lEtag").textContent === e, etag, { timeout: guard });
  await pageA.waitForSelector('#listState[data-state="open"]', { timeout: guard });
  // And it stays live: the next edit arrives as usual.
  await editAsBob({ body: "Written after the restart." });
  await pageA.waitForFunction(() => document.querySelector("#lBody").textContent === "Written after the restart.", null, { timeout: guard });
  const log = await logTexts(pageA);
  assert.ok(log.some((l) => l.startsWith("reconnect ")), `no reconnection in the log: ${log.join(" | ")}`);
  assert.ok(log.some((l) => l.startsWith("resync ") || l.startsWith("changed ")), `neither a resync nor a replay: ${log.join(" | ")}`);
  await pageB.waitForFunction(() => document.querySelector("#lBody").textContent === "Written after the restart.", null, { timeout: guard });
  await shot(pageA, "04-after-restart.png");
});

test("a network drop (offline mode) is caught up by replay, nothing lost", { skip }, async () => {
  await ctxA.setOffline(true);
  await waitConn(pageA, "offline");
  // Two edits while Alice is offline (the server is up: its buffer keeps them).
  await editAsBob({ title: "Offline edit 1" });
  await editAsBob({ title: "Offline edit 2", body: "Both edits made while Alice was offline." });
  await pageB.waitForFunction(() => document.querySelector("#lTitle").textContent === "Offline edit 2", null, { timeout: guard });
  assert.notEqual(await text(pageA, "#lTitle"), "Offline edit 2");
  await shot(pageA, "05-offline.png");
  await ctxA.setOffline(false);
  await waitConn(pageA, "open");
  await pageA.waitForFunction(() => document.querySelector("#lTitle").textContent === "Offline edit 2", null, { timeout: guard });
  // Replayed from the last ETag the page saw: both versions, in order.
  const log = (await logTexts(pageA)).reverse();
  const i1 = log.findIndex((l) => l === "changed “Offline edit 1”");
  const i2 = log.findIndex((l) => l === "changed “Offline edit 2”");
  assert.ok(i1 >= 0 && i2 > i1, `offline edits not replayed in order: ${log.join(" | ")}`);
  assert.equal(await pageA.$eval(`#posts li[data-id="${postId}"] .t`, (e) => e.textContent), "Offline edit 2");
});

test("a user push reaches the page and its ack reaches the sender", { skip }, async () => {
  // From a backend: POST /notify awaiting acks; Alice clicks Ack.
  const sent = fetch(`${ex.url}/api/v1/notify`, {
    method: "POST",
    headers: { Authorization: `Bearer ${publisher}`, "Content-Type": "application/json" },
    body: JSON.stringify({ users: ["alice"], event: "review_requested", data: { post: postId, by: "bob" }, awaitAcks: "10s" }),
  });
  const btn = await pageA.waitForSelector('.push[data-event="review_requested"] button.ack', { timeout: guard });
  await shot(pageA, "06-push-arrived.png");
  await btn.click();
  const res = await sent;
  assert.equal(res.status, 200);
  const out = await res.json();
  assert.equal(out.delivered, 1);
  assert.equal(out.timedOut, 0);
  assert.equal(out.acks.length, 1);
  assert.equal(out.acks[0].user, "alice");
  assert.equal(out.acks[0].result.ok, true);
  assert.equal(out.acks[0].connectionId, await pageA.evaluate(() => window.cms.rt.connectionId));
  assert.equal(await pageB.$$eval(".push", (p) => p.length), 0); // Bob was not a target

  // From the page itself (Alice's token has the publish scope), auto-acked.
  await pageA.check("#autoAck");
  await pageA.click("#sendPush");
  await pageA.waitForFunction(() => document.querySelector("#pushResult").dataset.acks === "1", null, { timeout: guard });
  assert.match(await text(pageA, "#pushResult"), /Delivered to 1 connection\(s\) of 1 user\(s\): 1 ack\(s\)/);

  // A channel push to everyone subscribed to announce.*.
  const r2 = await fetch(`${ex.url}/api/v1/notify`, {
    method: "POST",
    headers: { Authorization: `Bearer ${publisher}`, "Content-Type": "application/json" },
    body: JSON.stringify({ channel: "announce.release", event: "announcement", data: { text: "Version 1.4 is out" } }),
  });
  assert.equal((await r2.json()).delivered, 2);
  await pageB.waitForSelector('.push[data-event="announcement"]', { timeout: guard });
  await pageA.waitForSelector('.push[data-event="announcement"]', { timeout: guard });
  await shot(pageA, "07-pushes-alice.png");
  await shot(pageB, "07-pushes-bob.png");
});

test("WebSockets blocked: pushes, acks and records fall back to HTTP, and move back to the WebSocket once it connects", { skip }, async () => {
  const dana = token({ sub: "dana", tenant });
  const ctxC = await browser.newContext({ viewport: { width: 1360, height: 820 } });
  let blocked = true;
  let refused = 0;
  // A proxy that does not let WebSockets through: each one closes before
  // reaching the server.
  await ctxC.routeWebSocket(/\/api\/v1\/ws/, (ws) => {
    if (!blocked) return ws.connectToServer();
    refused++;
    return ws.close({ code: 1011, reason: "blocked" });
  });
  try {
    const pageC = await openPage(ctxC, dana, "dana");
    assert.ok(refused >= 2, `the WebSocket was tried first (${refused} refused)`);
    assert.equal(await pageC.evaluate(() => window.cms.rt.transportInUse), "sse");
    assert.match(await text(pageC, "#conn"), /SSE fallback · live/);

    // Records follow their SSE streams.
    await editAsBob({ title: "Seen over the fallback" });
    await pageC.waitForFunction(() => document.querySelector("#lTitle").textContent === "Seen over the fallback", null, { timeout: guard });

    // A push to Dana reaches the page over the pushes stream; her ack
    // reaches the sender over POST /acks.
    const sent = fetch(`${ex.url}/api/v1/notify`, {
      method: "POST",
      headers: { Authorization: `Bearer ${publisher}`, "Content-Type": "application/json" },
      body: JSON.stringify({ users: ["dana"], event: "fallback_check", data: { n: 1 }, awaitAcks: "10s" }),
    });
    const btn = await pageC.waitForSelector('.push[data-event="fallback_check"] button.ack', { timeout: guard });
    await shot(pageC, "08-websocket-blocked.png");
    await btn.click();
    const out = await (await sent).json();
    assert.deepEqual([out.delivered, out.timedOut, out.acks.length], [1, 0, 1]);
    assert.equal(out.acks[0].user, "dana");
    assert.equal(out.acks[0].connectionId, await pageC.evaluate(() => window.cms.rt.connectionId));
    // The page's channel (announce.*) comes through the stream too.
    await fetch(`${ex.url}/api/v1/notify`, {
      method: "POST",
      headers: { Authorization: `Bearer ${publisher}`, "Content-Type": "application/json" },
      body: JSON.stringify({ channel: "announce.fallback", event: "fallback_announcement", data: { text: "over SSE" } }),
    });
    await pageC.waitForSelector('.push[data-event="fallback_announcement"]', { timeout: guard });

    // The WebSocket gets through again: the page moves back to it.
    blocked = false;
    await pageC.waitForFunction(() => window.cms.rt.transportInUse === "websocket" && window.cms.rt.state === "open", null, { timeout: guard });
    assert.match(await text(pageC, "#conn"), /^socket · live/);
    await editAsBob({ title: "Seen over the WebSocket again" });
    await pageC.waitForFunction(() => document.querySelector("#lTitle").textContent === "Seen over the WebSocket again", null, { timeout: guard });
    // The page closed its fallback stream; the server notices when the
    // stream's connection ends: then dana has the socket alone.
    const stop = Date.now() + guard;
    let conns;
    while (Date.now() < stop) {
      const p = await fetch(`${ex.url}/api/v1/presence/dana`, { headers: { Authorization: `Bearer ${publisher}` } });
      conns = (await p.json()).connections;
      if (conns === 1) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(conns, 1, "one connection: the fallback stream has ended");
    const r = await fetch(`${ex.url}/api/v1/notify`, {
      method: "POST",
      headers: { Authorization: `Bearer ${publisher}`, "Content-Type": "application/json" },
      body: JSON.stringify({ users: ["dana"], event: "back_on_socket" }),
    });
    assert.equal((await r.json()).delivered, 1, "one connection: the fallback stream has ended");
    await pageC.waitForSelector('.push[data-event="back_on_socket"]', { timeout: guard });
    assert.equal(await pageC.$$eval('.push[data-event="fallback_check"]', (p) => p.length), 1, "no push shown twice");
    await shot(pageC, "09-back-on-websocket.png");
  } finally {
    await ctxC.close();
  }
});

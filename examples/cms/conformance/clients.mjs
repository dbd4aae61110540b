// The clients the conformance suites drive, shared: a WebSocket client (the
// npm "ws" package) that records every frame, an EventSource (the npm
// "eventsource" package) that records the events it is told to, and a TCP
// proxy in front of an instance that can cut, hold and redirect connections.
// Every wait has the hang guard of harness.mjs, never a timing assertion.
import net from "node:net";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { guard, withGuard } from "./harness.mjs";

// --- WebSocket ------------------------------------------------------------------

/**
 * connect opens a WebSocket to /api/v1/ws of ex (a startExample() handle
 * or its http URL) and resolves once the connected frame arrived. Every
 * frame is recorded in c.frames (parsed JSON). Options: header (send the
 * token as a Bearer header rather than ?token=), origin (an Origin header).
 */
export async function connect(ex, tok, { header = false, origin } = {}) {
  const base = `${(typeof ex === "string" ? ex : ex.url).replace(/^http/, "ws")}/api/v1/ws`;
  const headers = {};
  if (header) headers.Authorization = `Bearer ${tok}`;
  if (origin) headers.Origin = origin;
  const ws = new WebSocket(header ? base : `${base}?token=${encodeURIComponent(tok)}`, { headers });
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

// --- EventSource ----------------------------------------------------------------

/** The events of a record subscription, the default of follow. */
export const recordEvents = ["snapshot", "changed", "deleted", "resync"];

/**
 * follow opens an EventSource on url (init: the EventSource's options) and
 * records the events named in types, in order, as {type, id, data}; errors
 * collects the error events. until(pred, what) waits for pred(events) to
 * hold, opens(n) for the n-th open, both failing after the hang guard.
 */
export function follow(url, types = recordEvents, init) {
  const es = new EventSource(url, init);
  const events = [];
  const errors = [];
  const waiters = [];
  const wake = () => waiters.splice(0).forEach((w) => w());
  for (const type of types) {
    es.addEventListener(type, (e) => {
      events.push({ type, id: e.lastEventId, data: JSON.parse(e.data) });
      wake();
    });
  }
  let opened = 0;
  es.onopen = () => {
    opened++;
    wake();
  };
  es.onerror = (e) => {
    errors.push(e);
    wake();
  };
  // wait re-checks cond on every event, open and error (and every 100 ms).
  const wait = async (cond, what) => {
    const stop = Date.now() + guard;
    while (!cond()) {
      if (Date.now() > stop) throw new Error(`timed out waiting for ${what()}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
  };
  const until = (pred, what) => wait(() => pred(events), () => `${what}; got ${JSON.stringify(events)}`);
  const opens = (n) => wait(() => opened >= n, () => `open #${n}`);
  return { es, events, errors, until, opens };
}

// --- the proxy ------------------------------------------------------------------

/**
 * startProxy listens on a free port and pipes every connection to port on
 * 127.0.0.1. cut drops every open connection and holds new ones until
 * release; drop(fraction) closes that share of the open connections (each
 * with probability fraction, drawn from rand) and lets new ones through;
 * switchTo sends the connections that come next to another port (a load
 * balancer moving to another instance).
 */
export function startProxy(port) {
  let target = port;
  const conns = new Set();
  let holding = false;
  let held = [];
  const pipe = (sock) => {
    const up = net.connect(target, "127.0.0.1");
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
        drop(fraction = 1, rand = Math.random) {
          let n = 0;
          for (const pair of [...conns]) {
            if (rand() < fraction) {
              pair.sock.destroy();
              pair.up.destroy();
              conns.delete(pair);
              n++;
            }
          }
          return n;
        },
        openCount: () => conns.size,
        heldCount: () => held.length,
        switchTo: (p) => (target = p),
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

// realtime.js — the browser client of github.com/ginrealtime/realtime
// (PROTOCOL.md). One ES module, no dependencies, no build step:
//
//   import { Realtime } from "/api/v1/realtime.js";
//   const rt = new Realtime({ base: "/api/v1", token, refreshToken: () => fetchNewToken() });
//   rt.record("posts", "42", { onSnapshot: show, onChanged: show, onDeleted: hide });
//   rt.pushSub("orders.*", (data, msg, ack) => ack({ ok: true }));
//
// One WebSocket per Realtime carries pushes, channels, filters and records
// (§6); collections (and records when asked, or without a WebSocket) follow
// SSE streams (§3). Where the WebSocket cannot connect (a proxy that
// blocks it), pushes, channels and filters come from the pushes stream or
// long poll (§8, acked over HTTP) and records from their SSE streams,
// until the WebSocket connects again. Every connection comes back by itself: jittered
// exponential backoff, then resubscription of its channels, filters and
// records, each record from the last ETag it saw, so nothing is missed;
// when the server cannot replay, `resync` and a fresh snapshot follow.
// Tokens are refreshed through a callback before they expire.
//
// The WebSocket, EventSource and fetch constructors can be injected (Node
// tests pass the npm "ws" and "eventsource" packages).
// @ts-check

/**
 * @typedef {"idle"|"connecting"|"open"|"reconnecting"|"offline"|"closed"} ConnectionState
 *
 * @typedef {object} BackoffOptions
 * @property {number} [initial]     first delay, ms (500)
 * @property {number} [max]         cap, ms (30000)
 * @property {number} [factor]      growth per attempt (2)
 * @property {number} [jitter]      fraction of the delay drawn at random, 0..1 (0.5: a delay lies in [d/2, d])
 * @property {number} [stableAfter] a connection open this long resets the schedule, ms (10000)
 *
 * @typedef {object} RealtimeOptions
 * @property {string} [base]  URL of the group the plugin is mounted on ("/api/v1"; relative to the page)
 * @property {string | (() => string | Promise<string>)} token  a JWT, or a function returning one
 * @property {() => string | Promise<string>} [refreshToken] called `refreshBefore` ms before the token's
 *   `exp` (and after a close 1008 or a 401) for a fresh token; default: `token` when it is a function
 * @property {number} [refreshBefore] ms before `exp` to refresh (30000)
 * @property {"auto"|"websocket"|"eventsource"} [transport] how records are followed (auto: the WebSocket when available)
 * @property {BackoffOptions} [backoff]
 * @property {number} [pingInterval] ms between client pings on the WebSocket (25000)
 * @property {number} [pongTimeout] ms of silence after a ping before the socket counts as dead (10000)
 * @property {boolean | ((msg: PushMessage) => any)} [autoAck] ack every push no handler acked (true: result null)
 * @property {number} [resyncRefetchAfter] ms to wait for the snapshot following a record `resync`
 *   before fetching the record over REST (2000)
 * @property {"sse"|"poll"|false} [fallback] what carries pushes while the WebSocket cannot connect:
 *   the pushes SSE stream (read with fetch: every event name, the token in a header), the pushes
 *   long poll, or nothing (false). Records then follow their SSE streams. ("sse")
 * @property {number} [fallbackAfter] WebSocket attempts that failed (closed before `connected`)
 *   before the fallback starts (2); the WebSocket is still tried, with backoff, and takes over
 *   once it connects
 * @property {typeof WebSocket} [WebSocket]
 * @property {typeof EventSource} [EventSource]
 * @property {typeof fetch} [fetch]
 * @property {() => number} [random] Math.random
 * @property {EventTarget | null} [window] where `online`/`offline` events come from (globalThis.window)
 *
 * @typedef {object} RecordHandlers
 * @property {(data: any, etag: string) => void} [onSnapshot] the whole record: first, and after a resync
 * @property {(data: any, etag: string) => void} [onChanged]  the whole record after an update
 * @property {(data: {id: string}, etag: string) => void} [onDeleted]
 * @property {(reason: string) => void} [onResync] events were missed: a fresh snapshot (or deleted) follows
 * @property {(err: {code: string, status?: number, message?: string}) => void} [onError] refused (forbidden, not_found): no more events
 * @property {(state: ConnectionState) => void} [onState] the state of the stream carrying it
 *
 * @typedef {object} RecordOptions
 * @property {string} [lastEventId] resume point (e.g. the ETag of a REST read): no snapshot when up to date
 * @property {"auto"|"websocket"|"eventsource"} [transport]
 *
 * @typedef {object} CollectionHandlers
 * @property {(data: any, etag: string) => void} [onSnapshot] a record created
 * @property {(data: any, etag: string) => void} [onChanged]
 * @property {(data: {id: string}, etag: string) => void} [onDeleted]
 * @property {(reason: string) => void} [onResync] events were missed: refetch the list
 * @property {(info: {resumed: boolean}) => void} [onOpen] every (re)connection; `resumed` false the first time
 * @property {(err: {code: string, status?: number}) => void} [onError]
 * @property {(state: ConnectionState) => void} [onState]
 *
 * @typedef {object} PushMessage
 * @property {"message"} type
 * @property {string} envelopeId
 * @property {string} channel  "" for a push to users
 * @property {string} event
 * @property {any} data
 * @property {string} timestamp RFC 3339
 *
 * @callback Ack
 * @param {any} [result] any JSON value (null)
 * @returns {boolean} false when this push was already acked
 *
 * @typedef {object} Follow
 * @property {() => void} close stop following
 * @property {() => string | null} lastEventId the ETag of the last event seen
 * @property {() => ConnectionState} state
 */

/** @type {Required<BackoffOptions>} */
export const DEFAULT_BACKOFF = Object.freeze({ initial: 500, max: 30000, factor: 2, jitter: 0.5, stableAfter: 10000 });

/**
 * backoffDelay is the wait before reconnection attempt `attempt` (0 first):
 * min(max, initial·factor^attempt), of which the fraction `jitter` is drawn
 * at random (equal jitter: never below (1-jitter)·d, never above the cap).
 * @param {number} attempt
 * @param {BackoffOptions} [opts]
 * @param {() => number} [random]
 * @returns {number} ms
 */
export function backoffDelay(attempt, opts = {}, random = Math.random) {
  const o = { ...DEFAULT_BACKOFF, ...opts };
  const d = Math.min(o.max, o.initial * Math.pow(o.factor, Math.max(0, attempt)));
  return Math.round(d * (1 - o.jitter) + random() * d * o.jitter);
}

/** Backoff counts attempts; reset() once a connection proved stable. */
export class Backoff {
  /** @param {BackoffOptions} [opts] @param {() => number} [random] */
  constructor(opts = {}, random = Math.random) {
    this.opts = { ...DEFAULT_BACKOFF, ...opts };
    this.random = random;
    this.attempt = 0;
  }
  /** @returns {number} the next delay, ms */
  next() {
    return backoffDelay(this.attempt++, this.opts, this.random);
  }
  reset() {
    this.attempt = 0;
  }
}

/**
 * tokenExpiry reads a JWT's `exp` (not verified: the server does that).
 * @param {string | null | undefined} tok
 * @returns {number | null} ms since the epoch
 */
export function tokenExpiry(tok) {
  try {
    const part = String(tok).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = typeof atob === "function" ? atob(part) : Buffer.from(part, "base64").toString("utf8");
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * channelMatches applies the server's channel patterns (§6): `*` one
 * segment, a trailing `>` one or more further segments.
 * @param {string} pattern
 * @param {string} channel
 */
export function channelMatches(pattern, channel) {
  if (!channel) return false;
  const p = pattern.split("."), c = channel.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">" && i === p.length - 1) return c.length > i;
    if (i >= c.length || (p[i] !== "*" && p[i] !== c[i])) return false;
  }
  return p.length === c.length;
}

/** A bounded set of recently seen keys (duplicates during a socket hand-over). */
class Recent {
  constructor(size = 256) {
    this.size = size;
    /** @type {Set<string>} */
    this.set = new Set();
  }
  /** @param {string} k @returns {boolean} true when k was seen already */
  seen(k) {
    if (!k) return false;
    if (this.set.has(k)) return true;
    this.set.add(k);
    if (this.set.size > this.size) this.set.delete(this.set.values().next().value);
    return false;
  }
}

const OPEN = 1; // WebSocket.OPEN, the same in every implementation
const safe = (fn, ...args) => {
  try {
    fn?.(...args);
  } catch (err) {
    setTimeout(() => {
      throw err;
    });
  }
};

/**
 * Realtime is a page's connection to the plugin: one WebSocket (opened on
 * first use or by connect()) and the SSE streams of the follows that use
 * them. Events: "state" (ConnectionState), "connected" (the server's
 * frame), "disconnected" ({code, reason}), "reconnecting" ({attempt, delay}),
 * "message" (PushMessage, ack), "subscribed", "unsubscribed", "resync"
 * (channel resync frames), "token" (a refreshed token), "refreshed" (the
 * socket took it: {exp}), "rotated" (a new socket took over), "transport"
 * ("websocket", "sse" or "poll": what carries pushes now), "error".
 */
export class Realtime {
  /** @param {RealtimeOptions} opts */
  constructor(opts) {
    if (!opts || opts.token == null) throw new TypeError("realtime: a token (or a function returning one) is required");
    const loc = /** @type {any} */ (globalThis).location;
    this.base = new URL(opts.base ?? "/api/v1", loc?.href).href.replace(/\/+$/, "");
    this._WS = opts.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    this._ES = opts.EventSource ?? /** @type {any} */ (globalThis).EventSource;
    this._fetch = opts.fetch ?? globalThis.fetch?.bind(globalThis);
    this.transport = opts.transport ?? "auto";
    this.backoffOptions = { ...DEFAULT_BACKOFF, ...(opts.backoff ?? {}) };
    this.random = opts.random ?? Math.random;
    this.refreshBefore = opts.refreshBefore ?? 30000;
    this.pingInterval = opts.pingInterval ?? 25000;
    this.pongTimeout = opts.pongTimeout ?? 10000;
    this.autoAck = opts.autoAck ?? false;
    this.resyncRefetchAfter = opts.resyncRefetchAfter ?? 2000;
    this.fallback = opts.fallback ?? "sse";
    this.fallbackAfter = opts.fallbackAfter ?? 2;
    /** @type {"websocket"|"sse"|"poll"|null} what carries pushes now */
    this.transportInUse = null;
    this._wsFailures = 0; // sockets in a row that closed before connected
    /** @type {PushFallback | null} */
    this._fb = null;
    /** @type {string | null} */
    this._token = typeof opts.token === "string" ? opts.token : null;
    this._tokenFn = typeof opts.token === "function" ? opts.token : null;
    this._refresh = opts.refreshToken ?? this._tokenFn;
    /** @type {Promise<string> | null} */
    this._refreshing = null;
    this._refreshTimer = undefined;

    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {string | null} the current socket's connectionId */
    this.connectionId = null;
    this.user = null;
    this.tenant = null;
    this._backoff = new Backoff(this.backoffOptions, this.random);
    this._wanted = false; // the WebSocket should be open
    this._closed = false;
    this._offline = false;
    /** @type {any} */ this._sock = null; // the socket in use
    /** @type {any} */ this._next = null; // its replacement being set up (token rotation)
    this._retryTimer = undefined;
    this._stableTimer = undefined;
    this._pingTimer = undefined;

    /** @type {Map<string, Set<Function>>} channel pattern → pushSub handlers */
    this._channels = new Map();
    /** @type {object[]} */
    this._filters = [];
    /** @type {Map<string, any>} "collection/id" → record followed over the socket */
    this._records = new Map();
    /** @type {Set<SSEFollow>} */
    this._streams = new Set();
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
    this._pushes = new Recent(512);

    this._win = opts.window !== undefined ? opts.window : /** @type {any} */ (globalThis).window ?? null;
    this._onOffline = () => this._goOffline();
    this._onOnline = () => this._goOnline();
    if (this._win?.addEventListener) {
      this._win.addEventListener("offline", this._onOffline);
      this._win.addEventListener("online", this._onOnline);
      const nav = /** @type {any} */ (globalThis).navigator;
      if (nav && nav.onLine === false) this._offline = true;
    }
    this._scheduleRefresh();
  }

  // ---- events --------------------------------------------------------------

  /**
   * on adds a handler for one of the events listed on the class.
   * @param {string} type @param {Function} fn @returns {() => void} removes it
   */
  on(type, fn) {
    let s = this._handlers.get(type);
    if (!s) this._handlers.set(type, (s = new Set()));
    s.add(fn);
    return () => s.delete(fn);
  }

  /** @param {string} type @param {...any} args */
  _emit(type, ...args) {
    for (const fn of [...(this._handlers.get(type) ?? [])]) safe(fn, ...args);
  }

  /** The socket's state, unless the fallback carries the page. @param {ConnectionState} s */
  _wsState(s) {
    if (!this._fb?.open) this._setState(s);
  }

  /** @param {"websocket"|"sse"|"poll"|null} t */
  _setTransport(t) {
    if (this.transportInUse === t) return;
    this.transportInUse = t;
    this._emit("transport", t);
  }

  /** @param {ConnectionState} s */
  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit("state", s);
    for (const r of this._records.values()) for (const h of r.listeners) safe(h.onState, s);
  }

  // ---- tokens --------------------------------------------------------------

  /**
   * token returns a valid token: the current one, or a fresh one from the
   * callback when it is missing, expired or about to expire.
   * @returns {Promise<string>}
   */
  async token() {
    if (this._token) {
      const exp = tokenExpiry(this._token);
      if (!this._refresh || exp == null || exp - Date.now() > Math.min(this.refreshBefore, 5000)) return this._token;
    }
    if (!this._refresh) return this._token ?? "";
    return this.refreshToken();
  }

  /**
   * refreshToken asks the callback for a fresh token now (one call at a
   * time); the WebSocket and the SSE streams move to it without a gap.
   * @returns {Promise<string>}
   */
  refreshToken() {
    if (!this._refresh) return Promise.resolve(this._token ?? "");
    if (!this._refreshing) {
      const fn = this._refresh;
      this._refreshing = (async () => {
        const t = await fn();
        if (typeof t !== "string" || !t) throw new Error("realtime: the token callback returned no token");
        this._setToken(t);
        return t;
      })().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  /** @param {string} t */
  _setToken(t) {
    const old = this._token;
    this._token = t;
    this._scheduleRefresh();
    if (old === t) return;
    this._emit("token", t);
    if (old) this._rotate();
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    if (!this._refresh || !this._token || this._closed) return;
    const exp = tokenExpiry(this._token);
    if (exp == null) return;
    const wait = Math.max(0, exp - this.refreshBefore - Date.now());
    this._refreshTimer = setTimeout(() => {
      this.refreshToken().catch((err) => {
        this._emit("error", err);
        if (!this._closed) this._refreshTimer = setTimeout(() => this._scheduleRefresh(), 5000);
      });
    }, Math.min(wait, 2 ** 31 - 1));
  }

  /**
   * The token changed: the socket takes it in place (a `refresh` message,
   * §6); where the server refuses that, a second socket opens with it and
   * takes over (make before break). SSE streams reopen from their last
   * event id.
   */
  _rotate() {
    const s = this._sock;
    if (s && s.connected && !this._next && !this._offline) {
      if (this._sendOn(s, { type: "refresh", token: this._token })) s.refreshing = true;
      else this._openSocket(true);
    }
    for (const st of this._streams) st.reopen();
    this._fb?.reopen();
  }

  /**
   * The server refused a refresh: an invalid token (unauthorized) leaves
   * the socket to its old expiry (a close 1008 then asks for a fresh
   * token); another answer (another identity, a server without refresh)
   * moves to a new socket with the token.
   * @param {any} s @param {any} m the error frame
   */
  _refreshRefused(s, m) {
    s.refreshing = false;
    this._emit("error", { ...m, refresh: true });
    if (m.code !== "unauthorized" && s === this._sock && !this._next && !this._offline && !this._closed) this._openSocket(true);
  }

  // ---- the WebSocket -------------------------------------------------------

  /** connect opens the WebSocket (it also opens on first use). */
  connect() {
    if (this._closed) throw new Error("realtime: closed");
    this._wanted = true;
    if (!this._sock && this._retryTimer === undefined && !this._offline) this._openSocket(false);
    return this;
  }

  /** @param {boolean} replace a second socket that takes over once subscribed */
  async _openSocket(replace) {
    if (!this._WS) {
      this._emit("error", new Error("realtime: no WebSocket implementation (inject one, or use transport: \"eventsource\")"));
      return;
    }
    const s = { ws: /** @type {any} */ (null), connected: false, dead: false, lastSeen: Date.now() };
    if (replace) this._next = s;
    else {
      this._sock = s;
      this._wsState(this._backoff.attempt > 0 ? "reconnecting" : "connecting");
    }
    let tok;
    try {
      tok = await this.token();
    } catch (err) {
      this._emit("error", err);
      this._lost(s, { code: 4001, reason: "no token" });
      return;
    }
    if (s.dead || this._closed) return;
    const url = new URL(this.base + "/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", tok);
    try {
      s.ws = new this._WS(url.href);
    } catch (err) {
      this._emit("error", err);
      this._lost(s, { code: 4002, reason: String(err) });
      return;
    }
    s.ws.onmessage = (/** @type {any} */ e) => this._frame(s, e.data);
    s.ws.onclose = (/** @type {any} */ e) => this._lost(s, { code: e.code, reason: e.reason ? String(e.reason) : "" });
    s.ws.onerror = () => {}; // a close follows
  }

  /** @param {any} s @param {any} m */
  _sendOn(s, m) {
    if (!s || s.dead || !s.connected || !s.ws || s.ws.readyState !== OPEN) return false;
    s.ws.send(JSON.stringify(m));
    return true;
  }

  /**
   * send writes one message on the socket in use (false when it is not
   * open). While the fallback carries the page, an ack goes over HTTP and
   * a change of channels or filters reopens the pushes stream.
   * @param {any} m
   */
  send(m) {
    if (this._sendOn(this._sock, m)) return true;
    if (!this._fb) return false;
    if (m.type === "ack") return this._fb.ack(m.envelopeId, m.result), true;
    if ((m.type === "subscribe" || m.type === "unsubscribe") && (m.channels || m.filters)) this._fb.reopen();
    return false;
  }

  /** The message that puts a fresh socket in the state the page asked for. */
  _resubscription() {
    const m = /** @type {any} */ ({ type: "subscribe" });
    if (this._channels.size) m.channels = [...this._channels.keys()];
    if (this._filters.length) m.filters = this._filters;
    if (this._records.size)
      m.records = [...this._records.values()].map((r) =>
        r.lastEventId ? { collection: r.collection, id: r.id, lastEventId: r.lastEventId } : { collection: r.collection, id: r.id },
      );
    return m.channels || m.filters || m.records ? m : null;
  }

  /** @param {any} s @param {string} text */
  _frame(s, text) {
    if (s.dead) return;
    s.lastSeen = Date.now();
    let m;
    try {
      m = JSON.parse(String(text));
    } catch {
      return;
    }
    switch (m.type) {
      case "connected": {
        s.connected = true;
        s.connectionId = m.connectionId;
        const sub = this._resubscription();
        if (sub) {
          s.awaiting = true;
          this._sendOn(s, sub);
        }
        if (s === this._next) {
          if (!sub) this._promote(s);
          return;
        }
        this.connectionId = m.connectionId;
        this.user = m.user;
        this.tenant = m.tenant;
        this._wsFailures = 0;
        // Back on the WebSocket: the fallback ends once the socket's
        // subscriptions are in effect (duplicates meanwhile are dropped).
        if (this._fb) {
          if (sub) s.endsFallback = true;
          else this._stopFallback();
        }
        this._setTransport("websocket");
        this._setState("open");
        this._emit("connected", m);
        clearTimeout(this._stableTimer);
        this._stableTimer = setTimeout(() => this._backoff.reset(), this.backoffOptions.stableAfter);
        this._startPings();
        return;
      }
      case "subscribed":
        if (s === this._next && s.awaiting) this._promote(s);
        s.awaiting = false;
        if (s.endsFallback && s === this._sock) {
          s.endsFallback = false;
          this._stopFallback();
        }
        this._emit("subscribed", m);
        return;
      case "unsubscribed":
        this._emit("unsubscribed", m);
        return;
      case "pong":
        return;
      case "refreshed":
        s.refreshing = false;
        this._emit("refreshed", m);
        return;
      case "message":
        this._push(s, m);
        return;
      case "snapshot":
      case "changed":
      case "deleted":
        if (m.collection != null) this._recordEvent(m);
        return;
      case "resync":
        if (m.collection != null && m.id != null) this._recordResync(m);
        else this._emit("resync", m);
        return;
      case "error":
        if (s.refreshing && m.collection == null && m.channel == null) {
          this._refreshRefused(s, m);
          return;
        }
        if (m.collection != null && m.id != null) {
          const r = this._records.get(m.collection + "/" + m.id);
          if (r) {
            this._records.delete(r.key);
            for (const h of r.listeners) safe(h.onError, { code: m.code });
          }
        }
        this._emit("error", m);
        return;
      default:
        this._emit(m.type, m);
    }
  }

  /** s (the replacement socket) takes over; the previous one closes. @param {any} s */
  _promote(s) {
    const old = this._sock;
    this._sock = s;
    this._next = null;
    this.connectionId = s.connectionId;
    if (old && old !== s) {
      old.dead = true;
      try {
        old.ws?.close(1000, "token refreshed");
      } catch {}
    }
    this._emit("rotated", { connectionId: s.connectionId });
  }

  /**
   * A socket ended (closed, or declared dead). The one in use is replaced
   * after a backoff delay; a replacement that fails leaves the old one.
   * @param {any} s @param {{code: number, reason: string}} info
   */
  _lost(s, info) {
    if (s.dead) return;
    s.dead = true;
    if (s.ws && s.ws.readyState <= OPEN) {
      try {
        s.ws.close();
      } catch {}
    }
    if (s === this._next) {
      this._next = null;
      return;
    }
    if (s !== this._sock) return;
    this._sock = null;
    this.connectionId = this._fb?.connectionId ?? null;
    clearTimeout(this._stableTimer);
    this._stopPings();
    this._emit("disconnected", info);
    if (!s.connected && ![4401, 4403, 4429].includes(info.code)) this._wsFailures++;
    if (this._next) {
      // A replacement is on its way: it takes over at once.
      const n = this._next;
      this._next = null;
      this._sock = n;
      if (n.connected) {
        this.connectionId = n.connectionId;
        this._setState("open");
        this._startPings();
      }
      return;
    }
    if (this._closed || !this._wanted) {
      this._setState(this._closed ? "closed" : "idle");
      return;
    }
    if (this._offline) {
      this._setState("offline");
      return;
    }
    if ((info.code === 1008 || info.code === 4401) && this._refresh) {
      // The token expired or was refused: the next attempt takes a fresh one.
      this._token = null;
    }
    if (info.code === 4429) {
      // Over a connection cap: wait longer before trying again.
      this._backoff.attempt += 2;
    }
    if (this._fb) this._fb.wake(); // the socket was carrying the page: the fallback takes over at once
    else if (this.fallback && this._wsFailures >= this.fallbackAfter && this._fetch) this._startFallback();
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const attempt = this._backoff.attempt;
    const delay = this._backoff.next();
    this._wsState("reconnecting");
    this._emit("reconnecting", { attempt: attempt + 1, delay, at: Date.now() + delay });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = undefined;
      if (!this._closed && this._wanted && !this._offline && !this._sock) this._openSocket(false);
    }, delay);
  }

  _startPings() {
    this._stopPings();
    this._pingTimer = setInterval(() => {
      const s = this._sock;
      if (!s || !s.connected) return;
      if (Date.now() - s.lastSeen > this.pingInterval + this.pongTimeout) {
        this._lost(s, { code: 4000, reason: "no pong" });
        return;
      }
      this._sendOn(s, { type: "ping" });
    }, this.pingInterval);
  }

  _stopPings() {
    clearInterval(this._pingTimer);
    this._pingTimer = undefined;
  }

  _goOffline() {
    if (this._offline) return;
    this._offline = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = undefined;
    if (this._next) this._lost(this._next, { code: 4003, reason: "offline" });
    this._fb?.pause();
    if (this._sock) this._lost(this._sock, { code: 4003, reason: "offline" });
    else if (this._wanted && !this._closed) this._setState("offline");
    for (const st of this._streams) st.offline();
  }

  _goOnline() {
    if (!this._offline) return;
    this._offline = false;
    this._backoff.reset();
    if (this._wanted && !this._closed && !this._sock) {
      clearTimeout(this._retryTimer);
      this._retryTimer = undefined;
      this._openSocket(false);
    }
    this._fb?.wake();
    for (const st of this._streams) st.online();
  }

  // ---- the fallback (§8) -----------------------------------------------------

  /** The WebSocket cannot connect: pushes and records move to HTTP. */
  _startFallback() {
    if (this._fb || this._closed) return;
    const fb = new PushFallback(this, this.fallback === "poll" ? "poll" : "sse");
    this._fb = fb;
    for (const r of this._records.values()) fb.follow(r);
    fb.start();
  }

  /** The WebSocket carries the page again. */
  _stopFallback() {
    const fb = this._fb;
    this._fb = null;
    fb?.close();
  }

  // ---- pushes, channels, filters ------------------------------------------

  /** @param {any} s @param {any} m */
  _push(s, m) {
    if (this._pushes.seen(m.envelopeId)) return;
    let acked = false;
    /** @type {Ack} */
    const ack = (result = null) => {
      if (acked) return false;
      acked = true;
      const frame = { type: "ack", envelopeId: m.envelopeId, result };
      // The ack goes back on the connection that received the push (a
      // push of the fallback: over HTTP).
      if (s instanceof PushFallback) s.ack(m.envelopeId, result);
      else if (!this._sendOn(s, frame)) this.send(frame);
      return true;
    };
    this._emit("message", m, ack);
    if (m.event) this._emit("message:" + m.event, m.data, m, ack);
    for (const [pattern, hs] of this._channels) {
      if (channelMatches(pattern, m.channel)) for (const h of [...hs]) safe(h, m.data, m, ack);
    }
    if (this.autoAck && !acked) ack(typeof this.autoAck === "function" ? this.autoAck(m) : null);
  }

  /**
   * subscribe adds channel patterns (`orders.*`, `orders.>`) to the socket.
   * @param {string | string[]} channels
   */
  subscribe(channels) {
    const add = [].concat(/** @type {any} */ (channels)).filter((c) => !this._channels.has(c));
    for (const c of add) this._channels.set(c, new Set());
    if (add.length) this.send({ type: "subscribe", channels: add });
    this.connect();
    return this;
  }

  /** unsubscribe removes channel patterns (and their pushSub handlers). @param {string | string[]} channels */
  unsubscribe(channels) {
    const del = [].concat(/** @type {any} */ (channels)).filter((c) => this._channels.delete(c));
    if (del.length) this.send({ type: "unsubscribe", channels: del });
    return this;
  }

  /** @returns {string[]} the channel patterns subscribed */
  channels() {
    return [...this._channels.keys()];
  }

  /**
   * setFilters replaces the socket's push filters (§6): with filters, a push
   * arrives only when one matches; [] removes them.
   * @param {Array<Record<string, string|number|boolean>>} filters
   */
  setFilters(filters) {
    const had = this._filters.length > 0;
    this._filters = [...filters];
    if (had) this.send({ type: "unsubscribe", filters: [] });
    if (this._filters.length) this.send({ type: "subscribe", filters: this._filters });
    this.connect();
    return this;
  }

  /**
   * onMessage calls fn for every push (or those of one event name).
   * @param {((msg: PushMessage, ack: Ack) => void) | string} eventOrFn
   * @param {(data: any, msg: PushMessage, ack: Ack) => void} [fn]
   * @returns {() => void} removes it
   */
  onMessage(eventOrFn, fn) {
    this.connect();
    if (typeof eventOrFn === "function") return this.on("message", eventOrFn);
    return this.on("message:" + eventOrFn, /** @type {Function} */ (fn));
  }

  /**
   * pushSub subscribes to a channel pattern and calls fn for each push on
   * a channel it matches.
   * @param {string} channel
   * @param {(data: any, msg: PushMessage, ack: Ack) => void} fn
   * @returns {() => void} pushUnsub(channel, fn)
   */
  pushSub(channel, fn) {
    this.subscribe(channel);
    /** @type {Set<Function>} */ (this._channels.get(channel)).add(fn);
    return () => this.pushUnsub(channel, fn);
  }

  /**
   * pushUnsub removes fn (or every handler) from a channel; the channel is
   * unsubscribed once it has no handler left.
   * @param {string} channel @param {Function} [fn]
   */
  pushUnsub(channel, fn) {
    const hs = this._channels.get(channel);
    if (!hs) return;
    if (fn) hs.delete(fn);
    else hs.clear();
    if (hs.size === 0) this.unsubscribe(channel);
  }

  /** ack acknowledges a push by its envelope id. @param {string} envelopeId @param {any} [result] */
  ack(envelopeId, result = null) {
    return this.send({ type: "ack", envelopeId, result });
  }

  // ---- records and collections --------------------------------------------

  /**
   * record follows one record: onSnapshot first (unless `lastEventId` is
   * current), then onChanged/onDeleted; after a reconnection it resumes from
   * the last ETag it saw, or gets onResync and a fresh snapshot.
   * @param {string} collection @param {string} id
   * @param {RecordHandlers} handlers @param {RecordOptions} [opts]
   * @returns {Follow}
   */
  record(collection, id, handlers, opts = {}) {
    const transport = opts.transport ?? this.transport;
    if (transport === "eventsource" || (transport === "auto" && !this._WS)) {
      const path = `/${encodeURIComponent(collection)}/${encodeURIComponent(id)}/subscribe`;
      return new SSEFollow(this, path, handlers, opts.lastEventId ?? null, { collection, id }).start();
    }
    const key = collection + "/" + id;
    let r = this._records.get(key);
    const fresh = !r;
    if (!r) {
      r = { key, collection, id, lastEventId: opts.lastEventId ?? null, data: undefined, listeners: new Set(), recent: new Recent(32), refetch: undefined };
      this._records.set(key, r);
    }
    const rec = r;
    rec.listeners.add(handlers);
    if (fresh) {
      const ref = rec.lastEventId ? { collection, id, lastEventId: rec.lastEventId } : { collection, id };
      this.send({ type: "subscribe", records: [ref] });
      if (this._fb) this._fb.follow(rec);
    } else if (rec.data !== undefined) {
      const [data, etag] = [rec.data, rec.lastEventId];
      queueMicrotask(() => rec.listeners.has(handlers) && safe(handlers.onSnapshot, data, etag));
    }
    this.connect();
    queueMicrotask(() => safe(handlers.onState, this.state));
    return {
      close: () => {
        rec.listeners.delete(handlers);
        if (rec.listeners.size === 0 && this._records.get(key) === rec) {
          this._records.delete(key);
          clearTimeout(rec.refetch);
          rec.sse?.close();
          this.send({ type: "unsubscribe", records: [{ collection, id }] });
        }
      },
      lastEventId: () => rec.lastEventId,
      state: () => this.state,
    };
  }

  /** @param {any} m a snapshot/changed/deleted frame of the socket */
  _recordEvent(m) {
    const r = this._records.get(m.collection + "/" + m.id);
    if (!r || r.recent.seen(m.etag)) return; // not followed, or seen on the other socket
    clearTimeout(r.refetch);
    r.refetch = undefined;
    r.lastEventId = m.etag;
    r.data = m.type === "deleted" ? undefined : m.data;
    const name = m.type === "snapshot" ? "onSnapshot" : m.type === "changed" ? "onChanged" : "onDeleted";
    for (const h of [...r.listeners]) safe(h[name], m.data, m.etag);
  }

  /** @param {any} m a record's resync frame: a snapshot (or deleted) follows; else fetch it */
  _recordResync(m) {
    const r = this._records.get(m.collection + "/" + m.id);
    if (!r) return;
    for (const h of [...r.listeners]) safe(h.onResync, m.reason ?? "buffer-miss");
    clearTimeout(r.refetch);
    r.refetch = setTimeout(() => this._refetch(r), this.resyncRefetchAfter);
  }

  /** The server sent no snapshot after a resync (no loader): read the record over REST. @param {any} r */
  async _refetch(r) {
    if (!this._fetch || this._records.get(r.key) !== r) return;
    try {
      const tok = await this.token();
      const res = await this._fetch(`${this.base}/${encodeURIComponent(r.collection)}/${encodeURIComponent(r.id)}`, {
        headers: { Authorization: "Bearer " + tok },
      });
      if (this._records.get(r.key) !== r || r.refetch === undefined) return; // a frame came first
      r.refetch = undefined;
      if (res.status === 404) {
        this._recordEvent({ type: "deleted", collection: r.collection, id: r.id, etag: "", data: { id: r.id } });
        return;
      }
      if (!res.ok) return;
      const data = await res.json();
      const etag = res.headers.get("ETag") ?? "";
      this._recordEvent({ type: "snapshot", collection: r.collection, id: r.id, etag, data });
    } catch (err) {
      this._emit("error", err);
    }
  }

  /**
   * collection follows every record of a collection over SSE (§3; the
   * WebSocket has no collection subscription). There is no initial
   * snapshot: load the list in onOpen({resumed: false}) and again on
   * onResync.
   * @param {string} name @param {CollectionHandlers} handlers
   * @param {{lastEventId?: string}} [opts]
   * @returns {Follow}
   */
  collection(name, handlers, opts = {}) {
    return new SSEFollow(this, `/${encodeURIComponent(name)}/subscribe`, handlers, opts.lastEventId ?? null, null).start();
  }

  /** close ends the socket, every stream and every timer. */
  close() {
    this._closed = true;
    this._wanted = false;
    clearTimeout(this._retryTimer);
    clearTimeout(this._refreshTimer);
    clearTimeout(this._stableTimer);
    this._stopPings();
    for (const r of this._records.values()) clearTimeout(r.refetch);
    for (const s of [this._next, this._sock]) if (s) this._lost(s, { code: 1000, reason: "closed" });
    this._fb?.close();
    this._fb = null;
    for (const st of [...this._streams]) st.close();
    if (this._win?.removeEventListener) {
      this._win.removeEventListener("offline", this._onOffline);
      this._win.removeEventListener("online", this._onOnline);
    }
    this._setState("closed");
  }
}

/**
 * PushFallback carries a page's pushes while its WebSocket cannot connect
 * (§8): GET {base}/pushes/subscribe, read with fetch (so that pushes of
 * every event name arrive, and the token goes in a header), or the long
 * poll GET {base}/pushes/poll; with the page's channels and filters, the
 * one concrete channel resumed from its last envelope id. Pushes are
 * acked with POST {base}/acks. Each record the page follows gets its SSE
 * stream. It reconnects with backoff until closed (the WebSocket is back).
 */
class PushFallback {
  /** @param {Realtime} rt @param {"sse"|"poll"} mode */
  constructor(rt, mode) {
    this.rt = rt;
    this.mode = mode;
    this.backoff = new Backoff(rt.backoffOptions, rt.random);
    this.open = false; // pushes are arriving
    this.closed = false;
    this.paused = false; // offline
    this.reopening = false; // the request was aborted to start again at once
    /** @type {string | null} */ this.connectionId = null;
    /** @type {string | null} */ this.lastEventId = null; // of the one concrete channel
    this.channelKey = ""; // the channels lastEventId belongs to
    /** @type {AbortController | null} */ this.ctrl = null;
    /** @type {(() => void) | null} */ this.wakeUp = null;
    this.timer = undefined;
    /** @type {Set<any>} records followed over their SSE streams */
    this.records = new Set();
  }

  start() {
    this._loop().catch((err) => this.rt._emit("error", err));
  }

  _url() {
    const rt = this.rt;
    const u = new URL(rt.base + (this.mode === "poll" ? "/pushes/poll" : "/pushes/subscribe"));
    const chans = [...rt._channels.keys()];
    if (chans.length) u.searchParams.set("channels", chans.join(","));
    if (rt._filters.length) u.searchParams.set("filters", JSON.stringify(rt._filters));
    const key = chans.join(",");
    if (key !== this.channelKey) {
      this.channelKey = key;
      this.lastEventId = null;
    }
    if (this.lastEventId && chans.length === 1) u.searchParams.set("lastEventId", this.lastEventId);
    // The first poll answers at once: the page is live as soon as it can poll.
    if (this.mode === "poll") u.searchParams.set("timeout", this.open ? "25" : "0");
    return u.href;
  }

  async _loop() {
    const rt = this.rt;
    while (!this.closed) {
      if (this.paused) {
        await this._sleep(null);
        continue;
      }
      let delay = 0;
      try {
        const tok = await rt.token();
        if (this.closed || this.paused) continue;
        const ctrl = new AbortController();
        this.ctrl = ctrl;
        const res = await rt._fetch(this._url(), {
          headers: { Authorization: "Bearer " + tok, Accept: this.mode === "poll" ? "application/json" : "text/event-stream" },
          signal: ctrl.signal,
          cache: "no-store",
        });
        if (!res.ok) {
          try {
            await res.body?.cancel();
          } catch {}
          if (res.status === 401 && rt._refresh) await rt.refreshToken().catch(() => {});
          rt._emit("error", { code: "fallback", status: res.status, message: `pushes ${this.mode}: ${res.status}` });
          throw new Error(`pushes: ${res.status}`);
        }
        if (this.mode === "poll") {
          const body = await res.json();
          this._up(null);
          if (body.lastEventId) this.lastEventId = body.lastEventId;
          for (const m of body.messages ?? []) this._message(m, m.type === "resync" ? "resync" : "message");
        } else if (!res.body?.getReader) {
          this.mode = "poll"; // no streamed body here: poll instead
          continue;
        } else {
          await this._read(res.body.getReader());
          throw new Error("pushes: the stream ended");
        }
      } catch {
        if (this.closed) return;
        if (!this.reopening) {
          this._down();
          delay = this.backoff.next();
        }
      } finally {
        this.ctrl = null;
      }
      this.reopening = false;
      if (delay) await this._sleep(delay);
    }
  }

  /** @param {number | null} ms (null: until woken) */
  _sleep(ms) {
    return new Promise((/** @type {() => void} */ r) => {
      this.wakeUp = r;
      if (ms != null) this.timer = setTimeout(r, ms);
    }).then(() => {
      clearTimeout(this.timer);
      this.wakeUp = null;
    });
  }

  /** @param {any} reader a ReadableStream reader of the SSE response */
  async _read(reader) {
    const dec = new TextDecoder();
    let buf = "";
    let ev = { event: "", data: /** @type {string[]} */ ([]), id: /** @type {string | null} */ (null) };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      for (;;) {
        const i = buf.search(/\r\n|\r|\n/);
        if (i < 0 || (buf[i] === "\r" && i === buf.length - 1)) break; // a lone CR may be half a CRLF
        const line = buf.slice(0, i);
        buf = buf.slice(i + (buf[i] === "\r" && buf[i + 1] === "\n" ? 2 : 1));
        if (line === "") {
          this._dispatch(ev);
          ev = { event: "", data: [], id: null };
          continue;
        }
        if (line[0] === ":") continue;
        const c = line.indexOf(":");
        const name = c < 0 ? line : line.slice(0, c);
        let val = c < 0 ? "" : line.slice(c + 1);
        if (val[0] === " ") val = val.slice(1);
        if (name === "event") ev.event = val;
        else if (name === "data") ev.data.push(val);
        else if (name === "id" && !val.includes("\u0000")) ev.id = val;
      }
    }
  }

  /** @param {{event: string, data: string[], id: string | null}} ev */
  _dispatch(ev) {
    if (ev.id !== null) this.lastEventId = ev.id;
    if (!ev.data.length) return;
    let data;
    try {
      data = JSON.parse(ev.data.join("\n"));
    } catch {
      return;
    }
    if (ev.event === "connected") this._up(data);
    else this._message(data, ev.event === "resync" ? "resync" : "message");
  }

  /** @param {any} m an envelope, or a channel's resync @param {string} kind */
  _message(m, kind) {
    if (kind === "resync") this.rt._emit("resync", { type: "resync", channel: m.channel, reason: m.reason });
    else if (m && m.type === "message") this.rt._push(this, m);
  }

  /** pushes arrive: the page is live over HTTP. @param {any} hello the connected frame (a stream's) */
  _up(hello) {
    const rt = this.rt;
    this.backoff.reset();
    if (hello) {
      this.connectionId = hello.connectionId;
      rt.user = hello.user;
      rt.tenant = hello.tenant;
    }
    if (this.open) return;
    this.open = true;
    if (rt._sock?.connected) return;
    rt.connectionId = this.connectionId;
    rt._setTransport(this.mode);
    rt._setState("open");
    rt._emit("connected", { ...(hello ?? { type: "connected", user: rt.user, tenant: rt.tenant }), transport: this.mode });
  }

  _down() {
    if (!this.open) return;
    this.open = false;
    const rt = this.rt;
    if (!rt._sock?.connected && !this.closed) rt._setState(rt._offline ? "offline" : "reconnecting");
  }

  /** ack acknowledges a push over HTTP. @param {string} envelopeId @param {any} result */
  ack(envelopeId, result) {
    const rt = this.rt;
    (async () => {
      const tok = await rt.token();
      const res = await rt._fetch(`${rt.base}/acks`, {
        method: "POST",
        headers: { Authorization: "Bearer " + tok, "Content-Type": "application/json" },
        body: JSON.stringify({ envelopeId, result: result ?? null }),
      });
      if (!res.ok) rt._emit("error", { code: "ack", status: res.status, envelopeId });
    })().catch((err) => rt._emit("error", err));
  }

  /** reopen starts again at once (other channels or filters, a new token). */
  reopen() {
    if (this.closed) return;
    if (this.ctrl) {
      this.reopening = true;
      this.ctrl.abort();
    } else this.wake();
  }

  /** wake ends a wait (back online, the socket dropped). */
  wake() {
    this.paused = false;
    this.wakeUp?.();
  }

  pause() {
    this.paused = true;
    this.open = false;
    if (this.ctrl) {
      this.reopening = true;
      this.ctrl.abort();
    }
  }

  /** follow follows a record of the page over its SSE stream. @param {any} r */
  follow(r) {
    if (r.sse || this.closed) return;
    const rt = this.rt;
    const live = () => rt._records.get(r.key) === r;
    const ev = (/** @type {string} */ type) => (/** @type {any} */ data, /** @type {string} */ etag) =>
      live() && rt._recordEvent({ type, collection: r.collection, id: r.id, etag, data });
    const f = new SSEFollow(
      rt,
      `/${encodeURIComponent(r.collection)}/${encodeURIComponent(r.id)}/subscribe`,
      {
        onSnapshot: ev("snapshot"),
        onChanged: ev("changed"),
        onDeleted: ev("deleted"),
        onResync: (reason) => live() && rt._recordResync({ collection: r.collection, id: r.id, reason }),
        onError: (err) => {
          if (!live()) return;
          rt._records.delete(r.key);
          for (const h of r.listeners) safe(h.onError, err);
        },
      },
      r.lastEventId,
      { collection: r.collection, id: r.id },
    );
    r.sse = f.start();
    this.records.add(r);
  }

  close() {
    this.closed = true;
    this.open = false;
    this.ctrl?.abort();
    this.wakeUp?.();
    for (const r of this.records) {
      r.sse?.close();
      r.sse = undefined;
    }
    this.records.clear();
  }
}

/**
 * SSEFollow is one SSE stream (a record's or a collection's) that the
 * client reconnects itself: after any error the EventSource is closed and
 * a new one opened after a backoff delay, from `?lastEventId=` (and with the
 * current token, which the browser's own reconnection would not renew).
 */
class SSEFollow {
  /**
   * @param {Realtime} rt @param {string} path
   * @param {RecordHandlers & CollectionHandlers} handlers
   * @param {string | null} lastEventId
   * @param {{collection: string, id: string} | null} record
   */
  constructor(rt, path, handlers, lastEventId, record) {
    this.rt = rt;
    this.path = path;
    this.h = handlers;
    this.lastEventId = lastEventId;
    this.record = record;
    this.backoff = new Backoff(rt.backoffOptions, rt.random);
    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {any} */ this.es = null;
    this.opened = false; // ever opened
    this.closed = false;
    this.timer = undefined;
    this.stable = undefined;
    this.refetch = undefined;
    this.recent = new Recent(64);
  }

  start() {
    this.rt._streams.add(this);
    if (this.rt._offline) this._set("offline");
    else this._open();
    return /** @type {Follow} */ ({ close: () => this.close(), lastEventId: () => this.lastEventId, state: () => this.state });
  }

  /** @param {ConnectionState} s */
  _set(s) {
    if (this.state === s) return;
    this.state = s;
    safe(this.h.onState, s);
  }

  async _open() {
    if (this.closed) return;
    if (!this.rt._ES) {
      this.rt._emit("error", new Error("realtime: no EventSource implementation"));
      return;
    }
    this._set(this.opened || this.backoff.attempt > 0 ? "reconnecting" : "connecting");
    let tok;
    try {
      tok = await this.rt.token();
    } catch (err) {
      this.rt._emit("error", err);
      this._retry();
      return;
    }
    if (this.closed || this.es || this.rt._offline) return;
    const url = new URL(this.rt.base + this.path);
    url.searchParams.set("token", tok);
    if (this.lastEventId) url.searchParams.set("lastEventId", this.lastEventId);
    const es = new this.rt._ES(url.href);
    this.es = es;
    let opened = false;
    es.onopen = () => {
      if (this.es !== es) return;
      opened = true;
      const resumed = this.opened;
      this.opened = true;
      this._set("open");
      clearTimeout(this.stable);
      this.stable = setTimeout(() => this.backoff.reset(), this.rt.backoffOptions.stableAfter);
      safe(this.h.onOpen, { resumed });
    };
    for (const [type, name] of [["snapshot", "onSnapshot"], ["changed", "onChanged"], ["deleted", "onDeleted"]]) {
      es.addEventListener(type, (/** @type {any} */ e) => {
        if (this.es !== es) return;
        if (this.recent.seen(e.lastEventId + "\u0000" + e.data)) return;
        if (e.lastEventId) this.lastEventId = e.lastEventId;
        clearTimeout(this.refetch);
        let data;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        safe(/** @type {any} */ (this.h)[name], data, e.lastEventId);
      });
    }
    es.addEventListener("resync", (/** @type {any} */ e) => {
      if (this.es !== es) return;
      let reason = "buffer-miss";
      try {
        reason = JSON.parse(e.data).reason ?? reason;
      } catch {}
      safe(this.h.onResync, reason);
    });
    es.onerror = () => {
      if (this.es !== es) return;
      es.close();
      this.es = null;
      clearTimeout(this.stable);
      if (this.closed) return;
      if (this.rt._offline) {
        this._set("offline");
        return;
      }
      if (!opened) this._probe(url.href);
      else this._retry();
    };
  }

  /**
   * The stream was refused before it opened: find out why (the
   * EventSource API hides the status). 401: a fresh token; 403/404: give up.
   * @param {string} href
   */
  async _probe(href) {
    const f = this.rt._fetch;
    if (!f) return this._retry();
    const ac = new AbortController();
    let status = 0;
    try {
      const res = await f(href, { signal: ac.signal, headers: { Accept: "text/event-stream" } });
      status = res.status;
    } catch {}
    ac.abort();
    if (this.closed) return;
    if (status === 403 || status === 404) {
      this.closed = true;
      this.rt._streams.delete(this);
      this._set("closed");
      safe(this.h.onError, { code: status === 403 ? "forbidden" : "not_found", status });
      return;
    }
    if (status === 401 && this.rt._refresh) {
      this.rt.refreshToken().then(
        () => this._retry(),
        () => this._retry(),
      );
      return;
    }
    this._retry();
  }

  _retry() {
    if (this.closed || this.timer !== undefined) return;
    if (this.rt._offline) {
      this._set("offline");
      return;
    }
    const delay = this.backoff.next();
    this._set("reconnecting");
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.es) this._open();
    }, delay);
  }

  /** reopen moves to the current token at once, resuming from the last event. */
  reopen() {
    if (this.closed || this.rt._offline) return;
    if (this.es) {
      this.es.close();
      this.es = null;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this._open();
  }

  offline() {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.es) {
      this.es.close();
      this.es = null;
    }
    if (!this.closed) this._set("offline");
  }

  online() {
    if (this.closed) return;
    this.backoff.reset();
    if (!this.es) this._open();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.stable);
    if (this.es) this.es.close();
    this.es = null;
    this.rt._streams.delete(this);
    this._set("closed");
  }
}

// Shared set-up of the conformance suites: build examples/cms with `go
// build`, run it on a free port with a known JWT secret, mint HS256 tokens
// with node:crypto, run a private redis-server. Each test file (its own
// process under `node --test`) starts its own server instance with
// startExample(). The clients the suites drive (WebSocket, EventSource, a
// TCP proxy) are in clients.mjs.
import { execFileSync, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

// Every process the suites start (instances, redis-servers) until it exits:
// whatever way this process ends, none is left behind (a stopped one is
// killed too: SIGKILL needs no SIGCONT).
// Likewise the temporary directories and databases not removed yet.
const children = new Set();
const leftovers = new Set(); // functions that remove something, synchronously
function track(proc) {
  children.add(proc);
  proc.once("exit", () => children.delete(proc));
  return proc;
}
process.once("exit", () => {
  for (const proc of children) {
    try {
      proc.kill("SIGKILL");
    } catch {}
  }
  for (const remove of leftovers) {
    try {
      remove();
    } catch {}
  }
});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.once(sig, () => process.exit(128 + os.constants.signals[sig]));
}

/** Hang guard for every wait, never a timing assertion (ms). */
export const guard = 15000;

/** The HS256 key the example runs with (one per process). */
export const secret = crypto.randomBytes(32).toString("hex");

// --- tokens -----------------------------------------------------------------

export const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");

/** token mints a JWT signed with secret, valid for an hour unless claims say otherwise. */
export function token(claims, alg = "HS256") {
  const h = b64({ alg, typ: "JWT" });
  const p = b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims });
  const s = crypto.createHmac("sha256", secret).update(`${h}.${p}`).digest("base64url");
  return `${h}.${p}.${s}`;
}

/**
 * tamper returns tok with the first character of its signature changed: a
 * different signature whatever the token (changing the last characters may
 * touch only the unused bits of the base64url text).
 */
export function tamper(tok) {
  const i = tok.lastIndexOf(".") + 1;
  return tok.slice(0, i) + (tok[i] === "A" ? "B" : "A") + tok.slice(i + 1);
}

// --- ports, waits -----------------------------------------------------------

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** until polls pred (may be async) until it is true, failing after the hang guard. */
export async function until(pred, what) {
  const stop = Date.now() + guard;
  while (!(await pred())) {
    if (Date.now() > stop) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** withGuard rejects when p has not settled within the hang guard. */
export function withGuard(p, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), guard);
    }),
  ]).finally(() => clearTimeout(t));
}

/** waitPort resolves once something accepts TCP connections on port. */
export async function waitPort(port) {
  const until = Date.now() + guard;
  while (Date.now() < until) {
    const ok = await new Promise((r) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), r(true)));
      s.once("error", () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${port}`);
}

// --- a private Redis --------------------------------------------------------

/**
 * needs returns a test's skip value for the programs bins: false when all
 * run, else "<the first missing one> is not installed". On CI a missing
 * one is a failure (.ci/run installs them).
 */
export function needs(...bins) {
  let missing = null;
  for (const bin of bins) {
    try {
      execFileSync(bin, ["--version"], { stdio: "ignore" });
    } catch {
      missing ??= bin;
    }
  }
  if (missing && process.env.CI === "true") throw new Error(`${missing} is required on CI (.ci/run installs it)`);
  return missing ? `${missing} is not installed` : false;
}

/**
 * startRedis runs redis-server on a free port (nothing on disk) and waits
 * for it. The handle can kill it (SIGKILL) and start it again on the same
 * port (empty: a Redis that died and came back).
 */
export async function startRedis() {
  const port = await freePort();
  let proc;
  const r = {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    /** start runs redis-server and waits for its port. */
    start() {
      proc = track(
        spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
          stdio: "ignore",
        }),
      );
      return waitPort(port);
    },
    /** kill ends the process at once and waits for it. */
    async kill() {
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await exited;
    },
    /** running reports whether the process is alive. */
    running: () => !!proc && proc.exitCode === null && proc.signalCode === null,
    /** signal sends sig (SIGSTOP, SIGCONT) to the process. */
    signal: (sig) => r.running() && proc.kill(sig),
  };
  await r.start();
  return r;
}

// --- databases --------------------------------------------------------------

/**
 * Where fresh databases are created: the servers .ci/run starts (the Go
 * tests of examples/cms read the same variables). The MySQL URL is of the
 * form mysql://user:pass@host:port/db.
 */
const adminURL = {
  postgres: process.env.TEST_POSTGRES_URL || "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
  mysql: process.env.TEST_MYSQL_URL || "mysql://root@127.0.0.1:3306/test",
};

/** sql runs statement on kind's server as its admin (psql or mariadb). */
function sql(kind, statement) {
  if (kind === "postgres") {
    execFileSync("psql", ["-w", "-q", adminURL.postgres, "-c", statement], {
      stdio: ["ignore", "ignore", "pipe"],
      timeout: guard,
      env: { ...process.env, PGCONNECT_TIMEOUT: "5" },
    });
    return;
  }
  const u = new URL(adminURL.mysql);
  const args = ["--protocol=tcp", "-h", u.hostname, "-P", u.port || "3306", "-u", decodeURIComponent(u.username), "--connect-timeout=5", "-e", statement];
  execFileSync("mariadb", args, {
    stdio: ["ignore", "ignore", "pipe"],
    timeout: guard,
    env: { ...process.env, MYSQL_PWD: decodeURIComponent(u.password) },
  });
}

/**
 * databaseSkip is a test's skip value for a database kind ("sqlite",
 * "postgres", "mysql"): false when its server answers, else why not. On CI
 * a missing one is a failure (.ci/run starts both).
 */
export function databaseSkip(kind) {
  if (kind === "sqlite") return false;
  const missing = needs(kind === "postgres" ? "psql" : "mariadb");
  if (missing) return missing;
  try {
    sql(kind, "select 1");
    return false;
  } catch (err) {
    const why = `no ${kind} server answers at ${adminURL[kind].replace(/\/\/[^@/]*@/, "//")}: ${String(err.stderr ?? err.message).trim()}`;
    if (process.env.CI === "true") throw new Error(`${why} (.ci/run starts it)`);
    return why;
  }
}

/**
 * createDatabase creates an empty database on kind's server and returns
 * its DATABASE_URL and drop(), which removes it (connections still open
 * included, on PostgreSQL).
 */
export function createDatabase(kind) {
  const name = `cms_fault_${crypto.randomBytes(6).toString("hex")}`;
  sql(kind, `CREATE DATABASE ${name}`);
  const u = new URL(adminURL[kind]);
  u.pathname = `/${name}`;
  const remove = () => sql(kind, `DROP DATABASE IF EXISTS ${name}${kind === "postgres" ? " WITH (FORCE)" : ""}`);
  leftovers.add(remove);
  return {
    name,
    url: u.toString(),
    drop: () => {
      leftovers.delete(remove);
      remove();
    },
  };
}

// --- the example server -----------------------------------------------------

/**
 * startExample builds examples/cms into a fresh temporary directory and
 * starts it on a free port. The handle can stop and start the same binary
 * again (same port, same database: a restart) and close everything.
 * Options: env (more environment, e.g. REDIS_URL or DATABASE_URL), db (the
 * SQLite file, to share one between instances; default: in the instance's
 * directory), bin (an already built binary: ex.bin of another instance),
 * degraded (start() is done once /healthz answers at all, 503 included: an
 * instance whose Redis is down is up).
 */
export async function startExample(opts = {}) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "cms-conformance-"));
  const removeWork = () => fs.rmSync(work, { recursive: true, force: true });
  leftovers.add(removeWork);
  const bin = opts.bin ?? path.join(work, "cms");
  const db = opts.db ?? path.join(work, "cms.db");
  if (!opts.bin) {
    try {
      execFileSync("go", ["build", "-o", bin, "./examples/cms"], { cwd: repo, stdio: "inherit" });
    } catch (err) {
      fs.rmSync(work, { recursive: true, force: true });
      throw err;
    }
  }
  const port = await freePort();
  let server;

  const ex = {
    port,
    work,
    bin,
    db,
    url: `http://127.0.0.1:${port}`,
    /** start runs the binary and waits for /healthz. */
    async start() {
      const log = fs.openSync(path.join(work, "cms.log"), "a");
      server = track(
        spawn(bin, [], {
          env: { ...process.env, PORT: String(port), JWT_SECRET: secret, DB_PATH: db, ...(opts.env ?? {}) },
          stdio: ["ignore", "ignore", log],
        }),
      );
      fs.closeSync(log); // the child has its own copy
      const until = Date.now() + guard;
      while (Date.now() < until) {
        if (server.exitCode !== null || server.signalCode !== null) break;
        try {
          const res = await fetch(`${ex.url}/healthz`, { signal: AbortSignal.timeout(2000) });
          await res.arrayBuffer();
          if (res.ok || (opts.degraded && res.status === 503)) return;
        } catch {}
        await sleep(50);
      }
      throw new Error(`the example did not become ready; its log:\n${ex.log()}`);
    },
    /**
     * stop ends the process (SIGCONT, in case it is stopped, then SIGTERM)
     * and waits for it; one that has not exited after the hang guard is
     * killed.
     */
    async stop() {
      if (!ex.running()) return;
      const exited = new Promise((r) => server.once("exit", r));
      server.kill("SIGCONT");
      server.kill("SIGTERM");
      const t = setTimeout(() => server.kill("SIGKILL"), guard);
      await exited;
      clearTimeout(t);
    },
    /** running reports whether the process is alive (stopped included). */
    running: () => !!server && server.exitCode === null && server.signalCode === null,
    /** signal sends sig (SIGSTOP, SIGCONT) to the process. */
    signal: (sig) => ex.running() && server.kill(sig),
    /** kill ends the process at once (SIGKILL: no clean shutdown) and waits for it. */
    async kill() {
      if (!server || server.exitCode !== null || server.signalCode !== null) return;
      const exited = new Promise((r) => server.once("exit", r));
      server.kill("SIGKILL");
      await exited;
    },
    /** close stops the server and removes its directory. */
    async close() {
      await ex.stop();
      leftovers.delete(removeWork);
      removeWork();
    },
    /** log returns what the example wrote to stderr so far. */
    log: () => {
      try {
        return fs.readFileSync(path.join(work, "cms.log"), "utf8");
      } catch {
        return "";
      }
    },
    /** api calls {url}/api/v1{p} with a Bearer token and a JSON body. */
    api: (method, p, tok, body) =>
      fetch(`${ex.url}/api/v1${p}`, {
        method,
        headers: { Authorization: `Bearer ${tok}`, "Content-Type": "application/json" },
        body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      }),
  };
  try {
    await ex.start();
  } catch (err) {
    await ex.kill();
    fs.rmSync(work, { recursive: true, force: true }); // the binary too, when built here
    throw err;
  }
  return ex;
}

/**
 * buildExample builds examples/cms once into a temporary directory (removed
 * when this process exits) and returns the binary's path, for
 * startExample's bin option.
 */
export function buildExample() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cms-build-"));
  leftovers.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const bin = path.join(dir, "cms");
  execFileSync("go", ["build", "-o", bin, "./examples/cms"], { cwd: repo, stdio: "inherit" });
  return bin;
}

/**
 * startCluster starts a private redis-server and two instances of the
 * example sharing it and one SQLite file (a and b: one binary, built once).
 * close stops all three.
 */
export async function startCluster() {
  const redis = await startRedis();
  const env = { REDIS_URL: redis.url };
  const c = { redis, a: null, b: null };
  c.close = async () => {
    await c.a?.close();
    await c.b?.close();
    await redis.kill();
  };
  try {
    c.a = await startExample({ env });
    c.b = await startExample({ env, db: c.a.db, bin: c.a.bin });
  } catch (err) {
    await c.close();
    throw err;
  }
  return c;
}

// The invariants of the fault suite (faults.test.mjs), checked over what
// every subscriber received. PROTOCOL.md §2: per record, every subscriber
// receives events in publish order, with no duplicates, and never silently
// misses one (it gets it, or resync first); tenants never see each other's
// records; an event's ETag is the ETag the app serves for that version.
//
// A version is the post's counter: every write of the suite adds 1 to it
// in its transaction, so the counters of one post are its versions, 0, 1,
// 2, … in commit order, and each write's answer says which version it
// committed and that version's ETag. A post the suite deleted (stored says
// deleted) ends its stream: one deleted frame (again only after a resync),
// nothing after it, every deleted frame of it with one ETag; a deleted
// frame of any other post is a violation.

/**
 * A frame as a subscriber received it.
 * @typedef {object} Frame
 * @property {number} t       ms since the run began
 * @property {string} type    snapshot | changed | deleted | resync
 * @property {string} post    the record's id (SSE: the data's id; WebSocket: the frame's)
 * @property {string} [etag]  the SSE id / the WebSocket frame's etag
 * @property {number} [v]     the version (data.counter)
 * @property {number} conn    which connection of the subscriber (1, 2, …)
 * @property {number} inst    the instance that connection went to
 */

/**
 * A subscriber: its frames per record, in the order received.
 * @typedef {object} Subscriber
 * @property {string} name
 * @property {string} tenant
 * @property {string[]} posts   the records it follows
 * @property {Map<string, Frame[]>} frames  by record id (frames of records it does not follow included)
 * @property {{t:number, what:string}[]} [refusals]  answers refusing it (403, 404, error frames)
 * @property {{t:number, what:string}[]} [trace]  its connections' events (opened, closed, subscribed, errors)
 */

/** The kinds of violation, in report order. */
export const kinds = ["duplicate", "reorder", "gap", "etag", "foreign", "deleted", "refused", "final", "write"];

/**
 * check returns the violations and the counts of a run.
 * @param {object} run
 * @param {Subscriber[]} run.subs
 * @param {Map<string, string>} run.tenantOf            post id → tenant
 * @param {Map<string, Map<number, string>>} run.written post id → version → the ETag its write answered
 * @param {Map<string, {etag: string, v: number, deleted?: boolean}>} run.stored post id → GET after the run (deleted: 404, the suite deleted it)
 * @param {{kind: string, start: number, end: number}[]} [run.faults] when each fault was on
 * @param {object[]} [run.writeConflicts] two writes that answered one version with different ETags
 * @param {number} [run.bufferSize] events a record's buffer holds (realtime.Config.BufferSize)
 */
export function check({ subs, tenantOf, written, stored, faults = [], writeConflicts = [], bufferSize = 100 }) {
  const violations = [];
  const counts = {
    frames: 0, duplicate: 0, reorder: 0, gap: 0, etag: 0, foreign: 0, deleted: 0, refused: 0, final: 0, write: 0,
    resyncs: 0, needlessResyncs: 0, avoidableResyncs: 0, announcedJumps: 0, streams: 0,
    gapVersions: 0, gapVersionsSeenElsewhere: 0, acrossReconnect: 0, withinConnection: 0,
  };
  // Versions delivered to anyone, and the ETags frames gave versions that
  // no write answer named (a write whose answer was lost).
  const delivered = new Map(); // post → Set(v)
  const unnamed = new Map(); // `${post} ${v}` → Map(etag → first {sub, frame})
  for (const s of subs) {
    for (const [post, frames] of s.frames) {
      for (const f of frames) {
        if (f.v === undefined) continue;
        if (!delivered.has(post)) delivered.set(post, new Set());
        delivered.get(post).add(f.v);
      }
    }
  }
  const resyncs = []; // {t, sub, post, before, after}
  const deletedTags = {}; // post → Map(tombstone ETag → first {s, frames, i})
  const add = (kind, s, post, frames, i, detail) => {
    counts[kind]++;
    const f = frames?.[i];
    const prev = frames && i > 0 ? frames[i - 1] : undefined;
    if (f && prev && (kind === "duplicate" || kind === "reorder" || kind === "gap")) {
      counts[prev.conn === f.conn ? "withinConnection" : "acrossReconnect"]++;
    }
    const v = { kind, sub: s?.name, post, at: i, detail, around: frames ? frames.slice(Math.max(0, i - 4), i + 3) : [] };
    // What happened to the subscriber's connections around it.
    if (s?.trace && f) v.trace = s.trace.filter((e) => e.t >= (frames[Math.max(0, i - 4)]?.t ?? 0) - 1000).slice(0, 12);
    if (s?.trace && kind === "final") v.trace = s.trace.slice(-12);
    violations.push(v);
  };

  for (const c of writeConflicts) add("write", null, c.post, null, 0, c);

  for (const s of subs) {
    for (const r of s.refusals ?? []) add("refused", s, r.post, null, 0, r.what);
    for (const [post, frames] of s.frames) {
      counts.streams++;
      const foreign = tenantOf.get(post) !== s.tenant || !s.posts.includes(post);
      let max = -1;
      const seen = new Set();
      let resync = null; // the resync not yet followed by a record frame
      let view; // the last record frame applied
      const doomed = stored.get(post)?.deleted === true;
      let gone = null; // the deleted frame, once received
      frames.forEach((f, i) => {
        counts.frames++;
        if (foreign) add("foreign", s, post, frames, i, `tenant ${s.tenant} got a frame of ${post} (tenant ${tenantOf.get(post) ?? "unknown"})`);
        if (f.type === "resync") {
          counts.resyncs++;
          resync = { t: f.t, sub: s.name, post, before: max, since: view?.t ?? 0, s, frames, i };
          resyncs.push(resync);
          return;
        }
        if (f.type === "deleted") {
          if (!doomed) {
            add("deleted", s, post, frames, i, "a deleted frame of a post the suite did not delete");
            return;
          }
          if (gone && !resync) {
            add("duplicate", s, post, frames, i, "deleted again");
          } else if (gone && gone.etag !== f.etag) {
            add("etag", s, post, frames, i, `deleted with ETag ${f.etag}, before with ${gone.etag}`);
          }
          const tombs = (deletedTags[post] ??= new Map());
          if (!tombs.has(f.etag)) tombs.set(f.etag, { s, frames, i });
          gone ??= f;
          view = f;
          resync = null;
          return;
        }
        if (gone) {
          add("reorder", s, post, frames, i, `a ${f.type} frame of version ${f.v} after deleted`);
          return;
        }
        view = f;
        const v = f.v;
        if (!Number.isInteger(v)) {
          add("etag", s, post, frames, i, `a ${f.type} frame without a counter`);
          return;
        }
        const want = written.get(post)?.get(v);
        if (want !== undefined && want !== f.etag) {
          add("etag", s, post, frames, i, `version ${v} came with ETag ${f.etag}; its write answered ${want}`);
        } else if (want === undefined) {
          const k = `${post} ${v}`;
          if (!unnamed.has(k)) unnamed.set(k, new Map());
          if (!unnamed.get(k).has(f.etag)) unnamed.get(k).set(f.etag, { s, frames, i });
        }
        if (resync) {
          resync.after = v;
          if (v === resync.before) counts.needlessResyncs++;
        }
        if (resync && v === max) {
          // resync, then the record as the subscriber had it: nothing missed
        } else if (resync && v < max) {
          add("reorder", s, post, frames, i, `version ${v} after ${max}: the record sent after a resync is older than what the subscriber had`);
        } else if (seen.has(v)) {
          add("duplicate", s, post, frames, i, `version ${v} again`);
        } else if (v < max) {
          add("reorder", s, post, frames, i, `version ${v} after ${max}`);
        } else if (v > max + 1 && max >= 0) {
          if (resync) counts.announcedJumps++;
          else {
            const missing = [];
            for (let m = max + 1; m < v; m++) missing.push(m);
            const elsewhere = missing.filter((m) => delivered.get(post)?.has(m));
            counts.gapVersions += missing.length;
            counts.gapVersionsSeenElsewhere += elsewhere.length;
            add("gap", s, post, frames, i,
              `version ${v} after ${max} with no resync: missed ${missing.join(",")}` +
                (elsewhere.length ? ` (${elsewhere.length === missing.length ? "all" : elsewhere.join(",")} delivered to other subscribers)` : " (delivered to no subscriber)"));
          }
        }
        seen.add(v);
        if (v > max) max = v;
        resync = null;
      });
      if (foreign) continue;
      const want = stored.get(post);
      if (doomed) {
        if (view?.type !== "deleted") {
          add("final", s, post, frames, frames.length - 1,
            `its last record frame is ${view ? `version ${view.v} ${view.etag}` : "none"}, the post was deleted`);
        }
      } else if (!view || !want || view.etag !== want.etag) {
        add("final", s, post, frames, frames.length - 1,
          `its last record frame is ${view ? `version ${view.v} ${view.etag}` : "none"}, the database has version ${want?.v} ${want?.etag}`);
      }
    }
  }
  // A deleted post: every deleted frame of it, on every subscriber, one ETag.
  for (const [post, tags] of Object.entries(deletedTags)) {
    if (tags.size < 2) continue;
    const [first, second] = [...tags.values()];
    add("etag", second.s, post, second.frames, second.i, `deleted came with ${tags.size} ETags: ${[...tags.keys()].join(", ")} (first to ${first.s.name})`);
  }
  // A version no write answer named: every frame of it must carry one ETag.
  for (const [k, tags] of unnamed) {
    if (tags.size < 2) continue;
    const [first, second] = [...tags.values()];
    add("etag", second.s, k.split(" ")[0], second.frames, second.i,
      `version ${k.split(" ")[1]} came with ${tags.size} ETags: ${[...tags.keys()].join(", ")} (first to ${first.s.name})`);
  }
  // The database against the writes: each GET's ETag is its write's.
  for (const [post, st] of stored) {
    const want = written.get(post)?.get(st.v);
    if (want !== undefined && want !== st.etag) {
      add("write", null, post, null, 0, `GET answers version ${st.v} with ETag ${st.etag}; its write answered ${want}`);
    }
  }

  // Resyncs per fault: a resync counts for every fault on at its time (or
  // that ended less than 5 s before): faults overlap, so a resync may count
  // for several; "none" has those no fault was near.
  //
  // A resync is needless when the record sent after it is the version the
  // subscriber had; avoidable when the events it missed should still have
  // been in the buffer: Redis was not down (killed, then restarted empty)
  // at any time since the subscriber's last frame, and it missed fewer
  // versions than a record's buffer holds (bufferSize).
  const perFault = {};
  const slot = (k) => (perFault[k] ??= { faults: 0, resyncs: 0, needless: 0, avoidable: 0 });
  for (const f of faults) slot(f.kind).faults++;
  slot("none");
  const outages = faults.filter((f) => f.kind === "redis");
  const avoidables = []; // examples, with the frames around them
  for (const r of resyncs) {
    const needless = r.after !== undefined && r.after === r.before;
    const avoidable = !needless && r.after !== undefined && r.before >= 0 && r.after - r.before <= bufferSize && !outages.some((o) => o.start <= r.t && o.end > r.since);
    if (avoidable) {
      counts.avoidableResyncs++;
      const from = Math.max(0, r.i - 4);
      avoidables.push({
        sub: r.sub, post: r.post, detail: `resync after version ${r.before} (its last frame at ${(r.since / 1000).toFixed(3)}s), then version ${r.after}`,
        around: r.frames.slice(from, r.i + 3),
        trace: r.s.trace?.filter((e) => e.t >= (r.frames[from]?.t ?? 0) - 1000).slice(0, 12),
      });
    }
    const on = new Set(faults.filter((f) => f.start <= r.t && r.t <= f.end + 5000).map((f) => f.kind));
    if (!on.size) on.add("none");
    for (const k of on) {
      const p = slot(k);
      p.resyncs++;
      if (needless) p.needless++;
      if (avoidable) p.avoidable++;
    }
  }
  return { violations, counts, perFault, avoidables };
}

/** short abbreviates an ETag for reports. */
export const short = (etag) => (etag ? etag.replace(/^"|"$/g, "").slice(0, 8) : "-");

/** describe prints a frame on one line. */
export function describe(f) {
  const v = f.v === undefined ? "" : ` v${f.v}`;
  return `${(f.t / 1000).toFixed(3)}s ${f.type}${v}${f.reason ? ` (${f.reason})` : ""} ${short(f.etag)} c${f.conn}@i${f.inst}`;
}

/**
 * report renders a run's result: the counts, resyncs per fault, and up to
 * perKind examples of each kind of violation with the frames around it.
 */
export function report({ violations, counts, perFault, avoidables = [] }, perKind = 3) {
  const lines = [];
  lines.push(
    `frames ${counts.frames} in ${counts.streams} streams; duplicates ${counts.duplicate}, reorders ${counts.reorder}, ` +
      `unannounced gaps ${counts.gap} (${counts.gapVersions} versions skipped, ${counts.gapVersionsSeenElsewhere} of them delivered to other subscribers), ` +
      `wrong ETags ${counts.etag}, foreign frames ${counts.foreign}, deleted ${counts.deleted}, refusals ${counts.refused}, ` +
      `final views wrong ${counts.final}, write anomalies ${counts.write}`,
  );
  lines.push(
    `order violations within one connection ${counts.withinConnection}, across a reconnect ${counts.acrossReconnect}; ` +
      `resyncs ${counts.resyncs} (${counts.needlessResyncs} where the subscriber had missed nothing, ${counts.avoidableResyncs} more where what it missed should still have been buffered), jumps after a resync ${counts.announcedJumps}`,
  );
  lines.push(
    "resyncs per fault (while it was on or within 5 s after; faults overlap): " +
      Object.entries(perFault)
        .filter(([, p]) => p.faults || p.resyncs)
        .map(([k, p]) => `${k} ${p.faults ? `${p.resyncs}/${p.faults} = ${(p.resyncs / p.faults).toFixed(1)}` : `${p.resyncs} (no fault near)`}${p.needless ? `, ${p.needless} needless` : ""}${p.avoidable ? `, ${p.avoidable} avoidable` : ""}`)
        .join("; "),
  );
  for (const kind of kinds) {
    const vs = violations.filter((v) => v.kind === kind);
    if (!vs.length) continue;
    lines.push(`${kind}: ${vs.length}; e.g.`);
    for (const v of vs.slice(0, perKind)) {
      lines.push(`  ${v.sub ?? "(writes)"} post ${v.post}: ${typeof v.detail === "string" ? v.detail : JSON.stringify(v.detail)}`);
      v.around.forEach((f, j) => {
        const mark = j === Math.min(4, v.at) ? "  >" : "   ";
        lines.push(`  ${mark} ${describe(f)}`);
      });
      if (v.trace?.length) lines.push(`      its connections: ${v.trace.map((e) => `${(e.t / 1000).toFixed(3)}s ${e.what}`).join("; ")}`);
    }
  }
  if (avoidables.length) lines.push(`avoidable resyncs: ${avoidables.length}; e.g.`);
  for (const a of avoidables.slice(0, perKind)) {
    lines.push(`  ${a.sub} post ${a.post}: ${a.detail}`);
    for (const f of a.around) lines.push(`    ${f.type === "resync" ? ">" : " "} ${describe(f)}`);
    if (a.trace?.length) lines.push(`      its connections: ${a.trace.map((e) => `${(e.t / 1000).toFixed(3)}s ${e.what}`).join("; ")}`);
  }
  return lines.join("\n");
}

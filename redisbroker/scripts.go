package redisbroker

import "github.com/redis/go-redis/v9"

// lastGenerated is the Lua code setting `exists` (whether stream KEYS[1]
// exists) and `prev` to the last id ever generated in it (empty if it does
// not exist). It is not the id of the last entry left: Invalidate empties
// streams without deleting them, so that their ids keep increasing and the
// link between consecutive events survives.
const lastGenerated = `
local prev = ''
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then prev = info[i + 1] break end
  end
end
`

// epochFunc is the Lua code defining newEpoch(seed): a new epoch, the random
// seed the caller passed followed by Redis's clock in µs (hex), so that no
// epoch is created twice, even by a command retried after Redis restarted.
const epochFunc = `
local function newEpoch(seed)
  local t = redis.call('TIME')
  return seed .. string.format('%x', tonumber(t[1]) * 1000000 + tonumber(t[2]))
end
`

// headParts is the Lua code defining headParts(head): the epoch and the
// last id of a stream's head, the value "<epoch> <last id>" of its epoch
// key (see appendScript); nil for a missing or unreadable one.
const headParts = `
local function headParts(head)
  if not head then return nil end
  return string.match(head, '^(%S+) (%S*)$')
end
`

// watchedEpoch is the Lua code (after lastGenerated, epochFunc and
// headParts) setting ep to the epoch of stream KEYS[1], whose epoch key
// is KEYS[2], for a node that watches it: an epoch that is missing is
// created (seed ARGV[1]) with the stream's last id, and expires with the
// stream (when it does, or in ARGV[2] ms when the stream does not exist);
// a watched stream that does not exist keeps its epoch alive for ARGV[2]
// ms more. While a stream exists its epoch never outlives it: the append
// script gives both the same expiry (PEXPIREAT one time).
const watchedEpoch = `
local ep = headParts(redis.call('GET', KEYS[2]))
if not ep then
  ep = newEpoch(ARGV[1])
  local at = redis.call('PEXPIRETIME', KEYS[1])
  if at > 0 then
    redis.call('SET', KEYS[2], ep .. ' ' .. prev, 'PXAT', at)
  else
    redis.call('SET', KEYS[2], ep .. ' ' .. prev, 'PX', ARGV[2])
  end
elseif not exists then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
`

// appendScript stores one event at the end of one or more streams of a
// collection (a record's and its collection's: AppendRecord) and publishes
// it on each, once per dedupe key, all in one step; for a record event it
// first applies the version rule of realtime.Broker.AppendRecord.
//
//	KEYS[1..n] streams, KEYS[n+1..2n] their epoch keys, KEYS[2n+1] the
//	collection's index set, KEYS[2n+2] dedupe key, KEYS[2n+3] (record
//	events only) the version key of the record, whose stream is KEYS[1]
//	ARGV[1] n, ARGV[2] Size, ARGV[3] StreamTTL in ms, ARGV[4] etag,
//	ARGV[5] event, ARGV[6] dedupe TTL in s, ARGV[7] the seed of the epoch
//	of a stream that has none (epochFunc), ARGV[8] the event's version
//	("0": none), ARGV[9] the version minus one, ARGV[10] the mode: "1"
//	when a jump of versions is allowed (realtime.AppendGap), "2" when a
//	version above 1 needs the record's last version known
//	(realtime.AppendIfLastKnown), else "0", ARGV[11] (a push:
//	Broker.Push) a message published, once the event is appended, on each
//	channel ARGV[12..], preceded by the id of the event's entry in KEYS[1]
//	and a newline
//
// It returns {status, the record's last version ("" when unknown or not
// read), entry id of each stream..., (a push) the number of receivers of
// its message summed over its channels}; status is 0 (appended), 1 (appended
// already by a run with this dedupe key), 2 (a duplicate version: nothing
// done, no ids), 3 (a version beyond the next one: nothing done, no ids)
// or 4 (mode "2", a version above 1 and no version key: nothing done, no
// ids, the dedupe key not set). Versions are compared as decimal strings (they may exceed what a
// Lua number holds exactly). The message published on a stream's channel
// (its key's name) is "<epoch>\n<id>\n<prev>\n<event>", prev being the id
// of the stream's previous event (empty for the first).
//
// A stream's epoch key holds its head, "<epoch> <last id>": the last id
// generated in the stream (what XINFO STREAM calls last-generated-id, kept
// by Invalidate's XTRIM), written with each entry, so that an append need
// not read the stream's info. A stream without a head (none yet, or it was
// lost without its stream) gets a new epoch, and its last id from the
// stream.
var appendScript = redis.NewScript(epochFunc + nowMs + headParts + `
local n = tonumber(ARGV[1])
local ix, dk, vk = KEYS[2 * n + 1], KEYS[2 * n + 2], KEYS[2 * n + 3]
local done = redis.call('GET', dk)
if done then
  local out = {1, ''}
  for id in string.gmatch(done, '%S+') do out[#out + 1] = id end
  return out
end
-- a < b (-1), a == b (0) or a > b (1) for decimal strings without
-- leading zeros
local function vcmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y and -1 or 1 end
  end
  return 0
end
local v = ARGV[8]
local versioned = vk and v ~= '0'
if versioned then
  local last = redis.call('GET', vk)
  if last then
    if vcmp(v, last) <= 0 then return {2, last} end
    if ARGV[10] ~= '1' and vcmp(ARGV[9], last) > 0 then return {3, last} end
  elseif ARGV[10] == '2' and v ~= '1' then
    return {4, ''}
  end
end
-- one expiry for every key written: an epoch never outlives its stream
local at = now + tonumber(ARGV[3])
local out = {0, ''}
local ids = {}
for k = 1, n do
  local key, ek = KEYS[k], KEYS[n + k]
  local ep, prev = headParts(redis.call('GET', ek))
  if not ep then
    ep, prev = newEpoch(ARGV[7]), ''
    if redis.call('EXISTS', key) == 1 then
      local info = redis.call('XINFO', 'STREAM', key)
      for i = 1, #info, 2 do
        if info[i] == 'last-generated-id' then prev = info[i + 1] break end
      end
    end
  end
  local id = '*'
  if prev ~= '' then
    -- positions keep 20 bits for the sequence part of an id
    local ms, seq = string.match(prev, '^(%d+)%-(%d+)$')
    if tonumber(seq) >= 1048575 then id = string.format('%.0f', tonumber(ms) + 1) .. '-0' end
  end
  id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[2], id, 'etag', ARGV[4], 'prev', prev, 'ev', ARGV[5])
  redis.call('PEXPIREAT', key, at)
  redis.call('SET', ek, ep .. ' ' .. id, 'PXAT', at)
  redis.call('SADD', ix, key)
  redis.call('PUBLISH', key, ep .. '\n' .. id .. '\n' .. prev .. '\n' .. ARGV[5])
  ids[k] = id
  out[k + 2] = id
end
redis.call('PEXPIREAT', ix, at)
if versioned then
  redis.call('SET', vk, v, 'PXAT', at)
elseif vk then
  redis.call('PEXPIREAT', vk, at)
end
redis.call('SET', dk, table.concat(ids, ' '), 'EX', ARGV[6])
if ARGV[11] then
  local msg, nodes = ids[1] .. '\n' .. ARGV[11], 0
  for i = 12, #ARGV do nodes = nodes + redis.call('PUBLISH', ARGV[i], msg) end
  out[n + 3] = nodes
end
return out
`)

// watchScript returns {epoch, last generated id ("" for none)} of stream
// KEYS[1] (epoch key KEYS[2]), creating the epoch if missing (seed
// ARGV[1], TTL ARGV[2]: see watchedEpoch): a watcher's starting point.
var watchScript = redis.NewScript(lastGenerated + epochFunc + headParts + watchedEpoch + `
return {ep, prev}
`)

// invalidateScript empties every stream of the collection whose index is
// KEYS[1], and forgets the last version of each record (its key is the
// record stream's name followed by ":v"). The streams are trimmed to
// nothing rather than deleted: an empty stream keeps its last id and its
// epoch, so later ids (positions) stay larger and the next event's prev
// still names the event before. The streams' and versions' keys share the
// index's hash tag: one slot.
var invalidateScript = redis.NewScript(`
local members = redis.call('SMEMBERS', KEYS[1])
for _, k in ipairs(members) do
  if redis.call('EXISTS', k) == 1 then
    redis.call('XTRIM', k, 'MAXLEN', 0)
  else
    redis.call('SREM', KEYS[1], k)
  end
  redis.call('DEL', k .. ':v')
end
return #members
`)

// nowMs is the Lua code setting `now` to Redis's clock in ms: presence
// expiry uses one clock, whatever the nodes' clocks say.
const nowMs = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// presenceAddScript records connections of one tenant.
//
//	KEYS[1] tenant zset, KEYS[1+i] user zset of connection i
//	ARGV[1] ttl ms, ARGV[2i] tenant member, ARGV[2i+1] connID
var presenceAddScript = redis.NewScript(nowMs + `
local ttl = tonumber(ARGV[1])
local exp = now + ttl
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[1], exp, ARGV[2 * (i - 1)])
  redis.call('ZADD', KEYS[i], exp, ARGV[2 * (i - 1) + 1])
end
for i = 1, #KEYS do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 0
`)

// presenceRemoveScript forgets connections of one tenant (same layout as
// presenceAddScript, without the ttl: ARGV[2i-1] member, ARGV[2i] connID).
var presenceRemoveScript = redis.NewScript(`
for i = 2, #KEYS do
  redis.call('ZREM', KEYS[1], ARGV[2 * (i - 1) - 1])
  redis.call('ZREM', KEYS[i], ARGV[2 * (i - 1)])
end
return 0
`)

// presenceReadScript drops the expired members of zset KEYS[1] and
// returns the others (ARGV[1] = "members") or their number.
var presenceReadScript = redis.NewScript(nowMs + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] == 'members' then return redis.call('ZRANGE', KEYS[1], 0, -1) end
return redis.call('ZCARD', KEYS[1])
`)

// catchUpScript returns {epoch, last generated id, entries from ARGV[3]
// on (an XRANGE start)} of stream KEYS[1] (epoch key KEYS[2]; ARGV[1],
// ARGV[2] create a missing epoch: see watchedEpoch): what a watcher
// missed, and up to where the stream went (events emptied by Invalidate
// are missing from the entries but not from the last id).
var catchUpScript = redis.NewScript(lastGenerated + epochFunc + headParts + watchedEpoch + `
local ents = {}
if prev ~= '' then ents = redis.call('XRANGE', KEYS[1], ARGV[3], '+') end
return {ep, prev, ents}
`)

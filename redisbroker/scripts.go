package redisbroker

import "github.com/redis/go-redis/v9"

// lastGenerated is the Lua code setting `prev` to the last id ever
// generated in stream KEYS[1] (empty if the stream does not exist). It is
// not the id of the last entry left: Invalidate empties streams without
// deleting them, so that their ids keep increasing and the link between
// consecutive events survives.
const lastGenerated = `
local prev = ''
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then prev = info[i + 1] break end
  end
end
`

// appendScript stores one event at the end of one or more streams of a
// collection (a record's and its collection's: AppendRecord) and publishes
// it on each, once per dedupe key, all in one step.
//
//	KEYS[1..n] streams, KEYS[n+1] the collection's index set, KEYS[n+2]
//	dedupe key
//	ARGV[1] Size, ARGV[2] StreamTTL in ms, ARGV[3] etag, ARGV[4] event,
//	ARGV[5] dedupe TTL in s
//
// It returns {entry id of each stream..., 1 if they were already written}.
// The message published on a stream's channel (its key's name) is
// "<id>\n<prev>\n<event>", prev being the id of the stream's previous event
// (empty for the first).
var appendScript = redis.NewScript(`
local n = #KEYS - 2
local ix, dk = KEYS[n + 1], KEYS[n + 2]
local done = redis.call('GET', dk)
if done then
  local out = {}
  for id in string.gmatch(done, '%S+') do out[#out + 1] = id end
  out[#out + 1] = 1
  return out
end
local out = {}
for k = 1, n do
  local key = KEYS[k]
  local prev = ''
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then prev = info[i + 1] break end
    end
  end
  local id = '*'
  if prev ~= '' then
    -- positions keep 20 bits for the sequence part of an id
    local ms, seq = string.match(prev, '^(%d+)%-(%d+)$')
    if tonumber(seq) >= 1048575 then id = string.format('%.0f', tonumber(ms) + 1) .. '-0' end
  end
  id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], id, 'etag', ARGV[3], 'prev', prev, 'ev', ARGV[4])
  redis.call('PEXPIRE', key, ARGV[2])
  redis.call('SADD', ix, key)
  redis.call('PUBLISH', key, id .. '\n' .. prev .. '\n' .. ARGV[4])
  out[k] = id
end
redis.call('PEXPIRE', ix, ARGV[2])
redis.call('SET', dk, table.concat(out, ' '), 'EX', ARGV[5])
out[n + 1] = 0
return out
`)

// lastIDScript returns the last id generated in stream KEYS[1] (” for
// none): a watcher's starting point.
var lastIDScript = redis.NewScript(lastGenerated + `
return prev
`)

// invalidateScript empties every stream of the collection whose index is
// KEYS[1]. The streams are trimmed to nothing rather than deleted: an
// empty stream keeps its last id, so later ids (positions) stay larger and
// the next event's prev still names the event before. The streams' keys
// share the index's hash tag: one slot.
var invalidateScript = redis.NewScript(`
local members = redis.call('SMEMBERS', KEYS[1])
for _, k in ipairs(members) do
  if redis.call('EXISTS', k) == 1 then
    redis.call('XTRIM', k, 'MAXLEN', 0)
  else
    redis.call('SREM', KEYS[1], k)
  end
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

// catchUpScript returns {last generated id, entries from ARGV[1] on (an
// XRANGE start)} of stream KEYS[1]: what a watcher missed, and up to where
// the stream went (events emptied by Invalidate are missing from the
// entries but not from the last id).
var catchUpScript = redis.NewScript(lastGenerated + `
local ents = {}
if prev ~= '' then ents = redis.call('XRANGE', KEYS[1], ARGV[1], '+') end
return {prev, ents}
`)

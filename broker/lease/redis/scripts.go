package redis

import goredis "github.com/redis/go-redis/v9"

// Every state change of one lease and its indexes is one of these scripts.
// Redis runs a script atomically but does not roll back a script that fails
// half way, so each script first reads and checks everything it needs
// (existence, state, fence, the type of every key it will write) and only
// then writes. The only errors a write can still meet after the checks are
// the ones Redis raises before a script's first write (OOM under
// noeviction, READONLY on a replica), which change nothing.
//
// Scripts name the lease hash and the shard's sorted sets in KEYS; keys
// derived from a lease's fields (its indexes, when swept) are built from
// the shard prefix in ARGV and share its hash tag, so they are in the same
// cluster slot.
//
// Errors the store maps to the lease sentinels are error replies whose
// first word is an MF code: MFNOTFOUND, MFEXISTS, MFSTATE <state>,
// MFREVOKED <reason>, MFHARDEND, MFFENCED <fence>. Anything else (MFBAD for
// a key of the wrong type or a damaged lease) is a plain store error.
//
// Times are whole milliseconds since the epoch passed by the caller as
// decimal strings; scripts compare them with tonumber (exact below 2^53)
// and write the caller's strings, never a Lua number formatted back.

// prelude is shared by every script.
const prelude = `
local function kind(key)
  return redis.call('TYPE', key)['ok']
end
-- bad returns an error message if key exists with a type other than want.
local function bad(key, want)
  local t = kind(key)
  if t ~= 'none' and t ~= want then
    return 'MFBAD key ' .. key .. ' holds a ' .. t .. ', want a ' .. want
  end
  return nil
end
-- getlease returns the lease hash as a table and as the flat HGETALL
-- reply, nil if there is none, or an error message.
local function getlease(key)
  local t = kind(key)
  if t == 'none' then return nil, nil, nil end
  if t ~= 'hash' then
    return nil, nil, 'MFBAD key ' .. key .. ' holds a ' .. t .. ', want a hash'
  end
  local flat = redis.call('HGETALL', key)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  if not m.t or not m.E then
    return nil, nil, 'MFBAD lease ' .. key .. ' is damaged (no state or expiry)'
  end
  -- No due time stored means due at expiry (the common case, one field less).
  if not m.D then m.D = m.E end
  return m, flat, nil
end
-- revocable reports whether a revocation request at 'at' changes lease m:
-- only pending and active leases change; the first request is recorded, a
-- later one only if it asks for an earlier time.
local function revocable(m, at)
  if m.t ~= 'p' and m.t ~= 'a' then return false end
  if m.R and (not m.Q or tonumber(at) >= tonumber(m.Q)) then return false end
  return true
end
-- revoke records the request; DueAt only ever moves earlier.
local function revoke(lkey, duekey, id, m, reason, at)
  redis.call('HSET', lkey, 'R', reason, 'Q', at)
  if tonumber(at) < tonumber(m.D) then
    redis.call('HSET', lkey, 'D', at)
    redis.call('ZADD', duekey, at, id)
  end
end
-- split cuts a 'gone' member: id NUL subject NUL entitlement NUL grant.
local function split(s)
  local out = {}
  local from = 1
  while true do
    local i = string.find(s, '\0', from, true)
    if not i then out[#out + 1] = string.sub(s, from); break end
    out[#out + 1] = string.sub(s, from, i - 1)
    from = i + 1
  end
  return out
end
`

// createScript writes a new pending lease and its index entries.
// KEYS: lease, due, all, by:sub, by:ent [, by:grant]
// ARGV: id, due ms, field, value, ...
var createScript = goredis.NewScript(prelude + `
local id = ARGV[1]
local t = kind(KEYS[1])
if t == 'hash' then return redis.error_reply('MFEXISTS') end
local err = bad(KEYS[1], 'hash')
for i = 2, #KEYS do err = err or bad(KEYS[i], 'zset') end
if err then return redis.error_reply(err) end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], id)
for i = 3, #KEYS do redis.call('ZADD', KEYS[i], 0, id) end
return 'OK'
`)

// undoScript deletes a lease this store created moments ago and never
// handed out (its Create lost the race for the request id): only if it is
// still pending and was never claimed.
// KEYS: lease, due, all, by:sub, by:ent [, by:grant]
// ARGV: id
var undoScript = goredis.NewScript(prelude + `
local id = ARGV[1]
local m, flat, err = getlease(KEYS[1])
if err then return redis.error_reply(err) end
if not m then return 0 end
for i = 2, #KEYS do err = err or bad(KEYS[i], 'zset') end
if err then return redis.error_reply(err) end
if m.t ~= 'p' or m.F then return 0 end
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], id) end
return 1
`)

// bindScript records the backend handle of a pending lease.
// KEYS: lease; ARGV: ref
var bindScript = goredis.NewScript(prelude + `
local m, flat, err = getlease(KEYS[1])
if err then return redis.error_reply(err) end
if not m then return redis.error_reply('MFNOTFOUND') end
if m.t ~= 'p' then return redis.error_reply('MFSTATE ' .. m.t) end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'x')
else
  redis.call('HSET', KEYS[1], 'x', ARGV[1])
end
return 'OK'
`)

// activateScript moves a pending lease to active, due at its expiry.
// KEYS: lease, due; ARGV: id, ref
var activateScript = goredis.NewScript(prelude + `
local id = ARGV[1]
local m, flat, err = getlease(KEYS[1])
if err then return redis.error_reply(err) end
if not m then return redis.error_reply('MFNOTFOUND') end
err = bad(KEYS[2], 'zset')
if err then return redis.error_reply(err) end
if m.t ~= 'p' then return redis.error_reply('MFSTATE ' .. m.t) end
if m.R then return redis.error_reply('MFREVOKED ' .. m.R) end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 't', 'a', 'x', ARGV[2])
else
  redis.call('HSET', KEYS[1], 't', 'a')
end
redis.call('HDEL', KEYS[1], 'D')
redis.call('ZADD', KEYS[2], m.E, id)
return redis.call('HGETALL', KEYS[1])
`)

// renewScript moves the expiry (and due time) of an active lease.
// KEYS: lease, due; ARGV: id, expires ms
var renewScript = goredis.NewScript(prelude + `
local id, to = ARGV[1], ARGV[2]
local m, flat, err = getlease(KEYS[1])
if err then return redis.error_reply(err) end
if not m then return redis.error_reply('MFNOTFOUND') end
err = bad(KEYS[2], 'zset')
if err then return redis.error_reply(err) end
if m.t ~= 'a' then return redis.error_reply('MFSTATE ' .. m.t) end
if m.R then return redis.error_reply('MFREVOKED ' .. m.R) end
if not m.H or tonumber(to) > tonumber(m.H) then return redis.error_reply('MFHARDEND') end
redis.call('HSET', KEYS[1], 'E', to)
redis.call('HDEL', KEYS[1], 'D')
redis.call('ZADD', KEYS[2], to, id)
return redis.call('HGETALL', KEYS[1])
`)

// revokeScript asks for revocation of one lease and returns
// {changed, lease}.
// KEYS: lease, due; ARGV: id, reason, at ms
var revokeScript = goredis.NewScript(prelude + `
local id, reason, at = ARGV[1], ARGV[2], ARGV[3]
local m, flat, err = getlease(KEYS[1])
if err then return redis.error_reply(err) end
if not m then return redis.error_reply('MFNOTFOUND') end
err = bad(KEYS[2], 'zset')
if err then return redis.error_reply(err) end
if not revocable(m, at) then return {0, flat} end
revoke(KEYS[1], KEYS[2], id, m, reason, at)
return {1, redis.call('HGETALL', KEYS[1])}
`)

// revokeMatchingScript asks for revocation of the next batch of leases in
// one index of one shard, after cursor, and returns {changed, last id
// examined, ids examined}. The caller repeats until a batch comes back
// short.
// KEYS: index, due; ARGV: shard prefix, reason, at ms, cursor, batch
var revokeMatchingScript = goredis.NewScript(prelude + `
local P, reason, at, cursor, batch = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local err = bad(KEYS[1], 'zset') or bad(KEYS[2], 'zset')
if err then return redis.error_reply(err) end
local min = '-'
if cursor ~= '' then min = '(' .. cursor end
local ids = redis.call('ZRANGEBYLEX', KEYS[1], min, '+', 'LIMIT', 0, batch)
local todo = {}
for _, id in ipairs(ids) do
  local k = P .. 'lease:' .. id
  local m, flat, e = getlease(k)
  if e then return redis.error_reply(e) end
  if m and revocable(m, at) then todo[#todo + 1] = {k, id, m} end
end
for _, x in ipairs(todo) do revoke(x[1], KEYS[2], x[2], x[3], reason, at) end
local last = ''
if #ids > 0 then last = ids[#ids] end
return {#todo, last, #ids}
`)

// claimScript claims up to max leases of one shard whose due time or
// claim deadline is at or before now, earliest first, and with the room
// left sweeps terminal leases whose retention has passed. It returns
// {id, lease, id, lease, ...} for the claims.
// KEYS: due, claimed, gone
// ARGV: shard prefix, now ms, deadline ms, max, ReasonExpired,
// ReasonPendingTimeout
var claimScript = goredis.NewScript(prelude + `
local P, now, dl, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local expired, timeout = ARGV[5], ARGV[6]
local err = bad(KEYS[1], 'zset') or bad(KEYS[2], 'zset') or bad(KEYS[3], 'zset')
if err then return redis.error_reply(err) end
local d = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, max)
local c = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, max)

-- Merge the two by score (then id), at most max in all.
local picks, seen = {}, {}
local i, j = 1, 1
while #picks < max and (i <= #d or j <= #c) do
  local fromDue
  if i > #d then fromDue = false
  elseif j > #c then fromDue = true
  else
    local sd, sc = tonumber(d[i + 1]), tonumber(c[j + 1])
    fromDue = sd < sc or (sd == sc and d[i] <= c[j])
  end
  local id
  if fromDue then id = d[i]; i = i + 2 else id = c[j]; j = j + 2 end
  if not seen[id] then
    seen[id] = true
    picks[#picks + 1] = {id, not fromDue}
  end
end

-- Read and check everything before the first write.
local work, strays = {}, {}
for _, p in ipairs(picks) do
  local id, lapsed = p[1], p[2]
  local k = P .. 'lease:' .. id
  local m, flat, e = getlease(k)
  if e then return redis.error_reply(e) end
  if not m or (lapsed and m.t ~= 'c') or (not lapsed and m.t ~= 'p' and m.t ~= 'a') then
    -- An index entry without a live lease behind it: drop it.
    strays[#strays + 1] = {id, lapsed}
  else
    work[#work + 1] = {k, id, m, lapsed}
  end
end
local sweep = {}
local room = max - #picks
if room > 0 then
  local g = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, room)
  for _, member in ipairs(g) do
    local f = split(member)
    local id = f[1]
    local lk = P .. 'lease:' .. id
    local t = kind(lk)
    if t ~= 'none' and t ~= 'hash' then
      return redis.error_reply('MFBAD key ' .. lk .. ' holds a ' .. t .. ', want a hash')
    end
    local st = nil
    if t == 'hash' then st = redis.call('HGET', lk, 't') end
    local idx = {}
    -- A lease re-created under the same id keeps its key and indexes.
    if st == nil or st == false or st == 'r' or st == 'i' then
      idx = {P .. 'all', P .. 'by:sub:' .. (f[2] or ''), P .. 'by:ent:' .. (f[3] or '')}
      if f[4] and f[4] ~= '' then idx[#idx + 1] = P .. 'by:grant:' .. f[4] end
      for _, k in ipairs(idx) do
        local e = bad(k, 'zset')
        if e then return redis.error_reply(e) end
      end
    else
      lk = nil
    end
    sweep[#sweep + 1] = {member, id, lk, idx}
  end
end

-- Write.
local out = {}
for _, w in ipairs(work) do
  local k, id, m, lapsed = w[1], w[2], w[3], w[4]
  if not lapsed then
    if m.R then
      redis.call('HSET', k, 't', 'c', 'b', m.t)
    elseif m.t == 'p' then
      redis.call('HSET', k, 't', 'c', 'b', m.t, 'R', timeout, 'Q', m.D)
    else
      redis.call('HSET', k, 't', 'c', 'b', m.t, 'R', expired)
    end
    redis.call('ZREM', KEYS[1], id)
  end
  redis.call('HINCRBY', k, 'F', 1)
  redis.call('ZADD', KEYS[2], dl, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', k)
end
for _, s in ipairs(strays) do
  if s[2] then redis.call('ZREM', KEYS[2], s[1]) else redis.call('ZREM', KEYS[1], s[1]) end
end
for _, s in ipairs(sweep) do
  if s[3] then redis.call('DEL', s[3]) end
  for _, k in ipairs(s[4]) do redis.call('ZREM', k, s[2]) end
  redis.call('ZREM', KEYS[3], s[1])
end
return out
`)

// finishScript records a claim's outcome.
// KEYS: lease, due, claimed, gone
// ARGV: id, fence, outcome (r revoked, i irrevocable, q retry), at ms,
// retry ms, error text, retain ms, sweep-at ms
var finishScript = goredis.NewScript(prelude + `
local id, fence, out, at, retry, msg, retain, sweepAt =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local m, flat, err = getlease(KEYS[1])
if err then return redis.error_reply(err) end
if not m then return redis.error_reply('MFNOTFOUND') end
for i = 2, 4 do err = err or bad(KEYS[i], 'zset') end
if err then return redis.error_reply(err) end
if tonumber(m.F or '0') ~= tonumber(fence) then return redis.error_reply('MFFENCED ' .. (m.F or '0')) end
if m.t ~= 'c' then return redis.error_reply('MFSTATE ' .. m.t) end
if out == 'q' and m.b ~= 'p' and m.b ~= 'a' then
  return redis.error_reply('MFBAD lease ' .. KEYS[1] .. ' is damaged (no state before its claim)')
end
local k = KEYS[1]
if out ~= 'r' then
  redis.call('HINCRBY', k, 'A', 1)
  if msg == '' then redis.call('HDEL', k, 'L') else redis.call('HSET', k, 'L', msg) end
end
if out == 'q' then
  if retry == m.E then
    redis.call('HSET', k, 't', m.b)
    redis.call('HDEL', k, 'D')
  else
    redis.call('HSET', k, 't', m.b, 'D', retry)
  end
  redis.call('HDEL', k, 'b')
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[2], retry, id)
  return 'OK'
end
redis.call('HSET', k, 't', out, 'V', at)
redis.call('HDEL', k, 'b')
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', KEYS[4], sweepAt, id .. '\0' .. m.s .. '\0' .. m.e .. '\0' .. (m.g or ''))
redis.call('PEXPIRE', k, retain)
return 'OK'
`)

// listScript returns, from one index of one shard, up to want leases after
// cursor that match the filters, examining at most budget ids. It returns
// {last id examined, done (1 when the index is exhausted), {id, lease,
// ...}}. Read-only.
// KEYS: index
// ARGV: shard prefix, cursor, want, budget, subject, entitlement, grant,
// states (state codes, "" for any)
var listScript = goredis.NewScript(prelude + `
local P, cur, want, budget = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local sub, ent, grant, states = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local err = bad(KEYS[1], 'zset')
if err then return redis.error_reply(err) end
local out, n, done = {}, 0, 0
while n < want and budget > 0 do
  local min = '-'
  if cur ~= '' then min = '(' .. cur end
  local batch = math.min(budget, math.max(want - n, 64))
  local ids = redis.call('ZRANGEBYLEX', KEYS[1], min, '+', 'LIMIT', 0, batch)
  local all = true
  for idx, id in ipairs(ids) do
    cur = id
    budget = budget - 1
    local m, flat, e = getlease(P .. 'lease:' .. id)
    if e then return redis.error_reply(e) end
    if m and (sub == '' or m.s == sub) and (ent == '' or m.e == ent) and
       (grant == '' or m.g == grant) and (states == '' or string.find(states, m.t, 1, true)) then
      out[#out + 1] = id
      out[#out + 1] = flat
      n = n + 1
    end
    if n >= want and idx < #ids then all = false; break end
  end
  if all and #ids < batch then done = 1; break end
end
return {cur, done, out}
`)

// reserveScript claims a request key for a Create: it sets it to mine
// (with a short TTL) unless it holds another value, other than replace (a
// confirmed lease that no longer exists), and returns "" when it did, else
// the value it holds.
// KEYS: request key; ARGV: mine, ttl ms, replace
var reserveScript = goredis.NewScript(prelude + `
local err = bad(KEYS[1], 'string')
if err then return redis.error_reply(err) end
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[3] then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
`)

// confirmScript turns a reservation into the request's lasting record
// once the lease is written; it returns "" when the key still held mine,
// else what it holds now ("" is never a value, "-" stands for none).
// KEYS: request key; ARGV: mine, final, ttl ms
var confirmScript = goredis.NewScript(prelude + `
local err = bad(KEYS[1], 'string')
if err then return redis.error_reply(err) end
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] then return v or '-' end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return ''
`)

// releaseScript drops a reservation that is still mine (the Create failed).
// KEYS: request key; ARGV: mine
var releaseScript = goredis.NewScript(prelude + `
if kind(KEYS[1]) ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

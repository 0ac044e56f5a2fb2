package redis

import goredis "github.com/redis/go-redis/v9"

// Every change of one record and its index entries is one of these
// scripts. Redis runs a script atomically but does not roll back a script
// that fails half way, so each script first reads and checks everything
// it needs (existence, version, the type of every key it will write) and
// only then writes. The only errors a write can still meet after the
// checks are the ones Redis raises at a script's first write (OOM under
// noeviction, READONLY on a replica), which change nothing.
//
// Scripts name the keys of a call in KEYS; keys found only inside the
// script (the index entries of a record's old field values, a record being
// trimmed, the certification currently latest) are built from the shard
// prefix in ARGV and share its hash tag, so they are in the same cluster
// slot.
//
// Errors the store maps to the access sentinels are error replies whose
// first word is an MF code: MFNOTFOUND, MFEXISTS, MFCONFLICT <version>.
// Anything else (MFBAD for a key of the wrong type or a damaged record) is
// a plain store error.
//
// Lua compares strings with strcoll, which follows the server's locale, so
// the scripts never order strings with < (see less); order is left to
// ZRANGEBYLEX and to Go.

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
-- less compares two strings byte by byte, as Go and ZRANGEBYLEX do.
local function less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
`

// createScript stores a new request or grant with version 1, adds it to
// its indexes and moves the shard's generation (see Store.Generation).
// KEYS: record, generation, every-id index, index of each indexed field
// ARGV: id, json, generation token, field, value, ... (the indexed fields)
var createScript = goredis.NewScript(prelude + `
local id, j, gen = ARGV[1], ARGV[2], ARGV[3]
if kind(KEYS[1]) == 'hash' then return redis.error_reply('MFEXISTS') end
local err = bad(KEYS[1], 'hash') or bad(KEYS[2], 'string')
for i = 3, #KEYS do err = err or bad(KEYS[i], 'zset') end
if err then return redis.error_reply(err) end
redis.call('HSET', KEYS[1], 'v', '1', 'j', j, unpack(ARGV, 4))
for i = 3, #KEYS do redis.call('ZADD', KEYS[i], 0, id) end
redis.call('SET', KEYS[2], gen)
return 'OK'
`)

// updateScript stores a request or grant if its stored version is the
// one given (compare-and-set), moves its index entries whose field
// changed, and moves the shard's generation.
// KEYS: record, generation, index of each indexed field for its new value
// ARGV: shard prefix, id, version, next version, json, generation token,
// then for each indexed field: field, index key infix, new value
var updateScript = goredis.NewScript(prelude + `
local P, id, ver, nxt, j, gen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local t = kind(KEYS[1])
if t == 'none' then return redis.error_reply('MFNOTFOUND') end
if t ~= 'hash' then
  return redis.error_reply('MFBAD key ' .. KEYS[1] .. ' holds a ' .. t .. ', want a hash')
end
local cur = redis.call('HGET', KEYS[1], 'v')
if not cur then return redis.error_reply('MFBAD record ' .. KEYS[1] .. ' is damaged (no version)') end
if cur ~= ver then return redis.error_reply('MFCONFLICT ' .. cur) end
local sets, moves, err = {'v', nxt, 'j', j}, {}, bad(KEYS[2], 'string')
for i = 1, #KEYS - 2 do
  local f, infix, new = ARGV[3 * i + 4], ARGV[3 * i + 5], ARGV[3 * i + 6]
  err = err or bad(KEYS[i + 2], 'zset')
  local old = redis.call('HGET', KEYS[1], f)
  if old ~= new then
    local from = false
    if old then
      from = P .. infix .. old
      err = err or bad(from, 'zset')
    end
    moves[#moves + 1] = {from, KEYS[i + 2]}
  end
  sets[#sets + 1] = f
  sets[#sets + 1] = new
end
if err then return redis.error_reply(err) end
redis.call('HSET', KEYS[1], unpack(sets))
for _, m in ipairs(moves) do
  if m[1] then redis.call('ZREM', m[1], id) end
  redis.call('ZADD', m[2], 0, id)
end
redis.call('SET', KEYS[2], gen)
return 'OK'
`)

// walk is the loop shared by the list scripts: it pages an index with
// ZRANGEBYLEX from min, examines at most budget ids, and stops once want
// of them matched. match(id) returns the record's data or nil, or nil and
// an error message. It returns {last id examined ("" if none), done (1
// when the index is exhausted), {id, data, ...}}.
const walk = `
local function walk(index, min, want, budget, match)
  local out, n, done, cur = {}, 0, 0, ''
  while n < want and budget > 0 do
    local batch = math.min(budget, math.max(want - n, 64))
    local ids = redis.call('ZRANGEBYLEX', index, min, '+', 'LIMIT', 0, batch)
    local all = true
    for i, id in ipairs(ids) do
      cur = id
      budget = budget - 1
      local data, e = match(id)
      if e then return nil, e end
      if data then
        out[#out + 1] = id
        out[#out + 1] = data
        n = n + 1
      end
      if n >= want and i < #ids then all = false; break end
    end
    if all and #ids < batch then done = 1; break end
    min = '(' .. cur
  end
  return {cur, done, out}, nil
end
`

// listScript returns, from one index of one shard, up to want requests or
// grants after min whose indexed fields pass every filter, examining at
// most budget ids (see walk). Read-only.
// KEYS: index
// ARGV: min (a ZRANGEBYLEX bound), want, budget, record key prefix,
// filter count, then for each filter: field, value count, values
var listScript = goredis.NewScript(prelude + walk + `
local min, want, budget, RP = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local fields, allowed = {'j'}, {}
local a = 6
for f = 1, tonumber(ARGV[5]) do
  fields[#fields + 1] = ARGV[a]
  local set, n = {}, tonumber(ARGV[a + 1])
  for k = 1, n do set[ARGV[a + 1 + k]] = true end
  allowed[#allowed + 1] = set
  a = a + 2 + n
end
local err = bad(KEYS[1], 'zset')
if err then return redis.error_reply(err) end
local res, e = walk(KEYS[1], min, want, budget, function(id)
  local k = RP .. id
  local t = kind(k)
  if t == 'none' then return nil end -- an index entry without a record: skip it
  if t ~= 'hash' then return nil, 'MFBAD key ' .. k .. ' holds a ' .. t .. ', want a hash' end
  local v = redis.call('HMGET', k, unpack(fields))
  if not v[1] then return nil, 'MFBAD record ' .. k .. ' is damaged (no data)' end
  for i, set in ipairs(allowed) do
    if not v[i + 1] or not set[v[i + 1]] then return nil end
  end
  return v[1]
end)
if e then return redis.error_reply(e) end
return res
`)

// addCertScript stores a certification and, if it is now the latest of
// its grant in this shard (greatest At, then greatest id), points the
// shard's latest hash at it.
// KEYS: cert, certs:latest, generation
// ARGV: shard prefix, id, grant id, At seconds, At nanoseconds, json,
// generation token
var addCertScript = goredis.NewScript(prelude + `
local P, id, grant, sec, nsec, j, gen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if kind(KEYS[1]) == 'hash' then return redis.error_reply('MFEXISTS') end
local err = bad(KEYS[1], 'hash') or bad(KEYS[2], 'hash') or bad(KEYS[3], 'string')
if err then return redis.error_reply(err) end
local latest = true
local cur = redis.call('HGET', KEYS[2], grant)
if cur then
  local ck = P .. 'cert:' .. cur
  local t = kind(ck)
  if t ~= 'none' and t ~= 'hash' then
    return redis.error_reply('MFBAD key ' .. ck .. ' holds a ' .. t .. ', want a hash')
  end
  if t == 'hash' then
    local at = redis.call('HMGET', ck, 'a', 'n')
    if at[1] and at[2] then
      local s, cs = tonumber(sec), tonumber(at[1])
      local n, cn = tonumber(nsec), tonumber(at[2])
      latest = s > cs or (s == cs and (n > cn or (n == cn and less(cur, id))))
    end
  end
end
redis.call('HSET', KEYS[1], 'g', grant, 'a', sec, 'n', nsec, 'j', j)
if latest then redis.call('HSET', KEYS[2], grant, id) end
redis.call('SET', KEYS[3], gen)
return 'OK'
`)

// latestCertsScript returns the latest certification of every grant id in
// one shard: {json, ...}. Read-only.
// KEYS: certs:latest; ARGV: shard prefix
var latestCertsScript = goredis.NewScript(prelude + `
local P = ARGV[1]
local err = bad(KEYS[1], 'hash')
if err then return redis.error_reply(err) end
local out = {}
local ids = redis.call('HVALS', KEYS[1])
for _, id in ipairs(ids) do
  local k = P .. 'cert:' .. id
  local t = kind(k)
  if t ~= 'none' and t ~= 'hash' then
    return redis.error_reply('MFBAD key ' .. k .. ' holds a ' .. t .. ', want a hash')
  end
  if t == 'hash' then
    local j = redis.call('HGET', k, 'j')
    if not j then return redis.error_reply('MFBAD record ' .. k .. ' is damaged (no data)') end
    out[#out + 1] = j
  end
end
return out
`)

// markScript stores a mark unless its key is marked, and returns {1, at}
// when it stored it, {0, the stored time} when not.
// KEYS: mark; ARGV: at
var markScript = goredis.NewScript(prelude + `
local err = bad(KEYS[1], 'string')
if err then return redis.error_reply(err) end
local v = redis.call('GET', KEYS[1])
if v then return {0, v} end
redis.call('SET', KEYS[1], ARGV[1])
return {1, ARGV[1]}
`)

// unmarkScript removes a mark.
// KEYS: mark
var unmarkScript = goredis.NewScript(prelude + `
local err = bad(KEYS[1], 'string')
if err then return redis.error_reply(err) end
return redis.call('DEL', KEYS[1])
`)

// appendScript stores a decision record, indexes it by id and by time,
// lowers the shard's skew if the record's is lower, and trims up to max
// records of the shard that are older than the cutoff.
// KEYS: record, records, records:at, records:skew
// ARGV: shard prefix, id, json, At ms, skew (id time - At ms, "u" when the
// id carries no time), cutoff ms, max
var appendScript = goredis.NewScript(prelude + `
local P, id, j, at, skew, cutoff, max = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
if kind(KEYS[1]) == 'string' then return redis.error_reply('MFEXISTS') end
local err = bad(KEYS[1], 'string') or bad(KEYS[2], 'zset') or bad(KEYS[3], 'zset') or bad(KEYS[4], 'string')
if err then return redis.error_reply(err) end
local cur = redis.call('GET', KEYS[4])
local lower = false
if skew == 'u' then
  lower = cur ~= 'u'
elseif not cur then
  lower = true
elseif cur ~= 'u' then
  local c = tonumber(cur)
  if not c then return redis.error_reply('MFBAD key ' .. KEYS[4] .. ' is damaged (' .. cur .. ')') end
  lower = tonumber(skew) < c
end
local old = {}
if max > 0 then old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. cutoff, 'LIMIT', 0, max) end
for _, o in ipairs(old) do
  err = bad(P .. 'record:' .. o, 'string')
  if err then return redis.error_reply(err) end
end
redis.call('SET', KEYS[1], j)
redis.call('ZADD', KEYS[2], 0, id)
redis.call('ZADD', KEYS[3], at, id)
if lower then redis.call('SET', KEYS[4], skew) end
for _, o in ipairs(old) do
  redis.call('DEL', P .. 'record:' .. o)
  redis.call('ZREM', KEYS[2], o)
  redis.call('ZREM', KEYS[3], o)
end
return #old
`)

// recordsScript returns, from one shard, up to want decision records
// after min whose time is at or after since ms (none when since is ""),
// examining at most budget ids (see walk). Read-only.
//
// With since, the walk starts no earlier than the least id a record at or
// after since can have in this shard: every id of the shard carries its
// time (else the skew is "u") and exceeds its record's time by at least
// the skew, so such a record's id is at least the 10-character time
// prefix of since+skew.
// KEYS: records, records:at, records:skew
// ARGV: min, want, budget, record key prefix, since ms
var recordsScript = goredis.NewScript(prelude + walk + `
local min, want, budget, RP, since = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local err = bad(KEYS[1], 'zset') or bad(KEYS[2], 'zset') or bad(KEYS[3], 'string')
if err then return redis.error_reply(err) end
local floor = nil
if since ~= '' then
  floor = tonumber(since)
  local skew = tonumber(redis.call('GET', KEYS[3]) or 'u')
  if skew then
    local t = floor + skew
    if t > 0 then
      if t > 281474976710655 then t = 281474976710655 end -- 2^48-1, the greatest id time
      local alphabet, lo = '0123456789abcdefghjkmnpqrstvwxyz', ''
      for i = 1, 10 do
        local d = t % 32
        lo = string.sub(alphabet, d + 1, d + 1) .. lo
        t = (t - d) / 32
      end
      if min == '-' or less(string.sub(min, 2), lo) then min = '[' .. lo end
    end
  end
end
local res, e = walk(KEYS[1], min, want, budget, function(id)
  if floor then
    local at = redis.call('ZSCORE', KEYS[2], id)
    if at and tonumber(at) < floor then return nil end
  end
  local k = RP .. id
  local t = kind(k)
  if t == 'none' then return nil end
  if t ~= 'string' then return nil, 'MFBAD key ' .. k .. ' holds a ' .. t .. ', want a string' end
  return redis.call('GET', k)
end)
if e then return redis.error_reply(e) end
return res
`)

package redis

import goredis "github.com/redis/go-redis/v9"

// Every state change of one lease and its indexes is one of these scripts.
// Redis runs a script atomically but does not roll back a script that fails
// half way, so each script first reads everything it will change (a read of
// a key of the wrong type fails there, before anything was written) and
// checks existence, state and fence, and only then writes. The only errors
// a write can still meet after that are the ones Redis raises at a
// script's first write (OOM under noeviction, READONLY on a replica),
// which change nothing: so the first write of a script that may grow
// memory is one that Redis refuses over maxmemory (HSET, HSETNX, ZADD).
//
// Scripts name the shard's fixed keys in KEYS; keys derived from a lease
// (its record hash) or from an index (its buckets) are built from the shard
// prefix in ARGV and share its hash tag, so they are in the same cluster
// slot.
//
// Errors the store maps to the lease sentinels are error replies whose
// first word is an MF code: MFNOTFOUND, MFEXISTS, MFSTATE <state>,
// MFREVOKED <reason>, MFHARDEND, MFFENCED <fence>. Anything else (MFBAD for
// a damaged lease or a key in the way, WRONGTYPE for a key of the wrong
// type) is a plain store error.
//
// Times are whole milliseconds since the epoch passed by the caller as
// decimal strings; scripts compute with them as Lua numbers (doubles,
// exact below 2^53: the store keeps every time within 2^52 ms of the
// epoch). Lua compares strings by the server's locale, so the scripts
// never order strings with < (they let Redis order them, or use lt).

// The scripts are built from these libraries, each script taking only the
// ones it needs (a script defines its functions afresh on every call).

// libRec: the record codec (see codec.go).
const libRec = `
local T, S, EN, G, IS, I, E, H, X, FL, D, Q, Y, F, B4, R, QA, A, L, V =
  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
local NSLOT, MINSLOT = 20, 9
-- The value of each slot when left out.
local DEF = {'', '', 0, '', 0, 0, 0, 0, '', 0, false, '', 0, 0, '', '', false, 0, '', false}

local function bad(msg) return redis.error_reply('MFBAD ' .. msg) end
-- n2s renders a whole number exactly (a number given to redis.call would
-- be rendered with 14 digits).
local function n2s(x) return string.format('%d', x) end

-- unrec unpacks a record; nil and a message if it is damaged (one that is
-- not MessagePack at all fails the script, before any write).
local function unrec(s)
  local r = {cmsgpack.unpack(s)}
  local n = #r
  if n < MINSLOT or n > NSLOT then return nil, 'has ' .. n .. ' slots' end
  for i = n + 1, NSLOT do r[i] = DEF[i] end
  if type(r[T]) ~= 'string' or type(r[I]) ~= 'number' or type(r[E]) ~= 'number' or type(r[H]) ~= 'number' then
    return nil, 'has no state, issue time or expiry'
  end
  return r
end

local function packrec(r)
  local n = NSLOT
  while n > MINSLOT and r[n] == DEF[n] do n = n - 1 end
  return cmsgpack.pack(unpack(r, 1, n))
end
`

// libLease: reading and writing records, their times and names.
const libLease = `
local function reckey(P, id) return P .. 'r:' .. string.sub(id, -1) end

-- getrec returns lease id's record (a table) and its packed form, nil if
-- there is none, or an error reply.
local function getrec(P, id)
  local s = redis.call('HGET', reckey(P, id), id)
  if not s then return nil end
  local r, why = unrec(s)
  if not r then return nil, nil, bad('lease ' .. id .. ' ' .. why) end
  return r, s
end

local function putrec(P, id, r)
  local s = packrec(r)
  redis.call('HSET', reckey(P, id), id, s)
  return s
end

-- at is the time in slot i (ms since the epoch), nil if absent.
local function at(r, i)
  if r[i] == false then return nil end
  return r[I] + r[i]
end
local function due(r) return r[I] + (r[D] or r[E]) end

-- names looks up the entitlement, issuer and revocable reason of a record
-- in the shard's meta hash (memo caches them): a read, done before any
-- write.
local function names(P, r, memo)
  local want, out = {}, {'', '', ''}
  for j, slot in ipairs({EN, IS, Y}) do
    local c = r[slot]
    if type(c) == 'string' then out[j] = c
    elseif c ~= 0 then
      if memo[c] then out[j] = memo[c] else want[#want + 1] = {j, c} end
    end
  end
  if #want > 0 then
    local f = {}
    for k, w in ipairs(want) do f[k] = '#' .. w[2] end
    local got = redis.call('HMGET', P .. 'm', unpack(f))
    for k, w in ipairs(want) do
      local name = string.sub(got[k] or '-', 2) -- kind, then name
      memo[w[2]] = name
      out[w[1]] = name
    end
  end
  return out
end
-- reply is a lease as scripts return it: {record, entitlement, issuer,
-- revocable reason}.
local function reply(s, nm) return {s, nm[1], nm[2], nm[3]} end
`

// libSets: bucketed sets, and the ops that change them.
//
// A bucketed set N holds entries (score, member) in the order of their
// sort key: the member itself for an index by id (score 0), or enc(score)
// .. member for a set ordered by time. The directory N is a zset of bucket
// bounds and SENT (every score 0, so Redis orders them by bytes); bucket
// N|b holds the entries whose key is at least b and below the next bound,
// at most MAXB-1 of them, so that it stays a small listpack (whose inserts
// take time linear in its size). No key is below the first bound (a
// smaller one renames the first bucket), so a key's bucket is the one with
// the greatest bound at or below it. A bucket that fills splits in two
// (or, when the new entry is its last, starts a new bucket with it); one
// that drops below MINB merges with a neighbour if both fit in FITB; one
// that empties is dropped.
const libConst = `
local OFF = 4503599627370496 -- 2^52: enc keeps a score's string order
local MAXB, MINB, FITB = 64, 16, 48
-- SENT is in every directory: longer than zset-max-listpack-value (64), it
-- keeps the directory a skiplist, whose lex ranges take log time (a
-- listpack's take linear time, an allocation per element). It sorts after
-- every bound.
local SENT = string.rep('\255', 65)
local function enc(score) return string.format('%016d', score + OFF) end

-- fastadd adds member (score sc, a string) to bucket B (bound b, n
-- entries) of set N and, if that fills it, splits it as SETS would: the
-- common case of an addition, without defining SETS. ks is the member's
-- sort key if the set is ordered by score (nil for an index by id).
local function fastadd(N, b, B, n, sc, member, scored)
  n = n + redis.call('ZADD', B, sc, member)
  if n < MAXB then return end
  local from = math.floor(n / 2)
  if redis.call('ZRANK', B, member) == n - 1 then from = n - 1 end
  local moved = redis.call('ZRANGE', B, string.format('%d', from), '-1', 'WITHSCORES')
  local nb = moved[1]
  if scored then nb = enc(tonumber(moved[2])) .. moved[1] end
  if redis.call('EXISTS', N .. '|' .. nb) == 1 then return end
  local args = {}
  for i = 1, #moved, 2 do args[#args + 1] = moved[i + 1]; args[#args + 1] = moved[i] end
  redis.call('ZADD', N .. '|' .. nb, unpack(args))
  redis.call('ZREMRANGEBYRANK', B, string.format('%d', from), '-1')
  redis.call('ZADD', N, '0', nb)
end
`

// libSets defines SETS, which returns the functions on bucketed sets.
// Defining a function costs time on every call of a script, so the
// scripts on the issuance path call SETS only when they need more than
// the common case (see createSrc). libSetsNow calls it at once.
const libSets = `
local function SETS()
-- tag names a subject or grant in an index: 10 hex digits of its SHA-1
-- (Go computes the same). Two names may share a tag; readers check the
-- record.
local function tag(s) return string.sub(redis.sha1hex(s), 1, 10) end

local function skey(o, score)
  if o.sc then return enc(score) .. o.m end
  return o.m
end
local function bk(N, b) return N .. '|' .. b end

-- Within one script, routes and bucket sizes are remembered: RT[N][k]
-- caches a route until the directory of N changes (DV counts the
-- changes), CNT holds the size of each bucket this script read or wrote.
local RT, DV, CNT = {}, {}, {}
local function dirty(N) DV[N] = (DV[N] or 0) + 1 end
local function count(B)
  local n = CNT[B]
  if not n then n = redis.call('ZCARD', B); CNT[B] = n end
  return n
end

-- route returns the bound of the bucket for key k and how k stands: 'in'
-- (at or past that bound), 'first' (below every bound: the first bucket),
-- or nil, 'empty' when the set has no bucket.
local function route(N, k)
  local v, rt = DV[N] or 0, RT[N]
  if not rt then rt = {}; RT[N] = rt end
  local c = rt[k]
  if c and c[3] == v then return c[1], c[2] end
  local b, how
  local r = redis.call('ZREVRANGEBYLEX', N, '[' .. k, '-', 'LIMIT', '0', '1')
  if r[1] then b, how = r[1], 'in'
  else
    r = redis.call('ZRANGE', N, '0', '0')
    if r[1] and r[1] ~= SENT then b, how = r[1], 'first' else how = 'empty' end
  end
  rt[k] = {b, how, v}
  return b, how
end

-- Ops: {N = bucketed set, sc = ordered by score, m = member, old = score
-- of the entry to remove, new = score of the entry to add}, or on a plain
-- zset {Z = key, m, old, new}. bcheck reads every key the ops will write
-- (so that a key of the wrong type fails before the first write) and
-- returns an error reply if a new bucket's name is taken.
local function bcheck(ops)
  for _, o in ipairs(ops) do
    if o.Z then
      count(o.Z)
    else
      if o.old then
        local b = route(o.N, skey(o, o.old))
        if b then count(bk(o.N, b)) else o.old = nil end
      end
      if o.new then
        local k = skey(o, o.new)
        local b, how = route(o.N, k)
        if b then count(bk(o.N, b)) end
        if how ~= 'in' and redis.call('EXISTS', bk(o.N, k)) == 1 then
          return bad('key ' .. bk(o.N, k) .. ' is in the way')
        end
      end
    end
  end
  return nil
end

local function moveall(from, to)
  local e = redis.call('ZRANGE', from, '0', '-1', 'WITHSCORES')
  local args = {}
  for i = 1, #e, 2 do args[#args + 1] = e[i + 1]; args[#args + 1] = e[i] end
  if #args > 0 then CNT[to] = count(to) + redis.call('ZADD', to, unpack(args)) end
  redis.call('DEL', from)
  CNT[from] = 0
end

local function split(o, b, n)
  local B = bk(o.N, b)
  local from = math.floor(n / 2)
  if redis.call('ZRANK', B, o.m) == n - 1 then from = n - 1 end
  local moved = redis.call('ZRANGE', B, n2s(from), '-1', 'WITHSCORES')
  local nb = moved[1]
  if o.sc then nb = enc(tonumber(moved[2])) .. moved[1] end
  -- Cannot be taken (nb lies inside this bucket); if it is, the bucket
  -- grows instead (correct, larger).
  if redis.call('EXISTS', bk(o.N, nb)) == 1 then return end
  local args = {}
  for i = 1, #moved, 2 do args[#args + 1] = moved[i + 1]; args[#args + 1] = moved[i] end
  redis.call('ZADD', bk(o.N, nb), unpack(args))
  redis.call('ZREMRANGEBYRANK', B, n2s(from), '-1')
  redis.call('ZADD', o.N, '0', nb)
  CNT[B], CNT[bk(o.N, nb)] = from, n - from
  dirty(o.N)
end

-- badd adds (score, member); if the member is in the bucket already, its
-- score changes.
local function badd(o, score)
  local k = skey(o, score)
  local sc = '0'
  if o.sc then sc = n2s(score) end
  local b, how = route(o.N, k)
  if how == 'empty' then
    redis.call('ZADD', bk(o.N, k), sc, o.m)
    redis.call('ZADD', o.N, '0', SENT, '0', k)
    CNT[bk(o.N, k)] = 1
    dirty(o.N)
    return
  end
  local B = bk(o.N, b)
  local n = count(B) + redis.call('ZADD', B, sc, o.m)
  CNT[B] = n
  if how == 'first' then -- k is the new least key: rename the first bucket
    redis.call('RENAME', B, bk(o.N, k))
    redis.call('ZREM', o.N, b)
    redis.call('ZADD', o.N, '0', k)
    CNT[B], CNT[bk(o.N, k)] = nil, n
    dirty(o.N)
    b = k
  end
  if n >= MAXB then split(o, b, n) end
end

-- merge merges bucket b of N with a neighbour when it holds fewer than
-- MINB and both fit in FITB. A neighbour that cannot be read is left.
local function merge(N, b)
  local B = bk(N, b)
  local n = count(B)
  if n == 0 or n >= MINB then return end
  local nx = redis.call('ZRANGEBYLEX', N, '(' .. b, '+', 'LIMIT', '0', '1')[1]
  if nx and nx ~= SENT then
    local m = redis.pcall('ZCARD', bk(N, nx))
    if type(m) == 'number' and n + m <= FITB then
      moveall(bk(N, nx), B)
      redis.call('ZREM', N, nx)
      dirty(N)
      return
    end
  end
  local pv = redis.call('ZREVRANGEBYLEX', N, '(' .. b, '-', 'LIMIT', '0', '1')[1]
  if pv then
    local m = redis.pcall('ZCARD', bk(N, pv))
    if type(m) == 'number' and n + m <= FITB then
      CNT[bk(N, pv)] = m
      moveall(B, bk(N, pv))
      redis.call('ZREM', N, b)
      dirty(N)
    end
  end
end

-- bdrop removes member from bucket b of N (where it is), drops the bucket
-- if it emptied and notes it in low if it ran low.
local function bdrop(N, b, member, low)
  local B = bk(N, b)
  local n = count(B) - redis.call('ZREM', B, member)
  CNT[B] = n
  if n == 0 then
    redis.call('ZREM', N, b)
    dirty(N)
  elseif n < MINB and not low[B] then low[B] = true; low[#low + 1] = {N, b} end
end

local function bmerge(low)
  for _, x in ipairs(low) do merge(x[1], x[2]) end
end

-- bapply makes the changes bcheck approved: first every addition (an entry
-- that only moves within its bucket changes its score there), then every
-- removal, then merges.
local function bapply(ops)
  local rem, low = {}, {}
  for _, o in ipairs(ops) do
    if o.Z then
      if o.new then redis.call('ZADD', o.Z, n2s(o.new), o.m) else rem[#rem + 1] = o end
    elseif o.new then
      if o.old then
        local ko, kn = skey(o, o.old), skey(o, o.new)
        if ko ~= kn then
          local bo = route(o.N, ko)
          local bn = route(o.N, kn)
          badd(o, o.new)
          if bo ~= bn then rem[#rem + 1] = o end
        end
      else
        badd(o, o.new)
      end
    elseif o.old then
      rem[#rem + 1] = o
    end
  end
  for _, o in ipairs(rem) do
    if o.Z then
      redis.call('ZREM', o.Z, o.m)
    else
      local b = route(o.N, skey(o, o.old))
      if b then bdrop(o.N, b, o.m, low) end
    end
  end
  bmerge(low)
end

-- dueop is the op on the due entry of lease id in state st: pending
-- leases (few, and soon active) wait in the plain zset p, active ones in
-- the bucketed set d.
local function dueop(P, id, st, old, new)
  if st == 'p' then return {Z = P .. 'p', m = id, old = old, new = new} end
  return {N = P .. 'd', sc = true, m = id, old = old, new = new}
end

-- The index entries of a lease: {set, member} of subject, entitlement
-- (by code) and (if any) grant. stag and gtag are the tags of subject and
-- grant if the caller has them.
local function idxops(P, id, r, stag, gtag)
  local ops = {
    {N = P .. 's', m = (stag or tag(r[S])) .. id},
    {N = P .. 'e', m = r[EN] .. ':' .. id},
  }
  if r[G] ~= '' then ops[#ops + 1] = {N = P .. 'k', m = (gtag or tag(r[G])) .. id} end
  return ops
end

return {tag = tag, skey = skey, bk = bk, count = count, route = route, bcheck = bcheck,
  badd = badd, bdrop = bdrop, bmerge = bmerge, bapply = bapply, dueop = dueop, idxops = idxops}
end
`

// libSetsNow makes the functions of SETS plain locals.
const libSetsNow = `
local SL = SETS()
local tag, skey, bk, count, route, bcheck, badd, bdrop, bmerge, bapply, dueop, idxops =
  SL.tag, SL.skey, SL.bk, SL.count, SL.route, SL.bcheck, SL.badd, SL.bdrop, SL.bmerge, SL.bapply, SL.dueop, SL.idxops
`

// libScan: reading bucketed sets in order.
const libScan = `
-- lt reports whether a sorts before b byte by byte (Lua's own < follows
-- the server's locale).
local function lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- bfirst returns up to want entries {member, score, bound} of a set ordered
-- by score, earliest first, whose score is at most max.
local function bfirst(N, max, want)
  local out = {}
  local from = 0
  while #out < want do
    local bs = redis.call('ZRANGE', N, n2s(from), n2s(from + 7))
    if #bs == 0 then break end
    for _, b in ipairs(bs) do
      if b == SENT then return out end
      local e = redis.call('ZRANGEBYSCORE', bk(N, b), '-inf', max, 'WITHSCORES', 'LIMIT', '0', n2s(want - #out))
      for i = 1, #e, 2 do out[#out + 1] = {e[i], tonumber(e[i + 1]), b} end
      if #out >= want then return out end
      -- Fewer than all of this bucket are due: nothing after it is.
      if #e / 2 < count(bk(N, b)) then return out end
    end
    from = from + #bs
  end
  return out
end

-- bscan returns up to want members of an index by id, in order, that
-- start with prefix p and come after p .. cursor (from the first if
-- cursor is ''), and whether there are no more.
local function bscan(N, p, cursor, want)
  local out = {}
  local min, b
  if cursor == '' then
    min = '[' .. p
    if p == '' then min = '-' end
    b = route(N, p)
  else
    min = '(' .. p .. cursor
    b = route(N, p .. cursor)
  end
  local max, hi = '+', nil
  if p ~= '' then hi = p .. '\255'; max = '(' .. hi end
  while b do
    local got = redis.call('ZRANGEBYLEX', bk(N, b), min, max, 'LIMIT', '0', n2s(want - #out))
    for _, m in ipairs(got) do out[#out + 1] = m end
    if #out >= want then return out, false end
    b = redis.call('ZRANGEBYLEX', N, '(' .. b, '+', 'LIMIT', '0', '1')[1]
    if b == SENT or (b and hi and not lt(b, hi)) then b = nil end
  end
  return out, true
end
`

// libMark: the shard marker (fields e and v of the meta hash M). markread
// reads it (and checks the hash's type) before any write; markset creates
// it if it is missing. They return {epoch, 0, 1 if the marker was missing
// while the shard held leases}.
const libMark = `
local function markread(M, P)
  local e = redis.call('HGET', M, 'e')
  local held = 0
  if not e and redis.call('EXISTS', P .. 'e') == 1 then held = 1 end
  return {e, 0, held}
end
local function markset(M, mk, cand)
  if not mk[1] then
    redis.call('HSET', M, 'e', cand, 'v', '2')
    mk[1] = cand
  end
  return mk
end
`

// createScript writes a new pending lease and its index entries, interns
// its names, and creates the shard marker if it is missing. It returns the
// marker {epoch, 0, held}.
// KEYS: record hash, pending, by subject, by entitlement, by grant, meta
// ARGV: id, packed record (names in their slots), due ms, shard prefix,
// candidate epoch, tag of subject, tag of grant
const createSrc = `
local id, dueMs, P, cand = ARGV[1], ARGV[3], ARGV[4], ARGV[5]
local PEND, M = KEYS[2], KEYS[6]
local r, why = unrec(ARGV[2])
if not r then return bad('new lease ' .. id .. ' ' .. why) end
-- One read of the meta hash: the marker's epoch, the last code, the codes
-- of the names (those it lacks, this Create adds).
local f, named = {'e', '#'}, {}
for _, x in ipairs({{EN, 'e'}, {IS, 'n'}, {Y, 'y'}}) do
  local name = r[x[1]]
  if type(name) == 'string' and name ~= '' then
    f[#f + 1] = x[2] .. name
    named[#named + 1] = {x[1], #f}
  elseif name == '' then
    r[x[1]] = 0
  end
end
local v = redis.call('HMGET', M, unpack(f))
local last = tonumber(v[2] or '0')
local adds = {}
for _, x in ipairs(named) do
  local c = v[x[2]]
  if c then
    r[x[1]] = tonumber(c)
  else
    last = last + 1
    adds[#adds + 1] = f[x[2]]; adds[#adds + 1] = last
    adds[#adds + 1] = '#' .. last; adds[#adds + 1] = f[x[2]]
    r[x[1]] = last
  end
end
local mk = {v[1], 0, 0}
if not v[1] and redis.call('EXISTS', P .. 'e') == 1 then mk[3] = 1 end
-- The index entries {set, member}, each routed to its bucket (reads: a key
-- of the wrong type fails here). The common case, a key at or past a
-- bound, is done here; one below every bound by the functions of SETS.
local ix = {{KEYS[3], ARGV[6] .. id}, {KEYS[4], r[EN] .. ':' .. id}}
if r[G] ~= '' then ix[3] = {KEYS[5], ARGV[7] .. id} end
local lib, ops
for _, x in ipairs(ix) do
  local b = redis.call('ZREVRANGEBYLEX', x[1], '[' .. x[2], '-', 'LIMIT', '0', '1')[1]
  if b then
    x[3], x[4] = b, x[1] .. '|' .. b
    x[5] = redis.call('ZCARD', x[4])
  else
    -- Below every bound, or no bucket yet.
    lib, ops = lib or SETS(), ops or {}
    ops[#ops + 1] = {N = x[1], m = x[2], new = 0}
  end
end
redis.call('ZCARD', PEND)
if ops then
  local err = lib.bcheck(ops)
  if err then return err end
end

-- The first write: the record, if the id is free.
if redis.call('HSETNX', KEYS[1], id, packrec(r)) == 0 then return redis.error_reply('MFEXISTS') end
if #adds > 0 then
  adds[#adds + 1] = '#'; adds[#adds + 1] = last
  redis.call('HSET', M, unpack(adds))
end
if not mk[1] then
  redis.call('HSET', M, 'e', cand, 'v', '2')
  mk[1] = cand
end
redis.call('ZADD', PEND, dueMs, id)
for _, x in ipairs(ix) do
  if x[4] then fastadd(x[1], x[3], x[4], x[5], '0', x[2], false) end
end
if ops then lib.bapply(ops) end
return mk
`

var createScript = goredis.NewScript(libRec + libConst + libSets + createSrc)

// undoScript deletes a lease this store created moments ago and never
// handed out (its Create lost the race for the request id): only if it is
// still pending and was never claimed.
// KEYS: record hash, pending; ARGV: id, shard prefix
const undoSrc = `
local id, P = ARGV[1], ARGV[2]
local r, s, err = getrec(P, id)
if err then return err end
if not r then return 0 end
if r[T] ~= 'p' or r[F] ~= 0 then return 0 end
local ops = idxops(P, id, r)
for _, o in ipairs(ops) do o.old = 0 end
ops[#ops + 1] = {Z = KEYS[2], m = id, old = due(r)}
err = bcheck(ops)
if err then return err end
redis.call('HDEL', KEYS[1], id)
bapply(ops)
return 1
`

var undoScript = goredis.NewScript(libRec + libLease + libConst + libSets + libSetsNow + undoSrc)

// bindScript records the backend handle of a pending lease.
// KEYS: record hash; ARGV: id, ref, shard prefix
const bindSrc = `
local id, ref, P = ARGV[1], ARGV[2], ARGV[3]
local r, s, err = getrec(P, id)
if err then return err end
if not r then return redis.error_reply('MFNOTFOUND') end
if r[T] ~= 'p' then return redis.error_reply('MFSTATE ' .. r[T]) end
r[X] = ref
putrec(P, id, r)
return 'OK'
`

var bindScript = goredis.NewScript(libRec + libLease + bindSrc)

// activateScript moves a pending lease to active, due at its expiry.
// KEYS: record hash, pending, due; ARGV: id, ref, shard prefix
const activateSrc = `
local id, ref, P = ARGV[1], ARGV[2], ARGV[3]
local PEND, DUE = KEYS[2], KEYS[3]
local r, s, err = getrec(P, id)
if err then return err end
if not r then return redis.error_reply('MFNOTFOUND') end
if r[T] ~= 'p' then return redis.error_reply('MFSTATE ' .. r[T]) end
if r[R] ~= '' then return redis.error_reply('MFREVOKED ' .. r[R]) end
-- Due at expiry in d (the common case, a key at or past a bound, here;
-- one below every bound by SETS), no longer in p.
local new = r[I] + r[E]
local B, n
local b = redis.call('ZREVRANGEBYLEX', DUE, '[' .. enc(new) .. id, '-', 'LIMIT', '0', '1')[1]
if b then
  B = DUE .. '|' .. b
  n = redis.call('ZCARD', B)
end
redis.call('ZCARD', PEND)
local lib, ops
if not B then
  lib, ops = SETS(), {{N = DUE, sc = true, m = id, new = new}}
  err = lib.bcheck(ops)
  if err then return err end
end
local nm = names(P, r, {})
r[T] = 'a'
if ref ~= '' then r[X] = ref end
r[D] = false
s = putrec(P, id, r)
redis.call('ZREM', PEND, id)
if B then fastadd(DUE, b, B, n, n2s(new), id, true) else lib.bapply(ops) end
return reply(s, nm)
`

var activateScript = goredis.NewScript(libRec + libLease + libConst + libSets + activateSrc)

// renewScript moves the expiry (and due time) of an active lease.
// KEYS: record hash, due; ARGV: id, expires ms, shard prefix
const renewSrc = `
local id, to, P = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local r, s, err = getrec(P, id)
if err then return err end
if not r then return redis.error_reply('MFNOTFOUND') end
if r[T] ~= 'a' then return redis.error_reply('MFSTATE ' .. r[T]) end
if r[R] ~= '' then return redis.error_reply('MFREVOKED ' .. r[R]) end
if to > r[I] + r[H] then return redis.error_reply('MFHARDEND') end
local ops = {dueop(P, id, 'a', due(r), to)}
err = bcheck(ops)
if err then return err end
local nm = names(P, r, {})
r[E] = to - r[I]
r[D] = false
s = putrec(P, id, r)
bapply(ops)
return reply(s, nm)
`

var renewScript = goredis.NewScript(libRec + libLease + libConst + libSets + libSetsNow + renewSrc)

// revokable reports whether a revocation request at 'when' changes lease
// r: only pending and active leases change; the first request is
// recorded, a later one only if it asks for an earlier time. revoke
// records it (DueAt only ever moves earlier) and returns the due-set op.
const revokeLib = `
local function revokable(r, when)
  if r[T] ~= 'p' and r[T] ~= 'a' then return false end
  if r[R] ~= '' and (r[QA] == false or when >= at(r, QA)) then return false end
  return true
end
local function revoke(P, r, reason, when, id)
  local old = due(r)
  r[R] = reason
  r[QA] = when - r[I]
  if when < old then
    r[D] = when - r[I]
    return dueop(P, id, r[T], old, when)
  end
  return nil
end
`

// revokeScript asks for revocation of one lease and returns {changed,
// lease}.
// KEYS: record hash, pending, due; ARGV: id, reason, at ms, shard prefix
const revokeSrc = `
local id, reason, when, P = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local r, s, err = getrec(P, id)
if err then return err end
if not r then return redis.error_reply('MFNOTFOUND') end
local nm = names(P, r, {})
if not revokable(r, when) then return {0, reply(s, nm)} end
local ops = {}
local o = revoke(P, r, reason, when, id)
if o then ops[1] = o end
err = bcheck(ops)
if err then return err end
s = putrec(P, id, r)
bapply(ops)
return {1, reply(s, nm)}
`

var revokeScript = goredis.NewScript(libRec + libLease + libConst + libSets + libSetsNow + revokeLib + revokeSrc)

// revokeMatchingScript asks for revocation of the next batch of leases in
// one index of one shard whose subject, entitlement or grant is name,
// after cursor (an id), and returns {changed, last id examined, ids
// examined}. The caller repeats until a batch comes back short.
// KEYS: index, pending, due, meta
// ARGV: shard prefix, reason, at ms, cursor, batch, kind (s, e or k), name
const revokeMatchingSrc = `
local P, reason, when, cursor, batch = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local kind, name = ARGV[6], ARGV[7]
local p, code
if kind == 'e' then
  code = redis.call('HGET', KEYS[4], 'e' .. name)
  if not code then return {0, '', 0} end
  code = tonumber(code)
  p = code .. ':'
else
  p = tag(name)
end
local members = bscan(KEYS[1], p, cursor, batch)
local todo, ops = {}, {}
local last = ''
for _, m in ipairs(members) do
  local id = string.sub(m, #p + 1)
  last = id
  local r, s, e = getrec(P, id)
  if e then return e end
  if r and ((kind == 's' and r[S] == name) or (kind == 'k' and r[G] == name) or (kind == 'e' and r[EN] == code))
     and revokable(r, when) then
    local o = revoke(P, r, reason, when, id)
    if o then ops[#ops + 1] = o end
    todo[#todo + 1] = {id, r}
  end
end
local err = bcheck(ops)
if err then return err end
for _, x in ipairs(todo) do putrec(P, x[1], x[2]) end
bapply(ops)
return {#todo, last, #members}
`

var revokeMatchingScript = goredis.NewScript(libRec + libLease + libConst + libSets + libSetsNow + libScan + revokeLib + revokeMatchingSrc)

// claimScript claims up to max leases of one shard whose due time or
// claim deadline is at or before now, earliest first, and with the room
// left sweeps terminal leases whose retention has passed. It also reads
// (and if missing creates) the shard marker. It returns {marker, {id,
// lease, id, lease, ...}}.
// KEYS: due, pending, claimed, gone, meta
// ARGV: shard prefix, now ms, deadline ms, max, ReasonExpired,
// ReasonPendingTimeout, candidate epoch
const claimSrc = `
local P, now, dl, max = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local expired, timeout, cand = ARGV[5], ARGV[6], ARGV[7]
local DUE, PEND, CL, GONE, M = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local mk = markread(M, P)
-- Due (active), pending and lapsed claims, each earliest first: {id,
-- score, source, bucket}.
local lists = {{}, {}, {}}
for _, e in ipairs(bfirst(DUE, ARGV[2], max)) do lists[1][#lists[1] + 1] = {e[1], e[2], 'a', e[3]} end
for j, z in ipairs({PEND, CL}) do
  local src = ({'p', 'c'})[j]
  local e = redis.call('ZRANGEBYSCORE', z, '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', '0', ARGV[4])
  for i = 1, #e, 2 do lists[j + 1][#lists[j + 1] + 1] = {e[i], tonumber(e[i + 1]), src} end
end
-- Merge them by score (then id), at most max in all.
local picks, seen, heads = {}, {}, {1, 1, 1}
while #picks < max do
  local best, bl
  for l = 1, 3 do
    local e = lists[l][heads[l]]
    if e and (not best or e[2] < best[2] or (e[2] == best[2] and lt(e[1], best[1]))) then best, bl = e, l end
  end
  if not best then break end
  heads[bl] = heads[bl] + 1
  if not seen[best[1]] then
    seen[best[1]] = true
    picks[#picks + 1] = best
  end
end

-- Read and check everything before the first write.
local work, strays, memo = {}, {}, {}
for _, p in ipairs(picks) do
  local id, src = p[1], p[3]
  local r, s, e = getrec(P, id)
  if e then return e end
  if not r or r[T] ~= src or (src ~= 'c' and due(r) > now) then
    -- An entry without a due lease behind it: drop it.
    strays[#strays + 1] = p
  else
    work[#work + 1] = {id, r, p, names(P, r, memo)}
  end
end
local sweep, ops = {}, {}
local room = max - #picks
if room > 0 then
  for _, g in ipairs(bfirst(GONE, ARGV[2], room)) do
    local id = g[1]
    local r, s, e = getrec(P, id)
    if e then return e end
    if r and (r[T] == 'r' or r[T] == 'i') then
      for _, o in ipairs(idxops(P, id, r)) do o.old = 0; ops[#ops + 1] = o end
    else
      r = nil -- gone already, or live again: only the gone entry goes
    end
    sweep[#sweep + 1] = {id, g[3], r}
  end
end
local err = bcheck(ops)
if err then return err end

-- Write: first what Redis refuses over maxmemory (the claims, the
-- marker), so that a refusal changes nothing.
if #work > 0 then
  local args = {}
  for _, w in ipairs(work) do args[#args + 1] = dl; args[#args + 1] = w[1] end
  redis.call('ZADD', CL, unpack(args))
end
markset(M, mk, cand)
local out, low = {}, {}
local function unqueue(p)
  if p[3] == 'a' then bdrop(DUE, p[4], p[1], low)
  elseif p[3] == 'p' then redis.call('ZREM', PEND, p[1])
  else redis.call('ZREM', CL, p[1]) end
end
for _, w in ipairs(work) do
  local id, r, p = w[1], w[2], w[3]
  if p[3] ~= 'c' then
    if r[R] == '' then
      if r[T] == 'p' then
        r[R] = timeout
        r[QA] = due(r) - r[I]
      else
        r[R] = expired
      end
    end
    r[B4] = r[T]
    r[T] = 'c'
    unqueue(p)
  end
  r[F] = r[F] + 1
  out[#out + 1] = id
  out[#out + 1] = reply(putrec(P, id, r), w[4])
end
for _, p in ipairs(strays) do unqueue(p) end
for _, x in ipairs(sweep) do
  if x[3] then redis.call('HDEL', reckey(P, x[1]), x[1]) end
  bdrop(GONE, x[2], x[1], low)
end
bapply(ops)
bmerge(low)
return {mk, out}
`

var claimScript = goredis.NewScript(libRec + libLease + libConst + libSets + libSetsNow + libScan + libMark + claimSrc)

// finishScript records a claim's outcome.
// KEYS: record hash, claimed, gone, pending, due
// ARGV: id, fence, outcome (r revoked, i irrevocable, q retry), at ms,
// retry ms, error text, sweep-at ms, shard prefix
const finishSrc = `
local id, fence, out, when, retry, msg, sweepAt, P =
  ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), ARGV[8]
local r, s, err = getrec(P, id)
if err then return err end
if not r then return redis.error_reply('MFNOTFOUND') end
if r[F] ~= fence then return redis.error_reply('MFFENCED ' .. r[F]) end
if r[T] ~= 'c' then return redis.error_reply('MFSTATE ' .. r[T]) end
if out == 'q' and r[B4] ~= 'p' and r[B4] ~= 'a' then
  return bad('lease ' .. id .. ' is damaged (no state before its claim)')
end
local ops = {{Z = KEYS[2], m = id, old = 0}}
if out == 'q' then
  ops[2] = dueop(P, id, r[B4], nil, retry)
else
  ops[2] = {N = KEYS[3], sc = true, m = id, new = sweepAt}
end
err = bcheck(ops)
if err then return err end
if out ~= 'r' then
  r[A] = r[A] + 1
  r[L] = msg
end
if out == 'q' then
  r[T] = r[B4]
  if retry == r[I] + r[E] then r[D] = false else r[D] = retry - r[I] end
else
  r[T] = out
  r[V] = when - r[I]
end
r[B4] = ''
putrec(P, id, r)
bapply(ops)
return 'OK'
`

var finishScript = goredis.NewScript(libRec + libLease + libConst + libSets + libSetsNow + finishSrc)

// getScript returns a lease, or nil. Read-only.
// KEYS: record hash; ARGV: id, shard prefix
const getSrc = `
local r, s, err = getrec(ARGV[2], ARGV[1])
if err then return err end
if not r then return false end
return reply(s, names(ARGV[2], r, {}))
`

var getScript = goredis.NewScript(libRec + libLease + getSrc)

// nextDueScript returns the earliest due time or claim deadline of one
// shard as a decimal string, or false. Read-only.
// KEYS: due, pending, claimed
const nextDueSrc = `
local best
local b = redis.call('ZRANGE', KEYS[1], '0', '0')[1]
if b and b ~= string.rep('\255', 65) then
  local e = redis.call('ZRANGE', KEYS[1] .. '|' .. b, '0', '0', 'WITHSCORES')
  if e[2] then best = tonumber(e[2]) end
end
for i = 2, 3 do
  local c = redis.call('ZRANGE', KEYS[i], '0', '0', 'WITHSCORES')
  if c[2] and (not best or tonumber(c[2]) < best) then best = tonumber(c[2]) end
end
if not best then return false end
return string.format('%d', best)
`

var nextDueScript = goredis.NewScript(nextDueSrc)

// markerScript reads the shard marker and creates it if it is missing;
// it returns {epoch, 0, held}.
// KEYS: meta; ARGV: shard prefix, candidate epoch
const markerSrc = `
local mk = markread(KEYS[1], ARGV[1])
return markset(KEYS[1], mk, ARGV[2])
`

var markerScript = goredis.NewScript(libMark + markerSrc)

// listScript returns, from one shard, up to want leases after cursor (an
// id) that match the filters, examining at most budget index entries. It
// walks the index the filters allow that looks smallest; without filters,
// the entitlement index, merging the ranges of every entitlement the shard
// has seen. It returns {last id examined, done (1 when the index is
// exhausted), {id, lease, ...}}. Read-only.
// KEYS: by subject, by entitlement, by grant, meta
// ARGV: shard prefix, cursor, want, budget, subject, entitlement, grant,
// states (state codes, "" for any)
const listSrc = `
local P, cur, want, budget = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local sub, ent, grant, states = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local SUBS, ENTS, GRANTS, M = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local code
if ent ~= '' then
  code = redis.call('HGET', M, 'e' .. ent)
  if not code then return {cur, 1, {}} end
  code = tonumber(code)
end
-- next(n) returns the ids of up to n index entries after cur, in order,
-- and whether there are no more.
local next
local cands = {}
if grant ~= '' then cands[#cands + 1] = {GRANTS, tag(grant)} end
if sub ~= '' then cands[#cands + 1] = {SUBS, tag(sub)} end
if code then cands[#cands + 1] = {ENTS, code .. ':'} end
if #cands > 0 then
  -- The index whose range spans the fewest buckets (first on a tie).
  local N, p = cands[1][1], cands[1][2]
  if #cands > 1 then
    local best
    for _, x in ipairs(cands) do
      local n = redis.call('ZLEXCOUNT', x[1], '[' .. x[2], '(' .. x[2] .. '\255')
      if not best or n < best then best, N, p = n, x[1], x[2] end
    end
  end
  next = function(n)
    local ms, exhausted = bscan(N, p, cur, n)
    for i, m in ipairs(ms) do ms[i] = string.sub(m, #p + 1) end
    return ms, exhausted
  end
else
  -- Every entitlement code of the shard ("#<code>" holds kind and name).
  local last = tonumber(redis.call('HGET', M, '#') or '0')
  local codes = {}
  if last > 0 then
    local f = {}
    for c = 1, last do f[c] = '#' .. c end
    for c, v in ipairs(redis.call('HMGET', M, unpack(f))) do
      if v and string.sub(v, 1, 1) == 'e' then codes[#codes + 1] = c .. ':' end
    end
  end
  next = function(n)
    local ids, exhausted = {}, true
    for _, p in ipairs(codes) do
      local ms, ex = bscan(ENTS, p, cur, n)
      for _, m in ipairs(ms) do ids[#ids + 1] = string.sub(m, #p + 1) end
      exhausted = exhausted and ex
    end
    table.sort(ids, lt)
    if #ids > n then
      for i = #ids, n + 1, -1 do ids[i] = nil end
      exhausted = false
    end
    return ids, exhausted
  end
end
local out, n, done, memo = {}, 0, 0, {}
while n < want and budget > 0 do
  local batch = math.min(budget, math.max(want - n, 64))
  local ids, exhausted = next(batch)
  local all = true
  for idx, id in ipairs(ids) do
    cur = id
    budget = budget - 1
    local r, s, e = getrec(P, id)
    if e then return e end
    if r and (sub == '' or r[S] == sub) and (not code or r[EN] == code) and
       (grant == '' or r[G] == grant) and (states == '' or string.find(states, r[T], 1, true)) then
      out[#out + 1] = id
      out[#out + 1] = reply(s, names(P, r, memo))
      n = n + 1
    end
    if n >= want and idx < #ids then all = false; break end
  end
  if all and exhausted then done = 1; break end
end
return {cur, done, out}
`

var listScript = goredis.NewScript(libRec + libLease + libConst + libSets + libSetsNow + libScan + listSrc)

// reserveScript claims a request key for a Create: it sets it to mine
// (with a short TTL) unless it holds another value, other than replace (a
// confirmed lease that no longer exists), and returns "" when it did, else
// the value it holds.
// KEYS: request key; ARGV: mine, ttl ms, replace
const reserveSrc = `
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[3] then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
`

var reserveScript = goredis.NewScript(reserveSrc)

// confirmScript turns a reservation into the request's lasting record
// once the lease is written; it returns "" when the key still held mine,
// else what it holds now ("" is never a value, "-" stands for none).
// KEYS: request key; ARGV: mine, final, ttl ms
const confirmSrc = `
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] then return v or '-' end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return ''
`

var confirmScript = goredis.NewScript(confirmSrc)

// releaseScript drops a reservation that is still mine (the Create failed).
// KEYS: request key; ARGV: mine
const releaseSrc = `
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

var releaseScript = goredis.NewScript(releaseSrc)

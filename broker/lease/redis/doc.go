// Package redis is the production lease.Store: leases in Redis or Redis
// Cluster, shared by every broker replica. It passes lease/leasetest on a
// single server and on a three-primary cluster.
//
//	rdb := redis.NewUniversalClient(&redis.UniversalOptions{ // github.com/redis/go-redis/v9
//		Addrs:                 []string{"redis-0:6379", "redis-1:6379", "redis-2:6379"},
//		ContextTimeoutEnabled: true, // give up at the caller's deadline
//		DialerRetries:         1,    // fail fast while Redis is down
//	})
//	store, err := leaseredis.New(rdb, leaseredis.Options{})
//
// # Layout
//
// Leases are spread over Options.Shards shards (default 16). The shard of
// a lease is FNV-1a(id) mod Shards, so it follows from the id alone and a
// single-lease operation touches one shard. Every key of shard s carries
// the hash tag {s}, so in a cluster all of a shard's keys live in one slot
// and one Lua script can change a lease and its indexes together:
//
//	mf:{s}:lease:<id>         HASH    the lease
//	mf:{s}:due                ZSET    id -> due ms: pending and active leases
//	mf:{s}:claimed            ZSET    id -> claim deadline ms: revoking leases
//	mf:{s}:gone               ZSET    "id\0subject\0entitlement\0grant" -> sweep ms: terminal leases
//	mf:{s}:all                ZSET    every lease id, score 0 (List in id order)
//	mf:{s}:by:sub:<subject>   ZSET    ids by subject, score 0 (kill switch, List)
//	mf:{s}:by:ent:<name>      ZSET    ids by entitlement, score 0
//	mf:{s}:by:grant:<id>      ZSET    ids by grant, score 0
//	mf:{r}:req:<digest>       STRING  the lease id of (subject, request id)
//
// A lease is in exactly one of due, claimed and gone. The index sets are
// sorted sets with equal scores, so ZRANGEBYLEX pages them in id order
// (ids sort by creation time); on Redis 7.0 a small sorted set is also
// cheaper than a small set (listpack against hash table).
//
// The hash has one-letter field names, and a field whose value is empty,
// zero or the common default is not stored: s subject, e entitlement, g
// grant, n issuer, x external ref, q request id, t state (p a c r i), b
// state before the current claim, I E H D issued/expires/hard end/due in
// ms (D only when it differs from E), f flags (not renewable 1, not
// revocable 2), y revocable reason, A attempts, L last error, R revoke
// reason, Q revoke requested ms, V revoked ms, F fence.
//
// # Scripts
//
// Every state change of one lease and its indexes is one Lua script, run
// with EVALSHA and reloaded by itself after a restart or SCRIPT FLUSH
// (go-redis Script.Run). Redis runs a script atomically but does not roll
// back one that fails half way, so every script reads and checks
// everything first (the lease exists, its state and fence, the type of
// every key it will write) and only then writes. The errors Redis can
// still raise at a script's first write (OOM under noeviction, READONLY
// on a replica) change nothing. The tests inject a key of the wrong type
// under each script and a tiny maxmemory, and check that no key changed.
//
// Times are the caller's, passed as milliseconds since the epoch; scripts
// never read Redis TIME. Only the Retain TTL of a terminal lease runs on
// Redis's clock.
//
// Claim visits the shards from a random one, so replicas claiming at once
// spread out, and runs one script per shard that takes at most the number
// still wanted: the due ids (score <= now) and lapsed claims (deadline <=
// now), earliest first, moved to claimed with deadline now+hold, state
// revoking, fence+1. One script never touches more than max leases,
// counting the terminal leases it sweeps with the room left. NextDue is
// the least first score of due and claimed over the shards (one
// pipeline). RevokeMatching walks one index per shard in batches of 256,
// a script per batch, each lease changed atomically; List walks the
// smallest index the query allows in every shard and merges.
//
// # Request ids
//
// The request key of (subject, request id) lives in a shard of its own
// choosing (from its digest), not the lease's. Create reserves it (set if
// absent, as "?id", with a 10s TTL), writes the lease, then confirms it
// (sets it to the id, with a TTL of HardEnd-IssuedAt+Retain). A second
// Create that finds a confirmed key returns that lease with
// lease.ErrDuplicate; one that finds a reservation waits up to 2s for it
// to be confirmed or to lapse; one that finds the key pointing at a lease
// that no longer exists (Retain passed) takes it over. A Create whose
// reservation lapsed before it confirmed (another took the request id)
// deletes its own, never handed out, lease and returns the other. A crash
// between reservation and confirmation leaves at most a pending lease that
// nothing was minted for, reaped at its deadline.
//
// # Retention
//
// When a lease ends (Finish revoked or irrevocable), its hash gets a TTL
// of Options.Retain (default 7 days) and it is queued in gone to be swept
// at Outcome.At+Retain: a later Claim in its shard removes it from every
// index, with the room its batch has left. So Redis does not grow without
// bound; only live leases and the last Retain of ended ones are kept.
//
// # Persistence: what the broker needs from Redis
//
// Redis holds the revoker's to-do list: a lease that is lost is a
// credential nobody will revoke early (its native expiry, which the
// broker always sets no later than the lease, still bounds the damage).
// Run Redis with:
//
//	appendonly yes
//	appendfsync everysec      # at most about a second of writes lost on a crash; "always" loses none, slower
//	maxmemory-policy noeviction  # evicting a lease would silently drop its revocation
//
// With everysec a crash of the Redis host can lose the last second of
// writes: a lease created in that second is gone, but the broker had
// written it before minting, so the loss is bounded to credentials minted
// in that second, which still end at their native expiry. With replicas,
// set Options.WaitReplicas so that a write is on N replicas before the
// broker mints against it.
//
// # WAIT
//
// With Options.WaitReplicas > 0, every write script is followed by WAIT on
// the same connection, on the primary that owns the key (in a cluster, the
// master of the slot). If fewer replicas acknowledge within WaitTimeout,
// the call returns an error; the write may still have happened on the
// primary and some replicas, and a failover may keep or lose it. Callers
// treat it as unavailability: the broker mints nothing and fails the
// request, and whatever was written keeps ending on time (a pending lease
// is reaped at its deadline; a revocation that was recorded stands). A
// refused change (a lease sentinel) wrote nothing and is reported as is.
//
// # Cluster
//
// Works on Redis Cluster with a *redis.ClusterClient: every script names
// keys of one slot, NextDue, List and request keys use ordinary
// cross-slot pipelines. Choose Shards a few times the number of primaries
// so every primary holds some (the tags are {0} .. {Shards-1}), and never
// change it on a populated store. During a resharding go-redis follows
// MOVED/ASK for plain calls; a call with WaitReplicas pins the slot's
// master and returns an error if the slot moved under it.
//
// # Errors
//
// Not found, id taken, request id used, wrong state, past hard end and a
// superseded fence are the lease sentinels (errors.Is). Everything Redis
// says otherwise (connection refused, timeout, OOM, READONLY, CLUSTERDOWN,
// a key of the wrong type) is a plain error starting "redis: ": the broker
// fails closed and mints nothing. The Store recovers by itself when Redis
// comes back: go-redis redials, scripts reload. go-redis retries a command
// after a network error; if the first attempt had landed, the retry
// reports the state it left (Create: ErrExists; Activate, Finish:
// ErrWrongState or ErrFenced), each of which fails safe.
//
// # Memory
//
// BenchmarkMemoryPerLease writes 100,000 active leases (26-character ids
// and external refs, subjects of about 45 characters, entitlements of 15,
// grants of 40) and reports the growth of INFO used_memory per lease. On
// Redis 7.0.15 with 16 shards: about 860 bytes when 2,000 subjects, 20
// entitlements and 200 grants are shared; about 975 with a grant per
// lease; about 1,050 with a request id on every lease (its request key).
// MEMORY USAGE splits the first: lease hash 312 (a listpack: one-letter
// fields, empty and default values left out), due entry 120, all entry
// 120, entitlement index 131 (a skiplist past 128 members a shard),
// subject index 72, grant index 37. A sorted-set entry costs about 120
// bytes once its set is past 128 members, which is what puts a lease with
// its four indexes above 500 bytes.
package redis

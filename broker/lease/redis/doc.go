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
// # Layout (version 2)
//
// Leases are spread over Options.Shards shards (default 16). The shard of
// a lease is FNV-1a(id) mod Shards, so it follows from the id alone and a
// single-lease operation touches one shard. Every key of shard s carries
// the hash tag {s}, so in a cluster all of a shard's keys live in one slot
// and one Lua script changes a lease and its indexes together:
//
//	mf:{s}:r:<c>       HASH    id -> packed record; c is the id's last character (32 hashes a shard)
//	mf:{s}:p           ZSET    id -> pending deadline ms: pending leases (few, soon active)
//	mf:{s}:d           bucketed (due ms, id): active leases
//	mf:{s}:c           ZSET    id -> claim deadline ms: revoking leases
//	mf:{s}:g           bucketed (sweep ms, id): terminal leases
//	mf:{s}:s           bucketed tag(subject) id           (kill switch, List)
//	mf:{s}:e           bucketed entitlement code ":" id   (kill switch, List, List without filters)
//	mf:{s}:k           bucketed tag(grant) id             (kill switch, List)
//	mf:{s}:m           HASH    meta: the data-loss marker (e epoch, v layout version), interned names
//	mf:{r}:q:<digest>  STRING  the lease id of (subject, request id)
//
// A lease is in exactly one of p, d, c and g, and (until it is swept) in s,
// e and, if it has a grant, k. Its record is one MessagePack stream (see
// codec.go): slots in a fixed order, times in milliseconds as offsets from
// IssuedAt, defaults left out at the end. Entitlement, issuer and
// revocable reason are few and named by configuration, so each shard
// interns them in its meta hash (kind+name -> small code, "#"code ->
// kind+name) and the record holds the code; those entries are never
// removed (a shard keeps one for every name it has seen). Subjects and
// grants are many, so they stay in the record.
//
// A bucketed set is a directory ZSET of bucket bounds plus one ZSET per
// bucket, <set>|<bound>, holding the entries from its bound up to the
// next bound, at most 63 of them. So every bucket stays a listpack (the
// default zset-max-listpack-entries is 128 and -value 64; the store
// changes no server setting), where an entry costs its bytes plus two or
// three, against about 120 bytes in a skiplist. A script routes an entry
// with one ZREVRANGEBYLEX on the directory. Every directory also holds a
// 65-byte sentinel, which keeps it a skiplist: lex ranges on a listpack
// take linear time. A full bucket splits in two, or starts a new bucket
// when the entry is its last (ids grow with time, so appends fill
// buckets); a bucket below 16 entries merges with a neighbour when both fit
// in 48; an empty one goes. The due and gone sets order entries by (time,
// id): a bound there is the time as 16 digits (offset by 2^52) followed by
// the id.
//
// The index by subject, entitlement or grant is one bucketed set per
// shard, not one key per name, so a name with one lease costs what a name
// with thousands does. An entry is the name's tag (the first 10 hex digits
// of its SHA-1 for subjects and grants, the interned code for
// entitlements) followed by the id, so the leases of one name are one
// range, in id order. Names whose tags collide share a range; readers
// check the record. There is no index of every lease: List without
// filters merges the entitlement ranges (every lease has an entitlement).
//
// Layout version 2 shares no key name with version 1 (a hash per lease,
// mf:{s}:lease:<id>, and sorted sets due, claimed, gone, all and
// by:sub/ent/grant:<name>). A version 2 store does not see version 1
// leases, so it never revokes them early (each still ends at its native
// expiry). Upgrade with an empty store: stop issuing, let the old revoker
// end every lease (or let them all expire), deploy, then delete the old
// keys (SCAN for the old names), or give the new store another Prefix.
// The meta hash's v field records the layout version for the next change.
//
// # Scripts
//
// Every state change of one lease and its indexes is one Lua script, run
// with EVALSHA and reloaded by itself after a restart or SCRIPT FLUSH
// (go-redis Script.Run). Redis runs a script atomically but does not roll
// back one that fails half way, so every script reads all it will write
// first (the lease exists, its state and fence; a read of a key of the
// wrong type fails there) and only then writes, beginning with a write
// that Redis refuses over maxmemory, so that OOM under noeviction, like
// READONLY on a replica, changes nothing. The tests turn each key a
// script writes (directories, buckets, record hashes, meta) into a string,
// and set a tiny maxmemory, and check that no key changed.
//
// Without WaitReplicas the scripts of concurrent calls go out together
// (broker/internal/redisbatch): a call that finds a pipeline on the wire
// waits for it, and every call that arrived meanwhile goes in the next
// one, so 32 concurrent issuances cost Redis and the broker a few round
// trips (one read and one write on each side) instead of 64. Each script
// still runs whole and alone; batching changes the I/O, not what a script
// does or when it is atomic. With WaitReplicas each write keeps its own
// connection, which the WAIT after it needs.
//
// Times are the caller's, passed as milliseconds since the epoch; scripts
// never read Redis TIME, and hand times to Redis as exact integer strings.
// A store keeps every time within 2^52 ms of the epoch (Lua numbers are
// exact to 2^53, and the record keeps times as offsets of one another).
//
// Claim visits the shards from a random one, so replicas claiming at once
// spread out, and runs scripts in each shard that take at most the number
// still wanted, 128 at most a script (a few milliseconds of Redis, which
// runs nothing else meanwhile; a revoker whose broker is serving issuance
// takes 32 at a time, under a millisecond): pending leases whose deadline passed, active leases due
// (score <= now) and lapsed claims (deadline <= now), earliest first,
// moved to c with deadline now+hold, state revoking, fence+1. One script
// never touches more than max leases, counting the terminal leases it
// sweeps with the room left. NextDue is the least first entry of p, d and
// c over the shards (one pipeline). RevokeMatching walks the name's range
// of one index per shard in batches of 256, a script per batch, each
// lease changed atomically. List walks, in every shard, the filter's
// range that spans the fewest buckets, and merges the shards; without
// filters it merges the ranges of every entitlement the shard has seen
// (that List is for operators; its cost grows with the entitlements).
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
// When a lease ends (Finish revoked or irrevocable) it moves to g, to be
// swept at Outcome.At+Retain (default 7 days): a later Claim in its shard,
// with the room its batch has left, deletes its record and its index
// entries. So Redis does not grow without bound; only live leases and the
// last Retain of ended ones are kept. No key has a TTL but request keys.
//
// # Data loss
//
// Each shard's meta hash holds a marker: a random epoch (field e), written
// by the first Create, Claim or CheckDataLoss that finds none. Every
// Create reads its shard's marker, and every Claim the marker of each
// shard it visits (a revoker pass that does not fill its batch visits
// every shard), in the same script, with no extra round trip; the store
// remembers each epoch it has seen. When a marker it had seen is missing
// (it re-creates it) or holds another epoch (another broker replica
// re-created it), Redis lost that shard's data: FLUSHALL, a restart
// without persistence, a failover to a replica that had nothing, or
// eviction. The store calls Options.OnDataLoss once per call that
// noticed, naming the shards, and carries on; so a loss is reported within
// one revoker pass. A marker missing from a shard that still holds leases
// is reported even by a store that never saw it. CheckDataLoss checks
// every shard at once (a health check, or a store that does not claim).
// The broker is to feed the callback to the counter
// mayfly_lease_store_data_loss_total. Nothing is repaired: the leases of
// a lost shard are credentials nobody will revoke early (each still ends
// at its native expiry). New does not contact Redis, so a store learns
// each marker at its first call there. The marker tells a shard that lost
// everything, not one that lost its last second of writes (a crash with
// appendfsync everysec, a failover to a replica that lagged): for those,
// WaitReplicas.
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
// TestMemoryPerLeaseAt writes N active leases with Create and Activate
// (26-character ids and external refs, subjects of about 45 characters,
// entitlements of 15, grants of 40) into an empty Redis and reports the
// growth of INFO used_memory per lease, and MEMORY USAGE per kind of key;
// it fails over 500 bytes a lease (by default it writes 20,000, where a
// lease costs about 455):
//
//	CI=true MAYFLY_LEASE_MEMORY=1000000 go test -run TestMemoryPerLeaseAt -v -timeout 60m ./broker/lease/redis/
//
// At 1,000,000 leases on Redis 7.0.15, 16 shards, default server
// settings: 433 bytes a lease when 2,000 subjects, 20 entitlements and
// 200 grants are shared; 429 with a grant per lease; 657 with a request
// id on every lease. Layout version 1 took 885, 914 and 1,094. MEMORY
// USAGE splits the first: the record 225 (a field of a hashtable hash:
// dict entry, id, and the packed value of about 140 bytes in a 160-byte
// allocation); the due entry 48 and the index entries by subject 50,
// entitlement 46 and grant 54 (each an entry of 30 to 40 bytes in a
// listpack bucket, plus its share of the bucket's key and of the
// directory); pending, claimed and meta next to nothing. The other 11 are
// the main dictionary and allocator rounding. A request id adds its key
// (a STRING with a TTL: about 130 bytes, and its expiry entry) and 26
// bytes to the record, which then takes the 192-byte allocation.
//
// What moves the figure: a record over 156 packed bytes (long subjects,
// grants or external refs; a request id) takes the next allocation class
// (+32). A revocable reason, an entitlement or an issuer costs a small
// code, whatever its length (interned once a shard). A subject or grant
// with one lease costs what one with thousands does (the indexes are per
// shard, not per name). A terminal lease kept for Retain costs about what
// an active one does (its gone entry replaces the due entry).
//
// # Throughput
//
// BenchmarkCreateActivate (issuance: a Create and an Activate script a
// lease, 32 callers) and BenchmarkClaimFinish (the revoker: Claim 256,
// Finish each from 16 goroutines), client and Redis on one busy two-core
// machine, each paired with layout version 1 in the same minute: issuance
// ran at 0.62 to 1.34 times version 1 (median 0.77; 5,100 to 11,100
// leases/s against 6,900 to 12,600), the revoker at 0.81 to 1.47 times
// (median 1.07; 11,800 to 16,900 against 9,100 to 16,200). Issuance
// costs more Redis time than in version 1 (about 50 µs a Create and 30 µs
// an Activate against 35 and 23): a lease routes four entries (subject,
// entitlement, grant, due) through a directory, one ZREVRANGEBYLEX each,
// where version 1 added them to plain sorted sets; the client sends and
// decodes less (a packed record against 30 fields). The revoker's scripts
// touch fewer keys than before. Most of a script's time is the dispatch
// of its redis.call()s (a few µs each on such a machine; a Create makes
// about 16, an Activate 8), not the commands themselves; the benchmark
// reports Redis's CPU per lease in all and inside the scripts.
package redis

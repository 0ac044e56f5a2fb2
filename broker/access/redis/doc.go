// Package redis is the shared access.Store: access requests, dynamic
// grants, certifications, marks and decision records in Redis or Redis
// Cluster, shared by every broker replica. It passes access/accesstest on
// a single server and on a three-primary cluster, and answers every query
// as the memory store does.
//
//	rdb := redis.NewUniversalClient(&redis.UniversalOptions{ // github.com/redis/go-redis/v9
//		Addrs:                 []string{"redis-0:6379", "redis-1:6379", "redis-2:6379"},
//		ContextTimeoutEnabled: true, // give up at the caller's deadline
//		DialerRetries:         1,    // fail fast while Redis is down
//	})
//	store, err := accessredis.New(rdb, accessredis.Options{})
//	svc, err := access.New(access.Config{Store: store, ...})
//
// It follows the lease store (broker/lease/redis): the same sharding,
// scripts that check before they write, error handling and WAIT; read that
// package's documentation for the reasoning.
//
// # Layout
//
// Records are spread over Options.Shards shards (default 16). The shard
// of a record is FNV-1a(id) mod Shards (of a mark, of its key), so a
// single-record operation touches one shard. Every key of shard s carries
// the hash tag {s}, so in a cluster all of a shard's keys live in one slot
// and one Lua script changes a record and its index entries together. With
// the default prefix "mf:access":
//
//	mf:access:{s}:request:<id>                   HASH    v version, j JSON, r requester id, e entitlement, t state
//	mf:access:{s}:requests                       ZSET    every request id, score 0
//	mf:access:{s}:requests:requester:<id>        ZSET    ids by requester, score 0
//	mf:access:{s}:requests:entitlement:<name>    ZSET    ids by entitlement, score 0
//	mf:access:{s}:requests:state:<state>         ZSET    ids by state, score 0
//	mf:access:{s}:grant:<id>                     HASH    v version, j JSON, s subject, e entitlement, k kind, t state
//	mf:access:{s}:grants                         ZSET    every grant id, score 0
//	mf:access:{s}:grants:subject:<id>            ZSET    and grants:entitlement:<name>, grants:kind:<kind>, grants:state:<state>
//	mf:access:{s}:cert:<id>                      HASH    g grant id, a At seconds, n At nanoseconds, j JSON
//	mf:access:{s}:certs:latest                   HASH    grant id -> id of its latest certification in this shard
//	mf:access:{s}:mark:<key>                     STRING  the mark's time, RFC 3339 with nanoseconds, UTC
//	mf:access:{s}:record:<id>                    STRING  decision record, JSON
//	mf:access:{s}:records                        ZSET    every record id, score 0
//	mf:access:{s}:records:at                     ZSET    record id -> At in ms
//	mf:access:{s}:records:skew                   STRING  least (id time - At ms) of the shard's records, or "u"
//	mf:access:{s}:gen                            STRING  random token, replaced by every request, grant or certification write
//
// The generation of the store (Store.Generation, access.Generations) is
// the shard tokens together, read with one MGET (one pipeline per node in
// a cluster). A write replaces its shard's token in the script that
// writes, so a reader that sees the old generation read before the write,
// and one that sees the new one sees the write; a token is random, so a
// flushed or restarted Redis never hands back a generation seen before.
// The access service keeps what State reads while the generation stands:
// a decision costs one MGET instead of a walk of every shard.
//
// Records are stored as encoding/json writes them, the encoding the memory
// store already round-trips every value through, so what comes back is
// what the memory store would return. The hash fields next to the JSON
// are copies of what the indexes are keyed by, so scripts never decode
// JSON. A record key and the index keys of its kind differ before the id
// or value ("request:" against "requests"), so no id can collide with an
// index, and no name collides with the lease store's.
//
// The indexes are sorted sets with equal scores, so ZRANGEBYLEX pages them
// in id order (byte order, as Go compares strings).
//
// # Scripts
//
// Create, update, certification, mark and append are each one Lua script
// (scripts.go), run with EVALSHA and reloaded by themselves after a
// restart or SCRIPT FLUSH. Redis runs a script atomically but does not roll
// back one that fails half way, so every script reads and checks
// everything first (the record exists or not, its version, the type of
// every key it will write, including the old index entries an update moves
// and the old records an append trims) and only then writes. The errors
// Redis can still raise at a script's first write (OOM under noeviction,
// READONLY on a replica) change nothing. The tests inject a key of the
// wrong type under each script and a tiny maxmemory, and check that no key
// changed.
//
// Updates are compare-and-set: the script writes only if the stored v is
// the caller's Version, stores Version+1 (in v and in the JSON), and moves
// the record's entries between indexes whose field changed (requester,
// entitlement, state; subject, kind). Of concurrent updates from one
// version exactly one wins; the others get access.ErrConflict.
//
// # Listing
//
// ListRequests and ListGrants pick, among the filters a query sets, the
// one whose indexes hold the fewest ids over all shards (one pipeline of
// ZCARD; a States filter counts one index per state), or the every-id
// index without filters, and walk it in every shard from q.After: one
// read-only script per (shard, index) in one pipeline, each examining at
// most 1,000 ids, checking the other filters on the hash fields and
// returning up to Limit matches. Rounds repeat for the streams that are
// neither exhausted nor full, then the streams are merged by id and cut
// at Limit. The page is exact: a stream is read in id order, so anything
// it did not reach sorts after Limit matches of its own.
//
// # Certifications and marks
//
// A certification lives in the shard of its id (so ErrExists is exact).
// Each shard's certs:latest points, per grant, at the latest (greatest At,
// then greatest id, compared byte-wise) of that shard's certifications of
// it; LatestCertifications reads every shard's in one pipeline and keeps
// the latest per grant. Marks are strings set if absent; Unmark deletes.
//
// # Decision records and retention
//
// A record is a string; its id is in records (id order) and records:at
// (time). Records walks records like a listing and skips those before
// q.Since by records:at. Because ids made by lease.NewID or the service
// begin with their time, a walk with Since need not start at the first
// id: records:skew holds the least (id time - At) over the shard's
// records, so a record at or after Since has an id at least the
// 10-character time prefix of Since+skew, and the walk starts there. A
// record whose id has another shape sets the skew to "u", and that
// shard's walks start at the first id. Times are compared in Go as well,
// to the nanosecond.
//
// Records are kept for Options.RecordRetention (default 90 days): each
// AppendRecord removes, in the same script, up to 16 records of its shard
// whose At is more than RecordRetention before the new record's At. The
// times are the records' own; the store never reads a clock, Redis's
// included. Requests, grants, certifications and marks are kept until
// deleted by hand.
//
// # Errors
//
// Not found, id taken and version conflict are access.ErrNotFound,
// access.ErrExists and access.ErrConflict (errors.Is). Everything Redis
// says otherwise (connection refused, timeout, OOM, READONLY, CLUSTERDOWN,
// a key of the wrong type) is a plain error starting "redis: ": the
// service fails closed and grants nothing. The Store recovers by itself
// when Redis comes back: go-redis redials, scripts reload.
//
// With Options.WaitReplicas > 0 every write script is followed by WAIT on
// the same connection, on the primary owning the key; too few
// acknowledgements is a plain error although the write may have
// happened, which callers treat as unavailability. A refused change (a
// sentinel) wrote nothing and is reported as is.
//
// # Cluster
//
// Works on Redis Cluster with a *redis.ClusterClient: every script names
// keys of one slot (keys a script finds inside a record share its hash
// tag), and listings use ordinary cross-slot pipelines. Choose Shards a
// few times the number of primaries, and never change it on a populated
// store. A listing is not a snapshot across shards: a record written
// while it runs may or may not be in it.
//
// Run Redis as the lease store needs it (appendonly yes, appendfsync
// everysec, maxmemory-policy noeviction): an evicted request, grant or
// mark is a decision silently lost.
package redis

package redis

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"strconv"
)

// Key names, all built here. Every key of shard s starts with
// "<prefix>:{s}:", so the keys of one shard share a hash tag and a cluster
// slot, and one script can change a lease and its indexes together:
//
//	<p>:{s}:lease:<id>          HASH  the lease (one-letter fields, see codec.go)
//	<p>:{s}:due                 ZSET  id -> due ms (pending and active leases)
//	<p>:{s}:claimed             ZSET  id -> claim deadline ms (revoking leases)
//	<p>:{s}:gone                ZSET  "id\0subject\0entitlement\0grant" -> when to sweep (terminal leases)
//	<p>:{s}:all                 ZSET  id, score 0: every lease, in id order (List)
//	<p>:{s}:by:sub:<subject>    ZSET  id, score 0 (kill switch, filtered List)
//	<p>:{s}:by:ent:<name>       ZSET  id, score 0
//	<p>:{s}:by:grant:<id>       ZSET  id, score 0
//	<p>:{r}:req:<digest>        STRING  lease id of (subject, request id); r from the digest
//
// The index sets are sorted sets with equal scores so that ZRANGEBYLEX
// pages them in id order; small ones are also cheaper than sets on Redis
// 7.0, which keeps a small sorted set as a listpack but a small set of
// strings as a hash table.

// shardOf is the shard of a lease id: FNV-1a of the id modulo the shard
// count. It depends on the id alone, so a single-lease operation touches
// one slot.
func shardOf(id string, shards int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(shards))
}

// shardPrefix is the prefix of every key of shard s: "<prefix>:{s}:".
func shardPrefix(prefix string, s int) string {
	return prefix + ":{" + strconv.Itoa(s) + "}:"
}

// keys names the keys of one shard.
type keys struct{ p string }

func (k keys) lease(id string) string           { return k.p + "lease:" + id }
func (k keys) due() string                      { return k.p + "due" }
func (k keys) claimed() string                  { return k.p + "claimed" }
func (k keys) gone() string                     { return k.p + "gone" }
func (k keys) all() string                      { return k.p + "all" }
func (k keys) bySubject(subject string) string  { return k.p + "by:sub:" + subject }
func (k keys) byEntitlement(name string) string { return k.p + "by:ent:" + name }
func (k keys) byGrant(id string) string         { return k.p + "by:grant:" + id }

// requestDigest names a (subject, request id) pair in 22 characters: the
// first 128 bits of SHA-256, base64url. The lease it points to is checked
// against both, so a collision could not return a stranger's lease.
func requestDigest(subject, requestID string) (digest string, shardHash uint32) {
	h := sha256.New()
	h.Write([]byte(strconv.Itoa(len(subject))))
	h.Write([]byte{':'})
	h.Write([]byte(subject))
	h.Write([]byte(requestID))
	sum := h.Sum(nil)
	return base64.RawURLEncoding.EncodeToString(sum[:16]), binary.BigEndian.Uint32(sum[16:20])
}

package redis

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"strconv"
)

// Key names, all built here (and, for bucket keys and record keys derived
// from a lease, in the scripts). Every key of shard s starts with
// "<prefix>:{s}:", so the keys of one shard share a hash tag and a cluster
// slot, and one script can change a lease and its indexes together. Layout
// version 2:
//
//	<p>:{s}:r:<c>        HASH  lease id -> packed record (see codec.go); c is the last byte of the id
//	<p>:{s}:p            ZSET  id -> pending deadline ms (pending leases: few, and soon active)
//	<p>:{s}:d            bucketed set: (due ms, id) of active leases
//	<p>:{s}:c            ZSET  id -> claim deadline ms (revoking leases)
//	<p>:{s}:g            bucketed set: (sweep ms, id) of terminal leases
//	<p>:{s}:s            bucketed set: tag(subject) id
//	<p>:{s}:e            bucketed set: entitlement code ":" id
//	<p>:{s}:k            bucketed set: tag(grant) id
//	<p>:{s}:m            HASH  meta: the marker (e epoch, v layout version) and
//	                           interned names (kind + name -> code, "#" + code -> kind + name, "#" -> last code;
//	                           kinds: e entitlement, n issuer, y revocable reason)
//	<p>:{r}:q:<digest>   STRING lease id of (subject, request id); r from the digest
//
// A bucketed set <N> is a directory ZSET <N> (every score 0) whose members
// are the lower bounds of its buckets and a sentinel, and one ZSET
// <N>|<bound> per bucket holding at most 63 entries (MAXB-1 in
// scripts.go), so that every bucket stays a listpack under the default
// zset-max-listpack-entries (128). See libSets in scripts.go.

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

// record is the hash that holds lease id (the scripts build the same name).
func (k keys) record(id string) string {
	if id == "" {
		return k.p + "r:"
	}
	return k.p + "r:" + id[len(id)-1:]
}
func (k keys) pending() string       { return k.p + "p" }
func (k keys) due() string           { return k.p + "d" }
func (k keys) claimed() string       { return k.p + "c" }
func (k keys) gone() string          { return k.p + "g" }
func (k keys) bySubject() string     { return k.p + "s" }
func (k keys) byEntitlement() string { return k.p + "e" }
func (k keys) byGrant() string       { return k.p + "k" }
func (k keys) meta() string          { return k.p + "m" }

// tag names a subject or grant in its index: the first 10 hex digits of
// its SHA-1 (the scripts compute the same with redis.sha1hex). Names that
// share a tag share a range of the index; readers check the record.
func tag(name string) string {
	sum := sha1.Sum([]byte(name))
	return hex.EncodeToString(sum[:5])
}

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

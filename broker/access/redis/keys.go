package redis

import (
	"hash/fnv"
	"strconv"
)

// Key names, all built here, except keys a script finds inside a shard:
// the old index entries an update moves (from the infixes passed to it),
// records an append trims ("record:", kRecord) and the latest
// certification of a grant ("cert:", kCert). Every key of shard s
// starts with "<prefix>:{s}:", so the keys of one shard share a hash tag
// and a cluster slot, and one script can change a record and its index
// entries together. See doc.go for the whole layout.

// shardOf is the shard of a record id or mark key: FNV-1a modulo the
// shard count. It depends on the id alone, so a single-record operation
// touches one slot.
func shardOf(id string, shards int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(shards))
}

// shardPrefix is the prefix of every key of shard s: "<prefix>:{s}:".
func shardPrefix(prefix string, s int) string {
	return prefix + ":{" + strconv.Itoa(s) + "}:"
}

// Key infixes. A record key ("request:<id>") and the index keys of its
// kind ("requests", "requests:state:<state>") differ before the id or
// value, so no id or value can make one collide with another.
const (
	kRequest     = "request:"
	kRequests    = "requests"
	kGrant       = "grant:"
	kGrants      = "grants"
	kCert        = "cert:"
	kCertsLatest = "certs:latest"
	kMark        = "mark:"
	kRecord      = "record:"
	kRecords     = "records"
	kRecordsAt   = "records:at"
	kRecordsSkew = "records:skew"
	kGen         = "gen"
)

// keys names the keys of one shard.
type keys struct{ p string }

func (k keys) cert(id string) string           { return k.p + kCert + id }
func (k keys) gen() string                     { return k.p + kGen }
func (k keys) certsLatest() string             { return k.p + kCertsLatest }
func (k keys) mark(key string) string          { return k.p + kMark + key }
func (k keys) record(id string) string         { return k.p + kRecord + id }
func (k keys) records() string                 { return k.p + kRecords }
func (k keys) recordsAt() string               { return k.p + kRecordsAt }
func (k keys) recordsSkew() string             { return k.p + kRecordsSkew }
func (k keys) one(f *family, id string) string { return k.p + f.one + id }
func (k keys) all(f *family) string            { return k.p + f.all }

// index is the key of the index of field i of f for value v.
func (k keys) index(f *family, i int, v string) string { return k.p + f.fields[i].index + v }

// family describes a kind of versioned record (requests, grants): the
// infix of its record keys, of its index of every id, and the hash fields
// it is indexed by.
type family struct {
	what   string // "request", "grant": for messages
	one    string // record key infix: "request:"
	all    string // key of every id: "requests"
	fields []indexField
}

// indexField is a hash field a family is indexed by, and the infix of its
// index keys ("requests:state:" + state).
type indexField struct {
	field string
	index string
}

// Hash fields of a request or grant record besides the indexed ones.
const (
	fVersion = "v" // the Version, decimal
	fJSON    = "j" // the record, as encoding/json writes it
)

// Indexed hash fields. Their order is the order of the values passed to
// create and update.
var (
	requests = &family{what: "request", one: kRequest, all: kRequests, fields: []indexField{
		{"r", kRequests + ":requester:"},
		{"e", kRequests + ":entitlement:"},
		{"t", kRequests + ":state:"},
	}}
	grants = &family{what: "grant", one: kGrant, all: kGrants, fields: []indexField{
		{"s", kGrants + ":subject:"},
		{"e", kGrants + ":entitlement:"},
		{"k", kGrants + ":kind:"},
		{"t", kGrants + ":state:"},
	}}
)

// Field positions in requests.fields and grants.fields.
const (
	rqRequester, rqEntitlement, rqState       = 0, 1, 2
	grSubject, grEntitlement, grKind, grState = 0, 1, 2, 3
)

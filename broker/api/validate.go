package api

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// validName reports whether name has the shape of entitlement names (the
// policy enforces the same): ^[a-z0-9][a-z0-9._-]{0,62}$, checked by hand
// because it runs on every call.
func validName(name string) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// maxTTL bounds any requested TTL before policy clamps it further.
const maxTTL = 366 * 24 * time.Hour

func validEntitlement(field, name string) error {
	if name == "" {
		return invalidArg(field, "required")
	}
	if !validName(name) {
		return invalidArg(field, "%q is not an entitlement name (lower-case letters, digits, '.', '_' and '-', at most 63)", truncate(name))
	}
	return nil
}

func validLeaseID(field, id string) error {
	if id == "" {
		return invalidArg(field, "required")
	}
	if !lease.ValidID(id) {
		return invalidArg(field, "%q is not a lease id (26 lower-case base32 characters)", truncate(id))
	}
	return nil
}

// validTTL converts an optional duration; nil means 0 (the default).
func validTTL(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalidArg(field, "not a valid duration")
	}
	ttl := d.AsDuration()
	switch {
	case ttl < 0:
		return 0, invalidArg(field, "must not be negative")
	case ttl > 0 && ttl < time.Second:
		return 0, invalidArg(field, "must be at least 1s")
	case ttl > maxTTL:
		return 0, invalidArg(field, "must be at most %s", maxTTL)
	}
	return ttl, nil
}

// validText accepts printable text up to max bytes (reason, ticket).
func validText(field, s string, max int, ascii bool) error {
	if len(s) > max {
		return invalidArg(field, "too long (%d bytes, at most %d)", len(s), max)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (ascii && r > 0x7e) || r == '\uFFFD' {
			return invalidArg(field, "contains a control or invalid character")
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

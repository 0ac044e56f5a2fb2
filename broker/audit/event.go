package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Type names what happened. Types are stable strings: queries, lineage,
// what-if replays and SIEM rules key on them. New types may be added;
// readers must accept types they do not know.
type Type string

// Event types. The audit.* types are written by the Log itself and are
// refused by Append.
const (
	// TypeRequestCreated: a principal asked for an entitlement (access
	// request). RequestID, Subject (the requester), Entitlement; Fields
	// reason, ticket, ttl.
	TypeRequestCreated Type = "request.created"
	// TypeRequestApproved: one approval of a request. Actor is the
	// approver; GrantID is set on the approval that met the rule.
	TypeRequestApproved Type = "request.approved"
	// TypeRequestDenied: an approver denied the request.
	TypeRequestDenied Type = "request.denied"
	// TypeRequestCancelled: the requester (or an operator) withdrew it.
	TypeRequestCancelled Type = "request.cancelled"
	// TypeRequestExpired: nobody decided before the request's deadline.
	TypeRequestExpired Type = "request.expired"
	// TypeDecision: a policy decision on an issuance. Outcome is allow,
	// deny or needs_approval; Reasons are the policy's reason codes.
	TypeDecision Type = "decision"
	// TypeGrantCreated: a grant came into force (from an approved request,
	// from break-glass, or a standing grant seen for the first time).
	TypeGrantCreated Type = "grant.created"
	// TypeGrantEnded: a grant ended (revoked, lapsed, not certified); its
	// leases end with How grant_ended.
	TypeGrantEnded Type = "grant.ended"
	// TypeLeaseIssued: a credential was handed out under a lease.
	TypeLeaseIssued Type = "lease.issued"
	// TypeLeaseRenewed: a lease's expiry moved.
	TypeLeaseRenewed Type = "lease.renewed"
	// TypeLeaseRevokeRequested: someone or something asked for a lease to
	// end early (How says why, Actor who).
	TypeLeaseRevokeRequested Type = "lease.revoke_requested"
	// TypeLeaseRevoked: the backend confirmed the credential is gone. How
	// is one of the lease.Reason values.
	TypeLeaseRevoked Type = "lease.revoked"
	// TypeLeaseIrrevocable: revocation was given up; the credential may
	// live until its native expiry.
	TypeLeaseIrrevocable Type = "lease.irrevocable"
	// TypeBreakGlassUsed: a principal self-granted in an emergency.
	TypeBreakGlassUsed Type = "breakglass.used"
	// TypeReviewCertified: an owner certified a grant for another period.
	TypeReviewCertified Type = "review.certified"
	// TypeReviewRevoked: a review ended a grant.
	TypeReviewRevoked Type = "review.revoked"
	// TypeReviewOverdue: a review (certification or break-glass) passed
	// its deadline.
	TypeReviewOverdue Type = "review.overdue"
	// TypeCallRefused: a call was refused before its handler ran: its
	// caller did not authenticate (Outcome unauthenticated; Actor empty,
	// Fields method and error) or was over its quota (Outcome
	// resource_exhausted; Actor the caller).
	TypeCallRefused Type = "call.refused"
	// TypeStoreDataLoss: the lease store was found to have lost its data
	// (Redis flushed, or restarted without persistence). Credentials
	// minted before are bounded only by their native expiry.
	TypeStoreDataLoss Type = "store.data_loss"
	// TypePolicyReloaded: the policy file was reloaded (Outcome ok) or a
	// reload was refused (Outcome failed; the last good policy stays).
	TypePolicyReloaded Type = "policy.reloaded"

	// TypeCheckpoint: written by the Log; Checkpoint signs the sequence
	// number and hash of the event before it.
	TypeCheckpoint Type = "audit.checkpoint"
	// TypeTrimmed: written by the Log before it trims the oldest events
	// of a Redis stream; Fields through_seq and through_hash name the last
	// event removed.
	TypeTrimmed Type = "audit.trimmed"
)

// Event is one entry of the audit trail. It has no field that can hold a
// credential: identifiers, codes and short free text only, and Append
// refuses values that look like secrets (see LooksLikeSecret).
//
// Seq, Prev and Hash (and Checkpoint) are set by the Log; a caller fills in
// the rest, usually through the constructors (RequestCreated, LeaseIssued,
// ...). Zero ID and Time are filled in by Append.
type Event struct {
	// Seq is the position in the chain, from 1, without gaps. There is
	// one chain per broker deployment.
	Seq uint64 `json:"seq"`
	// ID is unique per event (time-ordered, like a lease id).
	ID string `json:"id"`
	// Time is when the event happened, UTC, on the clock of the replica
	// that recorded it. Seq, not Time, is the order.
	Time time.Time `json:"time"`
	// Type is what happened.
	Type Type `json:"type"`
	// Actor is the principal id that caused the event (the approver, the
	// operator who revoked, the requester); empty for the broker itself.
	Actor string `json:"actor,omitempty"`
	// Subject is the principal id the access is for.
	Subject string `json:"subject,omitempty"`
	// Entitlement is the policy entitlement name.
	Entitlement string `json:"entitlement,omitempty"`
	// RequestID is the access request id.
	RequestID string `json:"request_id,omitempty"`
	// GrantID is the grant id (standing grant, approved request,
	// break-glass).
	GrantID string `json:"grant_id,omitempty"`
	// LeaseID is the lease id.
	LeaseID string `json:"lease_id,omitempty"`
	// Outcome is the result: allow, deny or needs_approval for a decision,
	// ok or failed for a policy reload.
	Outcome string `json:"outcome,omitempty"`
	// How is why a lease ended or is asked to end, one of the lease.Reason
	// values: expired, explicit, kill_switch, grant_ended,
	// pending_timeout, issue_failed, shutdown.
	How string `json:"how,omitempty"`
	// Reasons are stable reason codes (policy reason codes for a decision).
	Reasons []string `json:"reasons,omitempty"`
	// Fields are further details, free of secrets: keys are lower-case
	// names, values short text checked by the secret guard.
	Fields map[string]string `json:"fields,omitempty"`
	// PolicyDigest is the sha256 (hex) of the policy in force.
	PolicyDigest string `json:"policy_digest,omitempty"`
	// Checkpoint is set on audit.checkpoint events only.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// Prev is the Hash of the previous event (64 zeros for Seq 1).
	Prev string `json:"prev"`
	// Hash is SHA-256(Prev as 32 bytes || Canonical(event)), hex.
	Hash string `json:"hash"`
}

// Checkpoint is a signature over a point of the chain: it proves that the
// holder of the signing key saw the chain end at (Seq, Hash). It lives in
// an audit.checkpoint event, whose own Seq is Checkpoint.Seq+1 and whose
// Prev is Checkpoint.Hash.
type Checkpoint struct {
	// Seq is the signed point's seq: the event before the checkpoint.
	Seq uint64 `json:"seq"`
	// Hash is that event's hash.
	Hash string `json:"hash"`
	// KeyID names the public key: the first 16 hex digits of the SHA-256
	// of its PKIX (SubjectPublicKeyInfo) DER encoding.
	KeyID string `json:"key_id"`
	// Alg is "ed25519" or "ecdsa-sha256".
	Alg string `json:"alg"`
	// Sig is the signature, standard base64: Ed25519 over the message, or
	// ASN.1 ECDSA over SHA-256 of the message (see CheckpointMessage).
	Sig string `json:"sig"`
}

// GenesisHash is the Prev of the first event of a chain.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// canonicalMagic starts every canonical encoding; it names the version of
// the format, so a future format cannot be confused with this one.
const canonicalMagic = "mayfly.audit.v1\n"

// Canonical returns the stable encoding of e that its hash covers: e
// without Hash. The format (version 1) is
//
//	"mayfly.audit.v1\n"
//	then, for each (name, value) pair in ascending byte order of name:
//	    uint32 big-endian len(name) || name || uint32 big-endian len(value) || value
//
// with these pairs, all values UTF-8 text:
//
//	seq, prev, type                  always (seq in decimal)
//	id, time, actor, subject,        when not empty; time is RFC 3339 in UTC
//	entitlement, request_id,         with as many fractional digits as
//	grant_id, lease_id, outcome,     needed (Go's time.RFC3339Nano)
//	how, policy_digest
//	reasons.<i>                      one per element, i = 0, 1, ... in decimal
//	fields.<key>                     one per entry, even with an empty value
//	checkpoint.seq, .hash, .key_id,  all five when Checkpoint is set
//	.alg, .sig
//
// Empty strings and empty lists are left out, so a field added in a later
// version does not change the hash of events that do not use it. Lengths
// make the encoding unambiguous without any escaping.
func Canonical(e *Event) []byte {
	type pair struct{ name, value string }
	ps := make([]pair, 0, 16+len(e.Reasons)+len(e.Fields))
	add := func(name, value string) {
		if value != "" {
			ps = append(ps, pair{name, value})
		}
	}
	ps = append(ps,
		pair{"seq", strconv.FormatUint(e.Seq, 10)},
		pair{"prev", e.Prev},
		pair{"type", string(e.Type)})
	add("id", e.ID)
	if !e.Time.IsZero() {
		add("time", e.Time.UTC().Format(time.RFC3339Nano))
	}
	add("actor", e.Actor)
	add("subject", e.Subject)
	add("entitlement", e.Entitlement)
	add("request_id", e.RequestID)
	add("grant_id", e.GrantID)
	add("lease_id", e.LeaseID)
	add("outcome", e.Outcome)
	add("how", e.How)
	add("policy_digest", e.PolicyDigest)
	for i, r := range e.Reasons {
		ps = append(ps, pair{"reasons." + strconv.Itoa(i), r})
	}
	for k, v := range e.Fields {
		ps = append(ps, pair{"fields." + k, v})
	}
	if c := e.Checkpoint; c != nil {
		ps = append(ps,
			pair{"checkpoint.seq", strconv.FormatUint(c.Seq, 10)},
			pair{"checkpoint.hash", c.Hash},
			pair{"checkpoint.key_id", c.KeyID},
			pair{"checkpoint.alg", c.Alg},
			pair{"checkpoint.sig", c.Sig})
	}
	slices.SortFunc(ps, func(a, b pair) int { return strings.Compare(a.name, b.name) })
	n := len(canonicalMagic)
	for _, p := range ps {
		n += 8 + len(p.name) + len(p.value)
	}
	b := make([]byte, 0, n)
	b = append(b, canonicalMagic...)
	for _, p := range ps {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p.name)))
		b = append(b, p.name...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(p.value)))
		b = append(b, p.value...)
	}
	return b
}

// ComputeHash returns the hash e must carry: hex SHA-256 of Prev decoded
// to 32 bytes followed by Canonical(e). It fails when Prev is not 64
// lower-case hex digits.
func ComputeHash(e *Event) (string, error) {
	prev, err := decodeHash(e.Prev)
	if err != nil {
		return "", fmt.Errorf("audit: prev: %w", err)
	}
	h := sha256.New()
	h.Write(prev[:])
	h.Write(Canonical(e))
	return hex.EncodeToString(h.Sum(nil)), nil
}

// decodeHash decodes a 64-digit lower-case hex hash.
func decodeHash(s string) ([32]byte, error) {
	var out [32]byte
	if len(s) != 64 {
		return out, fmt.Errorf("not a 64-digit hex hash")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return out, fmt.Errorf("not a 64-digit hex hash")
		}
	}
	hex.Decode(out[:], []byte(s))
	return out, nil
}

// validHash reports whether s is 64 lower-case hex digits.
func validHash(s string) bool {
	_, err := decodeHash(s)
	return err == nil
}

// clone returns a copy of e that shares no slice, map or pointer with it.
func (e Event) clone() Event {
	c := e
	c.Reasons = slices.Clone(e.Reasons)
	if e.Fields != nil {
		c.Fields = make(map[string]string, len(e.Fields))
		for k, v := range e.Fields {
			c.Fields[k] = v
		}
	}
	if e.Checkpoint != nil {
		cp := *e.Checkpoint
		c.Checkpoint = &cp
	}
	return c
}

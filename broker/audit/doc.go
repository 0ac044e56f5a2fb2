// Package audit is the broker's evidence: a tamper-evident trail of every
// request, decision, approval, denial, issue, renewal, revocation, review
// and policy reload, linking request → approval → grant → credential →
// revocation, with no secret in it.
//
// # Events
//
// An Event names what happened (Type), who caused it (Actor), whom it is
// about (Subject, Entitlement) and what it links (RequestID, GrantID,
// LeaseID), with an Outcome, a How (why a lease ended: the lease.Reason
// values), reason codes and a few free-text Fields. The constructors
// (RequestCreated, Decision, LeaseIssued, LeaseRevoked, ...) fill them the
// same way every time. No field can hold a credential, and Append refuses
// any free-text value that looks like one (LooksLikeSecret: JWTs, PEM
// blocks, "password=...", bearer tokens, URLs with passwords, well-known
// token prefixes, long random-looking base64).
//
// # The chain
//
// Every event carries its position Seq (from 1, no gaps), the hash of the
// event before it (Prev; 64 zeros for the first) and its own Hash:
//
//	Hash = hex(SHA-256(Prev as 32 bytes || Canonical(event without Hash)))
//
// Canonical is a length-prefixed binary encoding, so no JSON escaping or
// key ordering question can make two verifiers disagree:
//
//	"mayfly.audit.v1\n"
//	then for each (name, value) pair, in ascending byte order of name:
//	    uint32 big-endian len(name) || name || uint32 big-endian len(value) || value
//
// The pairs are seq (decimal), prev and type always; id, time (RFC 3339,
// UTC, Go's RFC3339Nano), actor, subject, entitlement, request_id,
// grant_id, lease_id, outcome, how and policy_digest when not empty;
// reasons.<i> for each reason; fields.<key> for each field; and
// checkpoint.seq, checkpoint.hash, checkpoint.key_id, checkpoint.alg and
// checkpoint.sig on a checkpoint. Leaving empty values out means a field
// added later does not change the hash of older events.
//
// Stored, an event is one JSON object per line (JSONL) with the field
// names seq, id, time, type, actor, subject, entitlement, request_id,
// grant_id, lease_id, outcome, how, reasons, fields, policy_digest,
// checkpoint, prev and hash; a Redis stream entry holds the same JSON in
// its field "e", with the entry id <seq>-0.
//
// # One order across replicas
//
// There is one chain per deployment. A single broker process keeps the
// head in memory (Config.Chain nil) and resumes it from its file at start.
// Replicas share a RedisStreamSink as the Chain: the head (seq, hash and
// the last checkpoint) lives in <prefix>:{audit}:head beside the stream
// <prefix>:{audit}:events, in one cluster slot. Redis Lua has no SHA-256,
// so ordering is an optimistic compare-and-append: a replica seals the
// event on the head it last saw and a Lua script appends it (XADD with id
// <seq>-0, then HSET of the head) only if the head is still that one;
// otherwise the script returns the current head and the replica seals
// again. A replica alone pays one round trip per event; under contention
// one replica wins each round, so the order stays total. So that no
// replica loses round after round, one that has lost three reserves the
// next append (<prefix>:{audit}:reserve, SET NX, 250 ms expiry) and the
// script refuses everyone else until it has appended. Within a process,
// the Log serialises appends, so replicas, not goroutines, contend.
//
// A network error leaves the outcome unknown: Append fails (the broker
// refuses the action), and the event may be in the stream all the same.
// A replica that sees the head go back below a seq it has seen (Redis
// restarted without persistence, a failover to a lagging replica) refuses
// to append: new events would reuse seqs that copies of the trail hold.
// Run Redis with persistence (AOF) for the audit trail.
//
// Sinks receive events after the chain has ordered them: a FileSink or
// StdoutSink of a replica sharing a Redis chain holds that replica's
// events only (with gaps in seq); the Redis stream is the whole trail.
//
// # Checkpoints
//
// Every CheckpointEvery events, every CheckpointInterval (from Run), and
// at Close, the Log writes an audit.checkpoint event whose Checkpoint
// signs (seq, hash) of the event before it with Config.Signer (Ed25519, or
// ECDSA over SHA-256; the broker's own key), over the message
//
//	"mayfly.audit.checkpoint.v1\n" || uint64 big-endian seq || 32-byte hash
//
// The hash chain shows any change to part of the trail; the signatures
// show a rewrite of the whole of it (every hash recomputed), which the
// chain alone cannot: whoever can write Redis or the file cannot sign.
// Events after the last checkpoint are covered by no signature yet
// (Report.Unsealed).
//
// # Verifying offline
//
// Verify reads a trail (JSONLFile, JSONLBytes, a RedisStreamSink),
// recomputes every hash and link, checks every checkpoint signature with
// the given public keys, and reports the first problem: modified (content
// or rehashed event), deleted (a gap, a prefix removed without a trim
// record, a tail shorter than the Redis head), inserted (a duplicate or an
// extra seq), reordered, malformed, or a bad checkpoint:
//
//	rep, err := audit.Verify(ctx, audit.JSONLFile{Path: "audit.jsonl"}, brokerPublicKey)
//	if err != nil { ... } // could not read
//	if !rep.OK() { fmt.Println(rep.Problem) }
//
// Nothing else is needed: the format above is enough to write a verifier
// in another language.
//
// # Fail closed
//
// The broker audits before it acts and refuses what it cannot audit.
// Append returns nil only when the chain and every Required sink hold the
// event. When a Required sink fails, Append fails, the sink gets the event
// before any later one, and every Append fails until it has (so no sink
// silently misses an event). A Buffered sink may fall behind: its events
// wait in order in a bounded buffer and are retried with backoff; when
// the buffer is full, Append fails too. Nothing is ever dropped.
//
// A Redis stream may be trimmed (RedisConfig.MaxLen), but only a prefix
// that verifies and ends just before a signed checkpoint, and only after
// an audit.trimmed event records it; Verify then accepts a trail that
// starts at that checkpoint and reports TrimmedThrough.
//
// # Usage
//
//	rs, _ := audit.NewRedisStreamSink(rdb, audit.RedisConfig{})
//	file, _ := audit.NewFileSink(audit.FileConfig{Path: "/var/log/mayfly/audit.jsonl"})
//	log, err := audit.NewLog(ctx, audit.Config{
//		Chain:  rs,
//		Sinks:  []audit.SinkConfig{{Sink: file}, {Sink: &audit.StdoutSink{}, Mode: audit.Buffered}},
//		Signer: brokerKey,
//		Actor:  "spiffe://example.org/mayflyd",
//	})
//	go log.Run(ctx)
//	if _, err := log.Append(ctx, audit.LeaseIssued(l, cred)); err != nil {
//		// revoke the credential and refuse: the issue could not be audited
//	}
//
// Query filters a trail; Lineage builds the tree from a subject,
// entitlement, request or grant to every lease under it and how and when
// each ended, and Node.WriteText draws it for `mayfly lineage`.
package audit

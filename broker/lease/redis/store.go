package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/internal/redisbatch"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// Defaults for Options.
const (
	// DefaultShards is the number of shards when Options.Shards is 0.
	DefaultShards = 16
	// DefaultPrefix starts every key when Options.Prefix is "".
	DefaultPrefix = "mf"
	// DefaultRetain is how long a terminal lease is kept when
	// Options.Retain is 0.
	DefaultRetain = 7 * 24 * time.Hour
	// DefaultWaitTimeout bounds WAIT when Options.WaitReplicas is set and
	// Options.WaitTimeout is 0.
	DefaultWaitTimeout = time.Second
)

const (
	// defaultPageSize is List's page size when Query.PageSize is 0.
	defaultPageSize = 100
	// maxPageSize caps Query.PageSize.
	maxPageSize = 1000
	// maxShards: more shards than cluster slots spread nothing further.
	maxShards = 16384
	// matchBatch is how many index entries one RevokeMatching script
	// examines.
	matchBatch = 256
	// claimChunk is the most leases one claim script takes: a few
	// milliseconds of Redis, which runs nothing else meanwhile, however
	// large the revoker's batch (it takes 32 at a time while its broker
	// serves issuance: revoker.Config.Busy).
	claimChunk = 128
	// listBudget is how many index entries one List script examines.
	listBudget = 1000
	// reserveTTL is how long a Create holds a request id before its lease
	// is written and the reservation confirmed; a Create that crashed in
	// between frees the request id after this.
	reserveTTL = 10 * time.Second
	// requestWait is how long a Create waits for another Create of the
	// same request id that is between reservation and confirmation.
	requestWait = 2 * time.Second
	// cleanupTimeout bounds a compensating write after a failed Create.
	cleanupTimeout = time.Second
)

// Options configure a Store. The zero value is valid: 16 shards, prefix
// "mf", terminal leases kept 7 days, no WAIT, no data-loss callback.
type Options struct {
	// Shards is how many shards (hash tags) leases are spread over; a
	// lease's shard is derived from its id. Default 16. Choose it once:
	// changing it strands the leases written under the old count. With
	// Redis Cluster it should be a few times the number of primaries, so
	// that every primary holds some shards.
	Shards int
	// Prefix starts every key (default "mf"). It must not contain '{' or
	// '}', which would change the hash tag. Several stores can share one
	// Redis under different prefixes.
	Prefix string
	// Retain is how long a terminal (revoked or irrevocable) lease stays
	// readable: the first Claim in its shard at or after Outcome.At+Retain
	// (with room left in its batch) removes it and its index entries.
	// Default 7 days.
	Retain time.Duration
	// WaitReplicas, if above 0, makes every write wait (WAIT) until that
	// many replicas acknowledged it. If fewer do within WaitTimeout, the
	// call returns an error, although the write may still have happened
	// (on the primary, and on some replicas): callers treat it as the
	// store being unavailable, mint nothing, and the pending deadline and
	// due times keep every lease that was written ending on time. Only
	// with a *redis.Client (single node or Sentinel failover) or a
	// *redis.ClusterClient.
	WaitReplicas int
	// WaitTimeout bounds each WAIT (default 1s).
	WaitTimeout time.Duration
	// OnDataLoss, if set, is called when the store notices that Redis lost
	// data it had acknowledged: a shard's marker (a random epoch in the
	// shard's meta hash) vanished or was replaced, as after FLUSHALL, a
	// restart without persistence, a failover to an empty replica, or
	// eviction. The store checks in every Create (its shard) and every
	// Claim (each shard it visits: every shard, in a revoker pass that
	// does not fill its batch), and in CheckDataLoss; it re-creates a
	// missing marker and carries on. Leases that were lost are credentials
	// nobody will revoke early (each still ends at its native expiry).
	//
	// It is called once per store call that noticed, with every shard that
	// call found lost: detail names them and the epochs seen, and holds no
	// lease data. It runs on the goroutine of that call, after the call's
	// work, so it must be quick and safe for concurrent use. The broker is
	// to feed it to the counter mayfly_lease_store_data_loss_total (alert
	// on any increase). A store only knows the markers it has seen: one
	// that starts on an already emptied Redis has nothing to compare with
	// and reports nothing (unless a shard holds leases without its
	// marker).
	OnDataLoss func(detail string)
}

// Store is a lease.Store on Redis or Redis Cluster. It is safe for
// concurrent use; it holds no state between calls but the client, so any
// number of broker replicas can share one Redis.
type Store struct {
	c      goredis.UniversalClient
	batch  *redisbatch.Batcher // the scripts of concurrent calls, pipelined (without WaitReplicas)
	opts   Options
	shards []keys

	mu    sync.Mutex
	marks []string // per shard: the epoch of the marker last seen ("" until seen)
}

var _ lease.Store = (*Store)(nil)

// New returns a Store on client, a *redis.Client (single node, or Sentinel
// failover) or a *redis.ClusterClient; a *redis.Ring is accepted without
// WaitReplicas. New does not contact Redis. Use a client with
// ContextTimeoutEnabled so that a call gives up at its context's deadline
// when Redis does not answer.
func New(client goredis.UniversalClient, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redis: nil client")
	}
	switch {
	case opts.Shards < 0 || opts.Shards > maxShards:
		return nil, fmt.Errorf("redis: Shards %d is not between 1 and %d", opts.Shards, maxShards)
	case strings.ContainsAny(opts.Prefix, "{}"):
		return nil, fmt.Errorf("redis: Prefix %q contains '{' or '}'", opts.Prefix)
	case opts.Retain < 0:
		return nil, fmt.Errorf("redis: Retain %s is negative", opts.Retain)
	case opts.WaitReplicas < 0:
		return nil, fmt.Errorf("redis: WaitReplicas %d is negative", opts.WaitReplicas)
	case opts.WaitTimeout < 0:
		return nil, fmt.Errorf("redis: WaitTimeout %s is negative", opts.WaitTimeout)
	}
	if opts.Shards == 0 {
		opts.Shards = DefaultShards
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Retain == 0 {
		opts.Retain = DefaultRetain
	}
	if opts.Retain < time.Millisecond {
		return nil, fmt.Errorf("redis: Retain %s is under a millisecond", opts.Retain)
	}
	if opts.WaitReplicas > 0 {
		if opts.WaitTimeout == 0 {
			opts.WaitTimeout = DefaultWaitTimeout
		}
		switch client.(type) {
		case *goredis.Client, *goredis.ClusterClient:
		default:
			return nil, fmt.Errorf("redis: WaitReplicas needs a *redis.Client or *redis.ClusterClient, not %T", client)
		}
	}
	s := &Store{c: client, batch: redisbatch.New(client, 0, 0), opts: opts, shards: make([]keys, opts.Shards), marks: make([]string, opts.Shards)}
	for i := range s.shards {
		s.shards[i] = keys{shardPrefix(opts.Prefix, i)}
	}
	return s, nil
}

// Options returns the options in force, defaults filled in (OnDataLoss as
// given).
func (s *Store) Options() Options { return s.opts }

// Shard returns the shard a lease id lives in.
func (s *Store) Shard(id string) int { return shardOf(id, len(s.shards)) }

func (s *Store) keysOf(id string) keys { return s.shards[s.Shard(id)] }

// createKeys are the keys the create script names.
func (k keys) createKeys(id string) []string {
	return []string{k.record(id), k.pending(), k.bySubject(), k.byEntitlement(), k.byGrant(), k.meta()}
}

// requestKey is where the lease id of (subject, request id) is kept.
func (s *Store) requestKey(subject, requestID string) string {
	digest, h := requestDigest(subject, requestID)
	return s.shards[h%uint32(len(s.shards))].p + "req:" + digest
}

// run runs a write script on the node that owns keys[0] and, with
// WaitReplicas, WAITs on the same connection for the replicas. Without
// WaitReplicas the scripts of concurrent calls share pipelines
// (redisbatch): one round trip for many issuances.
func (s *Store) run(ctx context.Context, sc *goredis.Script, keys []string, args ...any) (any, error) {
	if s.opts.WaitReplicas == 0 {
		return s.batch.Run(ctx, sc, keys, args...)
	}
	var node *goredis.Client
	switch c := s.c.(type) {
	case *goredis.Client:
		node = c
	case *goredis.ClusterClient:
		n, err := c.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		node = n
	}
	// WAIT counts the replicas that acknowledged this connection's writes,
	// so the script and the WAIT share one connection.
	conn := node.Conn()
	defer conn.Close()
	res, err := sc.Run(ctx, conn, keys, args...).Result()
	if err != nil {
		return nil, err // refused (nothing written), or no answer: no WAIT either way
	}
	n, err := conn.Wait(ctx, s.opts.WaitReplicas, s.opts.WaitTimeout).Result()
	if err != nil {
		return nil, fmt.Errorf("WAIT after the write (which may have happened): %w", err)
	}
	if n < int64(s.opts.WaitReplicas) {
		return nil, fmt.Errorf("WAIT: %d of %d replicas acknowledged the write within %s (it may still have happened)",
			n, s.opts.WaitReplicas, s.opts.WaitTimeout)
	}
	return res, nil
}

// fail turns a script's error reply into a lease sentinel where it is one,
// and wraps anything else (Redis unreachable, OOM, READONLY, a key of the
// wrong type) as a plain store error.
func fail(op, id string, err error) error {
	var re goredis.Error
	if errors.As(err, &re) {
		code, rest, _ := strings.Cut(strings.TrimPrefix(re.Error(), "ERR "), " ")
		switch code {
		case "MFNOTFOUND":
			return fmt.Errorf("redis: lease %s: %w", id, lease.ErrNotFound)
		case "MFEXISTS":
			return fmt.Errorf("redis: lease %s: %w", id, lease.ErrExists)
		case "MFSTATE":
			return fmt.Errorf("redis: lease %s is %s: %w", id, codeStates[rest], lease.ErrWrongState)
		case "MFREVOKED":
			return fmt.Errorf("redis: lease %s: revocation asked for (%s): %w", id, rest, lease.ErrWrongState)
		case "MFHARDEND":
			return fmt.Errorf("redis: lease %s: %w", id, lease.ErrPastHardEnd)
		case "MFFENCED":
			return fmt.Errorf("redis: lease %s: fence now %s: %w", id, rest, lease.ErrFenced)
		case "MFBAD":
			return fmt.Errorf("redis: %s %s: %s", op, id, rest)
		}
	}
	return fmt.Errorf("redis: %s %s: %w", op, id, err)
}

func live(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

func validate(l *lease.Lease) error {
	if l == nil {
		return errors.New("redis: nil lease")
	}
	var missing string
	switch {
	case l.ID == "":
		missing = "ID"
	case l.Subject == "":
		missing = "Subject"
	case l.Entitlement == "":
		missing = "Entitlement"
	case l.Issuer == "":
		missing = "Issuer"
	case l.IssuedAt.IsZero():
		missing = "IssuedAt"
	case l.ExpiresAt.IsZero():
		missing = "ExpiresAt"
	case l.HardEnd.IsZero():
		missing = "HardEnd"
	case l.DueAt.IsZero():
		missing = "DueAt"
	case strings.ContainsRune(l.Subject+l.Entitlement+l.GrantID, 0):
		return fmt.Errorf("redis: lease %q: subject, entitlement or grant contains a NUL byte", l.ID)
	default:
		for _, t := range []struct {
			what string
			t    time.Time
		}{{"IssuedAt", l.IssuedAt}, {"ExpiresAt", l.ExpiresAt}, {"HardEnd", l.HardEnd}, {"DueAt", l.DueAt},
			{"RevokeRequestedAt", l.RevokeRequestedAt}, {"RevokedAt", l.RevokedAt}} {
			if err := checkTime(t.what, t.t); err != nil {
				return fmt.Errorf("redis: lease %q: %w", l.ID, err)
			}
		}
		return nil
	}
	return fmt.Errorf("redis: lease %q has no %s", l.ID, missing)
}

// Create records a new pending lease. See lease.Store.
//
// With a RequestID, the request key of (Subject, RequestID) is reserved
// before the lease is written (SET if absent, with a short TTL), and
// confirmed after, so two concurrent Creates of one request id, in any
// shards, write at most one lease: the loser waits for the winner's lease
// and returns it with lease.ErrDuplicate. A Create that fails after
// reserving releases the reservation; one that crashes leaves it to
// expire. The request id is remembered until HardEnd-IssuedAt+Retain
// after the Create.
func (s *Store) Create(ctx context.Context, l *lease.Lease) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if err := validate(l); err != nil {
		return nil, err
	}
	n := l.Clone()
	n.State = lease.StatePending
	normalize(n)
	if n.RequestID == "" {
		if err := s.write(ctx, n); err != nil {
			return nil, err
		}
		return n.Clone(), nil
	}
	return s.createOnce(ctx, n)
}

// write runs the create script for n.
func (s *Store) write(ctx context.Context, n *lease.Lease) error {
	shard := s.Shard(n.ID)
	k := s.shards[shard]
	gtag := ""
	if n.GrantID != "" {
		gtag = tag(n.GrantID)
	}
	res, err := s.run(ctx, createScript, k.createKeys(n.ID), n.ID, pack(n), millis(n.DueAt), k.p, newEpoch(), tag(n.Subject), gtag)
	if err != nil {
		return fail("create lease", n.ID, err)
	}
	if d := s.observe(shard, res); d != "" {
		s.report([]string{d})
	}
	return nil
}

// createOnce is Create of a lease with a request id.
func (s *Store) createOnce(ctx context.Context, n *lease.Lease) (*lease.Lease, error) {
	rk := s.requestKey(n.Subject, n.RequestID)
	mine := "?" + n.ID
	replace := ""
	delay, waited := time.Millisecond, time.Duration(0)
	for tries := 0; ; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("redis: lease %s: request id %q of %s: no progress", n.ID, n.RequestID, n.Subject)
		}
		res, err := s.run(ctx, reserveScript, []string{rk}, mine, reserveTTL.Milliseconds(), replace)
		if err != nil {
			return nil, fail("reserve request id for lease", n.ID, err)
		}
		v, _ := res.(string)
		if v == "" {
			break // reserved
		}
		if other, ok := strings.CutPrefix(v, "?"); ok {
			// Another Create of this request id is between its reservation
			// and its confirmation.
			if waited >= requestWait {
				return nil, fmt.Errorf("redis: lease %s: request id %q of %s is held by lease %s, whose Create has not finished",
					n.ID, n.RequestID, n.Subject, other)
			}
			if err := sleep(ctx, delay); err != nil {
				return nil, err
			}
			waited += delay
			delay = min(2*delay, 50*time.Millisecond)
			replace = ""
			continue
		}
		prev, err := s.duplicate(ctx, n, v)
		if errors.Is(err, lease.ErrNotFound) {
			replace = v // that lease was forgotten (Retain passed): take the request id over
			continue
		}
		return prev, err
	}
	if err := s.write(ctx, n); err != nil {
		s.cleanup(ctx, releaseScript, []string{rk}, mine) // else it lapses in reserveTTL
		return nil, err
	}
	if testHookAfterWrite != nil {
		testHookAfterWrite(rk)
	}
	ttl := max(n.HardEnd.Sub(n.IssuedAt), 0) + s.opts.Retain + reserveTTL
	res, err := s.run(ctx, confirmScript, []string{rk}, mine, n.ID, ttl.Milliseconds())
	if err != nil {
		// The lease stays pending and is reaped at its deadline; nothing
		// was handed out for it.
		return nil, fail("confirm request id for lease", n.ID, err)
	}
	if v, _ := res.(string); v != "" {
		// The reservation lapsed while this Create was slow and another
		// Create took the request id: undo this lease, report the other.
		k := s.keysOf(n.ID)
		s.cleanup(ctx, undoScript, []string{k.record(n.ID), k.pending()}, n.ID, k.p) // else it is reaped at its deadline
		if v == "-" || strings.HasPrefix(v, "?") {
			return nil, fmt.Errorf("redis: lease %s: the reservation of request id %q lapsed before the lease was written", n.ID, n.RequestID)
		}
		prev, err := s.duplicate(ctx, n, v)
		if errors.Is(err, lease.ErrNotFound) {
			return nil, fmt.Errorf("redis: lease %s: the reservation of request id %q lapsed before the lease was written", n.ID, n.RequestID)
		}
		return prev, err
	}
	return n.Clone(), nil
}

// cleanup runs a best-effort compensating script, even if ctx is done, for
// at most cleanupTimeout; its failure leaves something that expires or is
// reaped by itself.
func (s *Store) cleanup(ctx context.Context, sc *goredis.Script, keys []string, args ...any) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	s.run(ctx, sc, keys, args...)
}

// testHookAfterWrite, if set by a test, runs between a Create's write and
// its confirmation of the request id.
var testHookAfterWrite func(requestKey string)

// duplicate returns lease id, which holds n's request id, with
// ErrDuplicate; ErrNotFound if it is gone.
func (s *Store) duplicate(ctx context.Context, n *lease.Lease, id string) (*lease.Lease, error) {
	prev, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if prev.Subject != n.Subject || prev.RequestID != n.RequestID {
		return nil, fmt.Errorf("redis: lease %s: request key of %q points at lease %s of another request", n.ID, n.RequestID, id)
	}
	return prev, fmt.Errorf("redis: request id of lease %s is used by lease %s: %w", n.ID, id, lease.ErrDuplicate)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("redis: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

// Bind records the backend handle of a pending lease. See lease.Store.
func (s *Store) Bind(ctx context.Context, id, ref string) error {
	if err := live(ctx); err != nil {
		return err
	}
	k := s.keysOf(id)
	if _, err := s.run(ctx, bindScript, []string{k.record(id)}, id, ref, k.p); err != nil {
		return fail("bind lease", id, err)
	}
	return nil
}

// Activate moves a pending lease to active. See lease.Store.
func (s *Store) Activate(ctx context.Context, id, ref string) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	k := s.keysOf(id)
	res, err := s.run(ctx, activateScript, []string{k.record(id), k.pending(), k.due()}, id, ref, k.p)
	if err != nil {
		return nil, fail("activate lease", id, err)
	}
	return unpackReply(id, res)
}

// Get returns the lease. See lease.Store.
func (s *Store) Get(ctx context.Context, id string) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	k := s.keysOf(id)
	res, err := s.batch.Run(ctx, getScript, []string{k.record(id)}, id, k.p)
	if errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("redis: lease %s: %w", id, lease.ErrNotFound)
	}
	if err != nil {
		return nil, fail("get lease", id, err)
	}
	return unpackReply(id, res)
}

// Renew moves the expiry of an active lease. See lease.Store.
func (s *Store) Renew(ctx context.Context, id string, expiresAt time.Time) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if err := checkTime("expiry", expiresAt); err != nil {
		return nil, err
	}
	k := s.keysOf(id)
	res, err := s.run(ctx, renewScript, []string{k.record(id), k.due()}, id, millis(expiresAt), k.p)
	if err != nil {
		return nil, fail("renew lease", id, err)
	}
	return unpackReply(id, res)
}

// Revoke asks for revocation of one lease. See lease.Store.
func (s *Store) Revoke(ctx context.Context, id string, reason lease.Reason, at time.Time) (*lease.Lease, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if reason == "" {
		return nil, errors.New("redis: revoke without a reason")
	}
	if err := checkTime("revocation time", at); err != nil {
		return nil, err
	}
	k := s.keysOf(id)
	res, err := s.run(ctx, revokeScript, []string{k.record(id), k.pending(), k.due()}, id, string(reason), millis(at), k.p)
	if err != nil {
		return nil, fail("revoke lease", id, err)
	}
	pair, ok := res.([]any)
	if !ok || len(pair) != 2 {
		return nil, fmt.Errorf("redis: revoke lease %s: unexpected reply %v", id, res)
	}
	return unpackReply(id, pair[1])
}

// RevokeMatching asks for revocation of every pending or active lease the
// selector matches, shard by shard, a bounded batch per script. See
// lease.Store. On an error it returns how many it changed before.
func (s *Store) RevokeMatching(ctx context.Context, sel lease.Selector, reason lease.Reason, at time.Time) (int, error) {
	if err := live(ctx); err != nil {
		return 0, err
	}
	if reason == "" {
		return 0, errors.New("redis: revoke without a reason")
	}
	if err := checkTime("revocation time", at); err != nil {
		return 0, err
	}
	var (
		set        int
		what, name string
		kind       string
		index      func(keys) string
	)
	if sel.Subject != "" {
		set, what, name, kind, index = set+1, "subject "+sel.Subject, sel.Subject, "s", keys.bySubject
	}
	if sel.Entitlement != "" {
		set, what, name, kind, index = set+1, "entitlement "+sel.Entitlement, sel.Entitlement, "e", keys.byEntitlement
	}
	if sel.GrantID != "" {
		set, what, name, kind, index = set+1, "grant "+sel.GrantID, sel.GrantID, "k", keys.byGrant
	}
	if set != 1 {
		return 0, fmt.Errorf("redis: selector must set exactly one of Subject, Entitlement, GrantID (has %d)", set)
	}
	atMs := millis(at)
	n := 0
	for _, k := range s.shards {
		cursor := ""
		for {
			res, err := s.run(ctx, revokeMatchingScript, []string{index(k), k.pending(), k.due(), k.meta()},
				k.p, string(reason), atMs, cursor, matchBatch, kind, name)
			if err != nil {
				return n, fail("revoke leases of", what, err)
			}
			r, ok := res.([]any)
			if !ok || len(r) != 3 {
				return n, fmt.Errorf("redis: revoke leases of %s: unexpected reply %v", what, res)
			}
			changed, _ := r[0].(int64)
			last, _ := r[1].(string)
			examined, _ := r[2].(int64)
			n += int(changed)
			if examined < matchBatch {
				break
			}
			cursor = last
		}
	}
	return n, nil
}

// Claim takes up to max due leases. See lease.Store.
//
// It visits the shards starting at a random one, so replicas claiming at
// once spread out, and runs one script per shard that claims at most the
// number still wanted, earliest first (a lapsed claim counts as due at its
// deadline). A claimed lease with no RevokeReason gets ReasonExpired
// (active) or ReasonPendingTimeout with RevokeRequestedAt = its pending
// deadline (pending). With room left, the same script sweeps terminal
// leases whose retention has passed. If a shard fails after others gave
// claims, those claims are returned with the error: they are valid, and if
// dropped they come back at their deadline.
func (s *Store) Claim(ctx context.Context, now time.Time, max int, hold time.Duration) ([]lease.Claim, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	if hold < time.Millisecond {
		return nil, fmt.Errorf("redis: claim hold %s is under a millisecond", hold)
	}
	if max <= 0 {
		return nil, nil
	}
	if err := checkTime("claim time", now.Add(hold)); err != nil {
		return nil, err
	}
	nowMs := now.UnixMilli()
	deadline := ms(now.Add(hold))
	dlMs := deadline.UnixMilli()
	if dlMs <= nowMs {
		dlMs = nowMs + 1
		deadline = time.UnixMilli(dlMs).UTC()
	}
	var (
		out  []lease.Claim
		lost []string
	)
	defer func() { s.report(lost) }()
	start := rand.IntN(len(s.shards))
	for i := range s.shards {
		shard := (start + i) % len(s.shards)
		k := s.shards[shard]
		// A shard in scripts of at most claimChunk leases: Redis runs
		// nothing else during a script.
		for len(out) < max {
			want := min(max-len(out), claimChunk)
			res, err := s.run(ctx, claimScript, []string{k.due(), k.pending(), k.claimed(), k.gone(), k.meta()},
				k.p, nowMs, dlMs, want, string(lease.ReasonExpired), string(lease.ReasonPendingTimeout), newEpoch())
			if err != nil {
				return out, fail("claim in shard", strconv.Itoa(shard), err)
			}
			r, ok := res.([]any)
			if !ok || len(r) != 2 {
				return out, fmt.Errorf("redis: claim in shard %d: unexpected reply %T", shard, res)
			}
			if d := s.observe(shard, r[0]); d != "" {
				lost = append(lost, d)
			}
			flat, _ := r[1].([]any)
			for j := 0; j+1 < len(flat); j += 2 {
				id, _ := flat[j].(string)
				l, err := unpackReply(id, flat[j+1])
				if err != nil {
					return out, err
				}
				out = append(out, lease.Claim{Lease: l, Fence: l.Fence, Deadline: deadline})
			}
			if len(flat)/2 < want {
				break // the shard has no more due now
			}
		}
		if len(out) >= max {
			break
		}
	}
	return out, nil
}

// Finish records a claim's outcome. See lease.Store.
//
// A revoked or irrevocable lease is queued to be swept at
// Outcome.At+Retain: the first Claim in its shard after that (with room
// left) removes it and its index entries. A claim that was already
// finished cannot be finished again (ErrWrongState, or ErrFenced once
// claimed again).
func (s *Store) Finish(ctx context.Context, c lease.Claim, out lease.Outcome) error {
	if err := live(ctx); err != nil {
		return err
	}
	if c.Lease == nil {
		return errors.New("redis: claim without a lease")
	}
	retry := !out.Revoked && !out.Irrevocable
	switch {
	case out.Revoked && out.Irrevocable:
		return errors.New("redis: outcome is both revoked and irrevocable")
	case retry && out.RetryAt.IsZero():
		return errors.New("redis: retry outcome has no RetryAt")
	case !retry && out.At.IsZero():
		return errors.New("redis: outcome has no At")
	}
	code, at, retryAt, sweepAt := "q", "0", "0", "0"
	switch {
	case out.Revoked:
		code = "r"
	case out.Irrevocable:
		code = "i"
	}
	if retry {
		if err := checkTime("retry time", out.RetryAt); err != nil {
			return err
		}
		retryAt = millis(out.RetryAt)
	} else {
		if err := checkTime("outcome time", out.At.Add(s.opts.Retain)); err != nil {
			return err
		}
		at, sweepAt = millis(out.At), millis(out.At.Add(s.opts.Retain))
	}
	id := c.Lease.ID
	k := s.keysOf(id)
	_, err := s.run(ctx, finishScript, []string{k.record(id), k.claimed(), k.gone(), k.pending(), k.due()},
		id, c.Fence, code, at, retryAt, out.Err, sweepAt, k.p)
	if err != nil {
		return fail("finish lease", id, err)
	}
	return nil
}

// NextDue returns the earliest due time or claim deadline over all shards.
// See lease.Store.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	if err := live(ctx); err != nil {
		return time.Time{}, false, err
	}
	cmds, err := s.evalEach(ctx, nextDueScript, len(s.shards), func(i int) ([]string, []any) {
		return []string{s.shards[i].due(), s.shards[i].pending(), s.shards[i].claimed()}, nil
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("redis: next due: %w", err)
	}
	var (
		best  int64
		found bool
	)
	for _, c := range cmds {
		v, ok := c.Val().(string)
		if !ok {
			continue // none in this shard
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("redis: next due: %q", v)
		}
		if !found || n < best {
			best, found = n, true
		}
	}
	if !found {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(best).UTC(), true, nil
}

// List returns the leases matching q in ascending id order. See
// lease.Store.
//
// In every shard it walks the index the filters allow that looks smallest
// (by grant, subject or entitlement; without filters, the entitlement
// index, merging the ranges of the shard's entitlements), in id order
// from the page token, and merges: each shard contributes up to
// PageSize+1 matches, so the page is exact and a token is returned
// exactly when more matches follow. The token is the last id of the page.
func (s *Store) List(ctx context.Context, q lease.Query) ([]*lease.Lease, string, error) {
	if err := live(ctx); err != nil {
		return nil, "", err
	}
	size := q.PageSize
	switch {
	case size < 0:
		return nil, "", fmt.Errorf("redis: negative page size %d", size)
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	var states strings.Builder
	for _, st := range q.States {
		c, ok := stateCodes[st]
		if !ok {
			return nil, "", fmt.Errorf("redis: unknown state %q", st)
		}
		states.WriteString(c)
	}
	type shardPage struct {
		k      keys
		cursor string
		done   bool
		got    []*lease.Lease
	}
	want := size + 1
	pages := make([]*shardPage, len(s.shards))
	for i, k := range s.shards {
		pages[i] = &shardPage{k: k, cursor: q.PageToken}
	}
	for {
		var todo []*shardPage
		for _, p := range pages {
			if !p.done && len(p.got) < want {
				todo = append(todo, p)
			}
		}
		if len(todo) == 0 {
			break
		}
		cmds, err := s.evalEach(ctx, listScript, len(todo), func(i int) ([]string, []any) {
			p := todo[i]
			return []string{p.k.bySubject(), p.k.byEntitlement(), p.k.byGrant(), p.k.meta()},
				[]any{p.k.p, p.cursor, want - len(p.got), listBudget,
					q.Subject, q.Entitlement, q.GrantID, states.String()}
		})
		if err != nil {
			return nil, "", fmt.Errorf("redis: list: %w", err)
		}
		for i, p := range todo {
			r, ok := cmds[i].Val().([]any)
			if !ok || len(r) != 3 {
				return nil, "", fmt.Errorf("redis: list: unexpected reply %v", cmds[i].Val())
			}
			p.cursor, _ = r[0].(string)
			done, _ := r[1].(int64)
			p.done = done == 1
			flat, _ := r[2].([]any)
			for j := 0; j+1 < len(flat); j += 2 {
				id, _ := flat[j].(string)
				l, err := unpackReply(id, flat[j+1])
				if err != nil {
					return nil, "", err
				}
				p.got = append(p.got, l)
			}
		}
	}
	var all []*lease.Lease
	for _, p := range pages {
		all = append(all, p.got...)
	}
	slices.SortFunc(all, func(a, b *lease.Lease) int { return strings.Compare(a.ID, b.ID) })
	if len(all) > size {
		return all[:size], all[size-1].ID, nil
	}
	return all, "", nil
}

// evalEach runs a script n times in one pipeline (split by node in a
// cluster), loading the script once if a node does not have it. A nil
// reply is not an error. Used for reads (and the shard marker, which is
// not a lease: no WAIT).
func (s *Store) evalEach(ctx context.Context, sc *goredis.Script, n int, call func(i int) ([]string, []any)) ([]*goredis.Cmd, error) {
	for attempt := 0; ; attempt++ {
		pipe := s.c.Pipeline()
		cmds := make([]*goredis.Cmd, n)
		for i := range n {
			ks, args := call(i)
			cmds[i] = sc.EvalSha(ctx, pipe, ks, args...)
		}
		pipe.Exec(ctx)
		var err error
		noScript := false
		for _, c := range cmds {
			if e := c.Err(); e != nil && e != goredis.Nil {
				if goredis.HasErrorPrefix(e, "NOSCRIPT") {
					noScript = true
				} else if err == nil {
					err = e
				}
			}
		}
		if noScript && attempt == 0 {
			if err := sc.Load(ctx, s.c).Err(); err != nil {
				return nil, err
			}
			continue
		}
		if err == nil && noScript {
			err = errors.New("script not loaded")
		}
		if err != nil {
			return nil, mapList(err)
		}
		return cmds, nil
	}
}

// mapList renders a script error of List without its MF code.
func mapList(err error) error {
	var re goredis.Error
	if errors.As(err, &re) {
		if rest, ok := strings.CutPrefix(re.Error(), "MFBAD "); ok {
			return errors.New(rest)
		}
	}
	return err
}

// CheckDataLoss reads every shard's marker now (one pipeline), creates the
// missing ones, and reports through Options.OnDataLoss what it finds lost
// (see there). Claim does the same check for the shards it visits, so a
// broker whose revoker runs needs no other call; this is for a health
// check, or a store that does not claim.
func (s *Store) CheckDataLoss(ctx context.Context) error {
	if err := live(ctx); err != nil {
		return err
	}
	cmds, err := s.evalEach(ctx, markerScript, len(s.shards), func(i int) ([]string, []any) {
		return []string{s.shards[i].meta()}, []any{s.shards[i].p, newEpoch()}
	})
	if err != nil {
		return fmt.Errorf("redis: check data loss: %w", err)
	}
	var lost []string
	for i, c := range cmds {
		if d := s.observe(i, c.Val()); d != "" {
			lost = append(lost, d)
		}
	}
	s.report(lost)
	return nil
}

// newEpoch is a fresh random marker value, offered to every script that may
// have to create a shard's marker.
func newEpoch() string { return fmt.Sprintf("%016x", rand.Uint64()) }

// observe compares a shard's marker as a script returned it ({epoch, 0,
// held}) with what the store knew, remembers it, and returns what was
// lost ("" if nothing).
func (s *Store) observe(shard int, v any) string {
	r, ok := v.([]any)
	if !ok || len(r) != 3 {
		return ""
	}
	epoch, _ := r[0].(string)
	held, _ := r[2].(int64)
	if epoch == "" {
		return ""
	}
	key := s.shards[shard].meta()
	var detail string
	s.mu.Lock()
	switch known := s.marks[shard]; {
	case known == "":
		if held == 1 {
			detail = fmt.Sprintf("shard %d: the marker in %s was missing while the shard still holds leases (new epoch %s)",
				shard, key, epoch)
		}
	case epoch != known:
		detail = fmt.Sprintf("shard %d: the marker in %s changed from epoch %s to %s", shard, key, known, epoch)
	}
	s.marks[shard] = epoch
	s.mu.Unlock()
	return detail
}

// report passes what one store call found lost to OnDataLoss, once.
func (s *Store) report(details []string) {
	if len(details) == 0 || s.opts.OnDataLoss == nil {
		return
	}
	s.opts.OnDataLoss("redis lost lease data (FLUSHALL, a restart without persistence, a failover to an empty " +
		"replica, or eviction): " + strings.Join(details, "; "))
}

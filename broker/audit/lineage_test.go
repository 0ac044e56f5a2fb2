package audit

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

type step struct {
	min int
	f   func() Event
}

// scenario records a day of broker life through the constructors: alice
// asks for db-admin, bob and carol approve, two leases are minted under
// the grant (one expires, one is killed); alice also holds a standing CI
// grant shared with a workload whose lease becomes irrevocable; bob's
// request is denied; alice is denied prod-root.
func scenario(t *testing.T) *fileLog {
	t.Helper()
	fl := newFileLog(t, func(c *Config) { c.CheckpointEvery = 5 })
	ctx := context.Background()
	at := func(min int) time.Time {
		return time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC).Add(time.Duration(min) * time.Minute)
	}
	mk := func(id, subject, grant string, issued, expires int) *lease.Lease {
		return &lease.Lease{ID: id, Subject: subject, Entitlement: "db-admin", GrantID: grant, Issuer: "jwt",
			IssuedAt: at(issued), ExpiresAt: at(expires), HardEnd: at(expires + 60), Renewable: true, Revocable: true}
	}
	ci := func(id, subject string, issued int) *lease.Lease {
		l := mk(id, subject, "g-ci", issued, issued+15)
		l.Entitlement = "ci-deploy"
		return l
	}
	l1, l2 := mk("01jlease00000000000000001a", "user:alice", "g-1", 7, 67), mk("01jlease00000000000000002b", "user:alice", "g-1", 30, 90)
	l3, l4 := ci("01jlease00000000000000003c", "user:alice", 40), ci("01jlease00000000000000004d", "spiffe://example.org/ci", 41)
	cred := &issuer.Credential{Kind: issuer.KindJWT, Token: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", ExpiresAt: l1.ExpiresAt}
	ev := func(min int, f func() Event) step { return step{min, f} }
	mut := func(min int, f func()) step { return step{min, func() Event { f(); return Event{} }} }
	steps := []step{
		ev(0, func() Event {
			return PolicyReloaded("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", nil)
		}),
		ev(1, func() Event {
			return RequestCreated("r-1", "user:alice", "db-admin", time.Hour, "fix INC-1234", "INC-1234")
		}),
		ev(2, func() Event {
			return Decision(DecisionInfo{Subject: "user:alice", Entitlement: "db-admin", RequestID: "r-1", Outcome: "needs_approval"})
		}),
		ev(3, func() Event { return RequestCreated("r-2", "user:bob", "db-admin", time.Hour, "curious", "") }),
		ev(4, func() Event { return RequestApproved("r-1", "user:bob", "") }),
		ev(5, func() Event { return RequestDenied("r-2", "user:carol", "no ticket") }),
		ev(6, func() Event { return RequestApproved("r-1", "user:carol", "g-1") }),
		ev(6, func() Event { return GrantCreated("g-1", "r-1", "user:alice", "db-admin", "user:carol", at(126)) }),
		ev(7, func() Event {
			return Decision(DecisionInfo{Subject: "user:alice", Entitlement: "db-admin", GrantID: "g-1", Outcome: "allow", TTL: time.Hour})
		}),
		ev(7, func() Event { return LeaseIssued(l1, cred) }),
		ev(20, func() Event {
			return Decision(DecisionInfo{Subject: "user:alice", Entitlement: "prod-root", Outcome: "deny", Reasons: []string{"not_granted"}})
		}),
		ev(30, func() Event { return LeaseIssued(l2, cred) }),
		mut(35, func() { l1.ExpiresAt = at(80) }),
		ev(35, func() Event { return LeaseRenewed(l1, nil) }),
		ev(40, func() Event { return LeaseIssued(l3, cred) }),
		ev(41, func() Event { return LeaseIssued(l4, cred) }),
		mut(45, func() { l2.RevokeReason, l2.RevokeRequestedAt = lease.ReasonKillSwitch, at(45) }),
		ev(45, func() Event { return LeaseRevokeRequested(l2, lease.ReasonKillSwitch, "user:sec") }),
		mut(46, func() { l2.RevokedAt = at(46) }),
		ev(46, func() Event { return LeaseRevoked(l2) }),
		ev(50, func() Event { return ReviewCertified("g-ci", "user:owner", at(60*24*90)) }),
		mut(60, func() { l4.Attempts, l4.LastError, l4.RevokedAt = 10, "vault: connection refused", at(60) }),
		ev(60, func() Event { return LeaseIrrevocable(l4) }),
		mut(80, func() { l1.RevokedAt = at(80) }),
		ev(80, func() Event { return LeaseRevoked(l1) }),
	}
	for _, s := range steps {
		fl.clock.mu.Lock()
		fl.clock.now = at(s.min)
		fl.clock.mu.Unlock()
		e := s.f()
		if e.Type == "" {
			continue
		}
		if _, err := fl.Append(ctx, e); err != nil {
			t.Fatalf("%s: %v", e.Type, err)
		}
	}
	return fl
}

func TestLineageRequest(t *testing.T) {
	fl := scenario(t)
	n, err := Lineage(context.Background(), fl.file, Root{RequestID: "r-1"})
	if err != nil {
		t.Fatal(err)
	}
	want := `request r-1 db-admin for user:alice [approved at 2030-01-02T10:06:00Z]
├── #2 2030-01-02T10:01:00Z request.created by user:alice reason="fix INC-1234" ticket=INC-1234 ttl=1h0m0s
├── #3 2030-01-02T10:02:00Z decision by user:alice needs_approval
├── #5 2030-01-02T10:04:00Z request.approved by user:bob
├── #8 2030-01-02T10:06:00Z request.approved by user:carol
└── grant g-1 db-admin [active]
    ├── #9 2030-01-02T10:06:00Z grant.created by user:carol until=2030-01-02T12:06:00Z
    ├── #10 2030-01-02T10:07:00Z decision by user:alice allow ttl=1h0m0s
    ├── lease 01jlease00000000000000001a db-admin for user:alice [revoked: expired at 2030-01-02T11:20:00Z]
    │   ├── #11 2030-01-02T10:07:00Z lease.issued by user:alice credential_expires_at=2030-01-02T11:07:00Z credential_kind=jwt expires_at=2030-01-02T11:07:00Z hard_end=2030-01-02T12:07:00Z issued_at=2030-01-02T10:07:00Z issuer=jwt renewable=true revocable=true
    │   ├── #15 2030-01-02T10:35:00Z lease.renewed by user:alice expires_at=2030-01-02T11:20:00Z hard_end=2030-01-02T12:07:00Z
    │   └── #23 2030-01-02T11:20:00Z lease.revoked how=expired attempts=0 due_at=2030-01-02T11:20:00Z lag=0s revoked_at=2030-01-02T11:20:00Z
    └── lease 01jlease00000000000000002b db-admin for user:alice [revoked: kill_switch at 2030-01-02T10:46:00Z]
        ├── #14 2030-01-02T10:30:00Z lease.issued by user:alice credential_expires_at=2030-01-02T11:07:00Z credential_kind=jwt expires_at=2030-01-02T11:30:00Z hard_end=2030-01-02T12:30:00Z issued_at=2030-01-02T10:30:00Z issuer=jwt renewable=true revocable=true
        ├── #19 2030-01-02T10:45:00Z lease.revoke_requested by user:sec how=kill_switch requested_at=2030-01-02T10:45:00Z
        └── #20 2030-01-02T10:46:00Z lease.revoked how=kill_switch attempts=0 due_at=2030-01-02T10:45:00Z lag=1m0s revoked_at=2030-01-02T10:46:00Z
`
	if got := n.Text(); got != want {
		t.Fatalf("lineage text:\n%s\nwant:\n%s", got, want)
	}
	if n.Kind != NodeRequest || n.State != "approved" || len(n.Children) != 1 {
		t.Fatalf("root %+v", n)
	}
	g := n.Children[0]
	if g.Kind != NodeGrant || len(g.Children) != 2 || g.Children[0].How != "expired" || g.Children[1].How != "kill_switch" ||
		g.Children[1].State != "revoked" || !g.Children[0].End.Equal(time.Date(2030, 1, 2, 11, 20, 0, 0, time.UTC)) {
		t.Fatalf("grant %+v", g)
	}
}

func TestLineageSubject(t *testing.T) {
	fl := scenario(t)
	n, err := Lineage(context.Background(), fl.file, Root{Subject: "user:alice"})
	if err != nil {
		t.Fatal(err)
	}
	text := n.Text()
	t.Logf("\n%s", text)
	for _, want := range []string{
		"subject user:alice\n",
		"├── request r-1 db-admin for user:alice [approved",
		"decision by user:alice deny reasons=not_granted", // on the root
		"grant g-ci ci-deploy [active]",
		"review.certified by user:owner",
		"lease 01jlease00000000000000003c ci-deploy for user:alice [active, expires 2030-01-02T10:55:00Z]",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q", want)
		}
	}
	for _, not := range []string{"r-2", "01jlease00000000000000004d", "audit.checkpoint", "policy.reloaded"} {
		if strings.Contains(text, not) {
			t.Errorf("%q is not alice's", not)
		}
	}
	// Deterministic.
	n2, _ := Lineage(context.Background(), fl.file, Root{Subject: "user:alice"})
	if n2.Text() != text {
		t.Fatal("two runs differ")
	}
}

func TestLineageGrantAndLeaseClimbToRequest(t *testing.T) {
	fl := scenario(t)
	ctx := context.Background()
	g, err := Lineage(ctx, fl.file, Root{GrantID: "g-1"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Kind != NodeRequest || g.ID != "r-1" || len(g.Children) != 1 || len(g.Children[0].Children) != 2 {
		t.Fatalf("grant lineage:\n%s", g.Text())
	}
	l, err := Lineage(ctx, fl.file, Root{LeaseID: "01jlease00000000000000002b"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Kind != NodeRequest || len(l.Children) != 1 || len(l.Children[0].Children) != 1 ||
		l.Children[0].Children[0].ID != "01jlease00000000000000002b" {
		t.Fatalf("lease lineage:\n%s", l.Text())
	}
	// The standing grant has no request: the irrevocable lease under it.
	ci, err := Lineage(ctx, fl.file, Root{LeaseID: "01jlease00000000000000004d"})
	if err != nil {
		t.Fatal(err)
	}
	if ci.Kind != NodeGrant || ci.Children[0].State != "irrevocable" || !strings.Contains(ci.Text(), `last_error="vault: connection refused"`) {
		t.Fatalf("ci lineage:\n%s", ci.Text())
	}
	e, err := Lineage(ctx, fl.file, Root{Entitlement: "db-admin"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range e.Children {
		ids = append(ids, c.ID)
	}
	if !slices.Equal(ids, []string{"r-1", "r-2"}) {
		t.Fatalf("entitlement children %v:\n%s", ids, e.Text())
	}
	if r2 := e.Children[1]; r2.State != "denied" {
		t.Fatalf("r-2 state %s", r2.State)
	}
	none, err := Lineage(ctx, fl.file, Root{RequestID: "r-404"})
	if err != nil || len(none.Events) != 0 || len(none.Children) != 0 {
		t.Fatalf("unknown request: %+v, %v", none, err)
	}
	if _, err := Lineage(ctx, fl.file, Root{}); err == nil {
		t.Fatal("empty root accepted")
	}
	if _, err := Lineage(ctx, fl.file, Root{Subject: "a", GrantID: "b"}); err == nil {
		t.Fatal("two roots accepted")
	}
}

func TestQuery(t *testing.T) {
	fl := scenario(t)
	ctx := context.Background()
	at := func(min int) time.Time {
		return time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC).Add(time.Duration(min) * time.Minute)
	}
	seqs := func(evs []Event) []uint64 {
		var s []uint64
		for _, e := range evs {
			s = append(s, e.Seq)
		}
		return s
	}
	for name, tc := range map[string]struct {
		f    Filter
		want []uint64
	}{
		"request":        {Filter{RequestID: "r-1"}, []uint64{2, 3, 5, 8, 9}},
		"grant":          {Filter{GrantID: "g-1", Types: []Type{TypeLeaseIssued}}, []uint64{11, 14}},
		"lease":          {Filter{LeaseID: "01jlease00000000000000002b"}, []uint64{14, 19, 20}},
		"subject deny":   {Filter{Subject: "user:alice", Types: []Type{TypeDecision}}, []uint64{3, 10, 13}},
		"entitlement":    {Filter{Entitlement: "ci-deploy", Types: []Type{TypeLeaseIssued}}, []uint64{16, 17}},
		"actor":          {Filter{Actor: "user:carol"}, []uint64{7, 8, 9}},
		"time window":    {Filter{Since: at(40), Until: at(46)}, []uint64{16, 17, 18, 19}},
		"checkpoints":    {Filter{Types: []Type{TypeCheckpoint}}, []uint64{6, 12, 18, 24}},
		"page":           {Filter{Subject: "user:alice", FromSeq: 11, Limit: 2}, []uint64{11, 13}},
		"nothing":        {Filter{Subject: "user:nobody"}, nil},
		"revoked events": {Filter{Types: []Type{TypeLeaseRevoked, TypeLeaseIrrevocable}}, []uint64{20, 22, 23}},
	} {
		got, err := Query(ctx, fl.file, tc.f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(seqs(got), tc.want) {
			t.Errorf("%s: seqs %v, want %v", name, seqs(got), tc.want)
		}
	}
	// A damaged trail is an error, not a silent skip.
	lines := readLines(t, fl.path)
	lines[3] = "garbage"
	_, err := Query(ctx, JSONLBytes(strings.Join(lines, "\n")), Filter{Subject: "user:alice"})
	if !errors.Is(err, ErrMalformed) || err.Error() != "audit: malformed record at line 4: not a JSON event: syntax error at byte 1" {
		t.Fatalf("malformed: %v", err)
	}
}

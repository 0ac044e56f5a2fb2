package access_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/access/memory"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/notify"
	"github.com/mayflyhq/mayfly/broker/policy"
)

const testPolicy = `
version: 1
trust_domains: [td.test]
groups:
  devs: ["user:dev", "user:dan", "user:les", "spiffe://td.test/agents/*"]
  leads: ["user:lee", "user:les"]
  security: ["user:sam", "spiffe://td.test/bots/*"]
  oncall: ["user:oscar"]
  owners: ["user:olga"]
identities:
  - ["user:les", "spiffe://td.test/bots/les"]
  - ["user:dev", "spiffe://td.test/cli/dev"]
admins: ["user:root"]
webhooks:
  sec: {url: "https://hooks.example.org/x", secret_env: HOOK_KEY}
entitlements:
  db-admin:
    description: d
    owner: group:owners
    issuer: jwt
    ttl: 15m
    max_ttl: 1h
    requestable_by: [group:devs]
    approval: {approvals: 1, approvers: [group:leads, group:security], max_duration: 4h, pending_ttl: 1h}
    require: {reason: true, ticket: "INC-[0-9]+"}
    conflicts_with: [audit]
    break_glass: {allowed: [group:oncall], max_ttl: 30m, review_within: 24h, notify: ["webhook:sec"]}
    notify: ["webhook:sec"]
  two:
    description: d
    owner: group:owners
    issuer: jwt
    ttl: 15m
    max_ttl: 1h
    requestable_by: [group:devs]
    approval: {approvals: 2, approvers: [group:leads, group:security], distinct_groups: true}
    notify: ["webhook:sec"]
  audit:
    description: d
    owner: group:owners
    issuer: jwt
    ttl: 15m
    max_ttl: 1h
    requestable_by: [group:devs]
    approval: {approvals: 0}
  deploy:
    description: d
    owner: user:olga
    issuer: jwt
    ttl: 10m
    max_ttl: 30m
    notify: ["webhook:sec"]
    standing:
      - {id: std-ci, subject: "spiffe://td.test/ci/runner", purpose: CI deploys, until: 2099-01-01, review_every: 30d}
      - {id: std-olga, subject: "user:olga", purpose: olga deploys, until: 2099-01-01}
`

var (
	t0     = time.Date(2030, 5, 6, 9, 0, 0, 0, time.UTC)
	dev    = human("user:dev")
	devCLI = workload("spiffe://td.test/cli/dev")
	dan    = human("user:dan")
	les    = human("user:les")
	lesBot = workload("spiffe://td.test/bots/les")
	lee    = human("user:lee")
	sam    = human("user:sam")
	eve    = human("user:eve")
	oscar  = human("user:oscar")
	olga   = human("user:olga")
	root   = human("user:root")
	agent  = workload("spiffe://td.test/agents/triage")
	runner = workload("spiffe://td.test/ci/runner")
)

func human(id string) authn.Principal { return authn.Principal{Kind: authn.KindHuman, ID: id} }
func workload(id string) authn.Principal {
	return authn.Principal{Kind: authn.KindWorkload, ID: id, TrustDomain: "td.test"}
}

func parsePolicy(t testing.TB, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(src), policy.Options{Issuers: map[string]func(*yaml.Node) (any, error){
		"jwt": func(*yaml.Node) (any, error) { return nil, nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeClock is the injected clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type sent struct {
	targets []string
	ev      notify.Event
}

type fixture struct {
	t      *testing.T
	svc    *access.Service
	store  *memory.Store
	clock  *fakeClock
	pol    *policy.Policy
	events chan sent

	mu          sync.Mutex
	revoked     []string            // grant ids RevokeLeases was called with
	revokeErr   error               // RevokeLeases fails with it while set
	heldByLease map[string][]string // subject -> entitlements held through leases
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, store: memory.New(), clock: &fakeClock{now: t0}, pol: parsePolicy(t, testPolicy), events: make(chan sent, 100), heldByLease: map[string][]string{}}
	svc, err := access.New(access.Config{
		Store:  f.store,
		Policy: func() *policy.Policy { f.mu.Lock(); defer f.mu.Unlock(); return f.pol },
		RevokeLeases: func(ctx context.Context, grantID string) (int, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.revokeErr != nil {
				return 0, f.revokeErr
			}
			f.revoked = append(f.revoked, grantID)
			return 2, nil
		},
		Held: func(ctx context.Context, subject string) ([]string, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.heldByLease[subject], nil
		},
		Usage: func(ctx context.Context, grantID string) (time.Time, int, error) {
			if grantID == "std-ci" {
				return t0.Add(-time.Hour), 42, nil
			}
			return time.Time{}, 0, nil
		},
		Notify: func(ctx context.Context, targets []string, ev notify.Event) error {
			f.events <- sent{targets, ev}
			return nil
		},
		Now:      f.clock.Now,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Interval: time.Hour, // Run's own ticks never come during a test; tests call Tick
	})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return f
}

var ctx = context.Background()

func (f *fixture) revokedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.revoked)
}

// event waits for the next notification (delivered by Run).
func (f *fixture) event(typ string) sent {
	f.t.Helper()
	for {
		select {
		case s := <-f.events:
			if s.ev.Type == typ {
				return s
			}
		case <-time.After(5 * time.Second):
			f.t.Fatalf("no %s notification", typ)
		}
	}
}

// lastRecord returns the newest decision record.
func (f *fixture) lastRecord() *access.DecisionRecord {
	f.t.Helper()
	recs, err := f.svc.Records(ctx, time.Time{})
	if err != nil || len(recs) == 0 {
		f.t.Fatalf("no records: %v", err)
	}
	return recs[len(recs)-1]
}

// wantRecord checks the newest record.
func (f *fixture) wantRecord(action, actor, outcome string, wantErr error) *access.DecisionRecord {
	f.t.Helper()
	r := f.lastRecord()
	errText := ""
	if wantErr != nil {
		errText = wantErr.Error()
	}
	if r.Action != action || r.Actor != actor || r.Outcome != outcome || r.Error != errText || r.PolicyDigest != f.pol.Digest || r.ID == "" {
		f.t.Fatalf("record %+v, want action %s actor %s outcome %s error %q", r, action, actor, outcome, errText)
	}
	return r
}

func (f *fixture) create(pr authn.Principal, spec access.RequestSpec) *access.Request {
	f.t.Helper()
	r, err := f.svc.Create(ctx, pr, spec)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func dbSpec() access.RequestSpec {
	return access.RequestSpec{Entitlement: "db-admin", Reason: "fix the index", Ticket: "INC-7", Duration: 2 * time.Hour}
}

// decide asks policy whether pr may use ent now, as the API will.
func (f *fixture) decide(pr authn.Principal, ent string) policy.Decision {
	f.t.Helper()
	st, err := f.svc.State(ctx, pr)
	if err != nil {
		f.t.Fatal(err)
	}
	in := policy.Input{Principal: pr, Entitlement: ent, Now: f.clock.Now()}
	st.Fill(&in)
	return f.pol.Decide(in)
}

func codesOf(err error) string {
	var out []string
	for _, r := range access.Reasons(err) {
		out = append(out, r.Code)
	}
	return strings.Join(out, ",")
}

func TestNewValidatesConfig(t *testing.T) {
	p := parsePolicy(t, testPolicy)
	revoke := func(context.Context, string) (int, error) { return 0, nil }
	for _, tc := range []struct {
		cfg  access.Config
		want string
	}{
		{access.Config{}, "access: Config.Store is required"},
		{access.Config{Store: memory.New()}, "access: Config.Policy is required"},
		{access.Config{Store: memory.New(), Policy: func() *policy.Policy { return p }}, "access: Config.RevokeLeases is required"},
		{access.Config{Store: memory.New(), Policy: func() *policy.Policy { return p }, RevokeLeases: revoke, Interval: -1},
			"access: Config.Interval, ReviewNotice, WatchPoll and QueueSize must not be negative"},
	} {
		if _, err := access.New(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("New: %v, want %s", err, tc.want)
		}
	}
	if _, err := access.New(access.Config{Store: memory.New(), Policy: func() *policy.Policy { return p }, RevokeLeases: revoke}); err != nil {
		t.Errorf("minimal config: %v", err)
	}
}

// The whole flow: request, notification, approval at a later time, a grant
// that starts at approval and ends Duration later, issuance allowed.
func TestRequestApproveGrant(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, dbSpec())
	if r.State != access.RequestPending || r.Needed != 1 || !reflect.DeepEqual(r.Approvers, []string{"group:leads", "group:security"}) ||
		r.Duration != 2*time.Hour || !r.ExpiresAt.Equal(t0.Add(time.Hour)) || r.Digest != access.Digest(r) || r.Version != 1 {
		t.Fatalf("request %+v", r)
	}
	rec := f.wantRecord(access.ActionCreate, "user:dev", "needs_approval", nil)
	if rec.RequestID != r.ID || rec.Decision == nil || rec.Decision.Kind != policy.RecordRequest || rec.Decision.Request.Ticket != "INC-7" {
		t.Fatalf("record %+v", rec)
	}
	ev := f.event(notify.EventRequestCreated)
	if !reflect.DeepEqual(ev.targets, []string{"webhook:sec"}) || ev.ev.RequestID != r.ID || ev.ev.Subject != "user:dev" || ev.ev.Needed != 1 || ev.ev.Reason != "fix the index" {
		t.Errorf("event %+v", ev)
	}
	if d := f.decide(dev, "db-admin"); d.Outcome != policy.NeedsApproval {
		t.Fatalf("before approval: %v", d.Outcome)
	}

	f.clock.Advance(20 * time.Minute)
	approvedAt := f.clock.Now()
	r, err := f.svc.Review(ctx, lee, r.ID, true, "looks fine", r.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != access.RequestApproved || r.GrantID == "" || len(r.Approvals) != 1 || r.Approvals[0].CountedAs != "group:leads" || r.Approvals[0].Comment != "looks fine" {
		t.Fatalf("approved %+v", r)
	}
	rec = f.wantRecord(access.ActionReview, "user:lee", "allow", nil)
	if rec.GrantID != r.GrantID || rec.Decision.Kind != policy.RecordApproval {
		t.Errorf("record %+v", rec)
	}
	if ev := f.event(notify.EventRequestApproved); ev.ev.Actor != "user:lee" || ev.ev.GrantID != r.GrantID {
		t.Errorf("event %+v", ev)
	}
	g, err := f.svc.GetGrant(ctx, dev, r.GrantID)
	if err != nil {
		t.Fatal(err)
	}
	// The grant starts at approval, not at the request.
	if !g.Start.Equal(approvedAt) || !g.End.Equal(approvedAt.Add(2*time.Hour)) || g.Kind != policy.GrantRequest || g.RequestID != r.ID || g.State != access.GrantActive {
		t.Fatalf("grant %+v", g)
	}
	d := f.decide(dev, "db-admin")
	if d.Outcome != policy.Allow || d.GrantID != g.ID || d.GrantKind != policy.GrantRequest {
		t.Fatalf("after approval: %v %v", d.Outcome, d.Reasons)
	}
	// Another identity of the requester does not hold the grant.
	if d := f.decide(devCLI, "db-admin"); d.Outcome == policy.Allow {
		t.Error("grant used by another identity")
	}
	// The approver's own later review of it is refused: it is closed.
	if _, err := f.svc.Review(ctx, sam, r.ID, true, "", r.Digest); !errors.Is(err, access.ErrClosed) {
		t.Errorf("review of a closed request: %v", err)
	}
	f.wantRecord(access.ActionReview, "user:sam", access.OutcomeRefused, access.ErrClosed)
}

// Agents go through the same flow and wait for a human.
func TestAgentRequest(t *testing.T) {
	f := newFixture(t)
	r := f.create(agent, dbSpec())
	if r.State != access.RequestPending || r.Requester.Kind != authn.KindWorkload {
		t.Fatalf("agent request %+v", r)
	}
	r, err := f.svc.Review(ctx, sam, r.ID, true, "", r.Digest)
	if err != nil || r.State != access.RequestApproved {
		t.Fatalf("%v %+v", err, r)
	}
	if d := f.decide(agent, "db-admin"); d.Outcome != policy.Allow {
		t.Fatalf("agent after approval: %v", d.Reasons)
	}
}

func TestReviewRefusals(t *testing.T) {
	tests := []struct {
		name      string
		requester authn.Principal
		ent       string
		setup     func(f *fixture, r *access.Request) (approver authn.Principal, digest string)
		want      error
		code      string
	}{
		{"self-approval", les, "db-admin", func(f *fixture, r *access.Request) (authn.Principal, string) { return les, r.Digest },
			access.ErrSelfApproval, policy.ReasonSelfApproval},
		{"self-approval under another identity", les, "db-admin", func(f *fixture, r *access.Request) (authn.Principal, string) { return lesBot, r.Digest },
			access.ErrSelfApproval, policy.ReasonSelfApproval},
		{"outsider", dev, "db-admin", func(f *fixture, r *access.Request) (authn.Principal, string) { return eve, r.Digest },
			access.ErrNotApprover, policy.ReasonNotApprover},
		{"requester's other identity is no approver either", dev, "db-admin", func(f *fixture, r *access.Request) (authn.Principal, string) { return devCLI, r.Digest },
			access.ErrSelfApproval, policy.ReasonSelfApproval},
		{"second approval by the same approver", dev, "two", func(f *fixture, r *access.Request) (authn.Principal, string) {
			if _, err := f.svc.Review(ctx, lee, r.ID, true, "", r.Digest); err != nil {
				f.t.Fatal(err)
			}
			return lee, r.Digest
		}, access.ErrAlreadyDecided, policy.ReasonAlreadyApproved},
		{"distinct groups", dev, "two", func(f *fixture, r *access.Request) (authn.Principal, string) {
			if _, err := f.svc.Review(ctx, lee, r.ID, true, "", r.Digest); err != nil {
				f.t.Fatal(err)
			}
			return les, r.Digest // also a lead: the leads entry is taken
		}, access.ErrNotCounted, policy.ReasonApprovalNotCounted},
		{"request changed since it was seen", dev, "db-admin", func(f *fixture, r *access.Request) (authn.Principal, string) {
			seen := r.Digest
			r.Reason = "something else entirely"
			if _, err := f.store.UpdateRequest(ctx, r); err != nil {
				f.t.Fatal(err)
			}
			return lee, seen
		}, access.ErrChanged, ""},
		{"approval replayed on another request", dev, "db-admin", func(f *fixture, r *access.Request) (authn.Principal, string) {
			other := f.create(dan, dbSpec())
			return lee, other.Digest
		}, access.ErrChanged, ""},
		{"no digest", dev, "db-admin", func(f *fixture, r *access.Request) (authn.Principal, string) { return lee, "" }, access.ErrChanged, ""},
		{"expired", dev, "db-admin", func(f *fixture, r *access.Request) (authn.Principal, string) {
			f.clock.Advance(time.Hour)
			return lee, r.Digest
		}, access.ErrClosed, ""},
		{"unknown request", dev, "db-admin", func(f *fixture, r *access.Request) (authn.Principal, string) {
			r.ID = "0000000000000000000000000z"
			return lee, r.Digest
		}, access.ErrNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			spec := dbSpec()
			spec.Entitlement = tt.ent
			r := f.create(tt.requester, spec)
			approver, digest := tt.setup(f, r)
			_, err := f.svc.Review(ctx, approver, r.ID, true, "", digest)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Review: %v, want %v", err, tt.want)
			}
			if got := codesOf(err); got != tt.code {
				t.Errorf("reasons %q, want %q", got, tt.code)
			}
			rec := f.wantRecord(access.ActionReview, approver.ID, access.OutcomeRefused, tt.want)
			if tt.code != "" && (len(rec.Reasons) == 0 || rec.Reasons[0].Code != tt.code) {
				t.Errorf("record reasons %+v", rec.Reasons)
			}
			if got, _ := f.store.GetRequest(ctx, r.ID); got != nil && got.State == access.RequestApproved {
				t.Error("the request was approved")
			}
		})
	}
}

func TestExpiredRequestIsClosedOnReview(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, dbSpec())
	f.clock.Advance(time.Hour)
	if _, err := f.svc.Review(ctx, lee, r.ID, true, "", r.Digest); !errors.Is(err, access.ErrClosed) {
		t.Fatal(err)
	}
	if got, _ := f.svc.Get(ctx, dev, r.ID); got.State != access.RequestExpired {
		t.Errorf("state %s", got.State)
	}
}

// Two approvals by one approver racing each other count once.
func TestConcurrentDoubleApproval(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, access.RequestSpec{Entitlement: "two", Reason: "r"})
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = f.svc.Review(ctx, lee, r.ID, true, fmt.Sprint(i), r.Digest)
		}(i)
	}
	wg.Wait()
	ok, already := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, access.ErrAlreadyDecided):
			already++
		default:
			t.Errorf("review: %v", err)
		}
	}
	if ok != 1 || already != n-1 {
		t.Fatalf("%d approvals accepted, %d refused as already decided; want 1 and %d", ok, already, n-1)
	}
	got, _ := f.svc.Get(ctx, dev, r.ID)
	if got.State != access.RequestPending || len(got.Approvals) != 1 {
		t.Fatalf("request %+v", got)
	}
	recs, _ := f.svc.Records(ctx, time.Time{})
	refused := 0
	for _, rec := range recs {
		if rec.Action == access.ActionReview && rec.Error == access.ErrAlreadyDecided.Error() {
			refused++
		}
	}
	if refused != n-1 {
		t.Errorf("%d refused reviews recorded, want %d", refused, n-1)
	}
	// The second approver completes it.
	if got, err := f.svc.Review(ctx, sam, r.ID, true, "", r.Digest); err != nil || got.State != access.RequestApproved {
		t.Fatalf("%v %+v", err, got)
	}
}

func TestDistinctGroupsApproval(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, access.RequestSpec{Entitlement: "two", Reason: "r"})
	r, err := f.svc.Review(ctx, lee, r.ID, true, "", r.Digest)
	if err != nil || r.State != access.RequestPending {
		t.Fatal(err)
	}
	if _, err := f.svc.Review(ctx, les, r.ID, true, "", r.Digest); !errors.Is(err, access.ErrNotCounted) {
		t.Fatalf("second lead: %v", err)
	}
	r, err = f.svc.Review(ctx, sam, r.ID, true, "", r.Digest)
	if err != nil || r.State != access.RequestApproved {
		t.Fatalf("%v %+v", err, r)
	}
	if r.Approvals[0].CountedAs != "group:leads" || r.Approvals[1].CountedAs != "group:security" {
		t.Errorf("counted as %q %q", r.Approvals[0].CountedAs, r.Approvals[1].CountedAs)
	}
}

func TestCreateRefusals(t *testing.T) {
	tests := []struct {
		name  string
		pr    authn.Principal
		spec  func(*access.RequestSpec)
		setup func(f *fixture)
		want  error
		codes string
	}{
		{"duration over the maximum", dev, func(s *access.RequestSpec) { s.Duration = 5 * time.Hour }, nil, access.ErrInvalid, policy.ReasonDurationTooLong},
		{"ticket does not match", dev, func(s *access.RequestSpec) { s.Ticket = "JIRA-7" }, nil, access.ErrInvalid, policy.ReasonTicketMismatch},
		{"reason missing", dev, func(s *access.RequestSpec) { s.Reason = "" }, nil, access.ErrInvalid, policy.ReasonReasonRequired},
		{"not requestable", eve, func(s *access.RequestSpec) {}, nil, access.ErrDenied, policy.ReasonNotRequestable},
		{"conflict through a grant", dev, func(s *access.RequestSpec) {}, func(f *fixture) {
			f.create(dev, access.RequestSpec{Entitlement: "audit", Reason: "r"}) // approved at once
		}, access.ErrDenied, policy.ReasonConflictingEntitlement},
		{"conflict through a lease", dev, func(s *access.RequestSpec) {}, func(f *fixture) {
			f.mu.Lock()
			f.heldByLease["user:dev"] = []string{"audit"}
			f.mu.Unlock()
		}, access.ErrDenied, policy.ReasonConflictingEntitlement},
		{"invalid and denied", dev, func(s *access.RequestSpec) { s.Ticket = "x" }, func(f *fixture) {
			f.mu.Lock()
			f.heldByLease["user:dev"] = []string{"audit"}
			f.mu.Unlock()
		}, access.ErrDenied, policy.ReasonTicketMismatch + "," + policy.ReasonConflictingEntitlement},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			spec := dbSpec()
			tt.spec(&spec)
			r, err := f.svc.Create(ctx, tt.pr, spec)
			if !errors.Is(err, tt.want) || r != nil {
				t.Fatalf("Create: %v, want %v", err, tt.want)
			}
			if got := codesOf(err); got != tt.codes {
				t.Errorf("reasons %s, want %s", got, tt.codes)
			}
			rec := f.wantRecord(access.ActionCreate, tt.pr.ID, "deny", tt.want)
			if rec.Decision == nil || rec.Decision.Result.Outcome != policy.Deny || rec.RequestID != "" {
				t.Errorf("record %+v", rec)
			}
			if rs, _ := f.store.ListRequests(ctx, access.RequestQuery{Entitlement: "db-admin"}); len(rs) != 0 {
				t.Errorf("a refused request was stored: %+v", rs)
			}
		})
	}
	f := newFixture(t)
	_, err := f.svc.Create(ctx, dev, access.RequestSpec{Entitlement: "db-admin", Reason: "r", Ticket: "INC-1", Duration: 5 * time.Hour})
	if want := `access: invalid request: requested duration 5h is longer than the maximum of 4h for entitlement "db-admin"`; err == nil || err.Error() != want {
		t.Errorf("error text %q", err)
	}
}

func TestAutoApprove(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, access.RequestSpec{Entitlement: "audit", Reason: "quarterly audit", Duration: time.Hour})
	if r.State != access.RequestApproved || r.GrantID == "" || r.Needed != 0 {
		t.Fatalf("request %+v", r)
	}
	rec := f.wantRecord(access.ActionCreate, "user:dev", "allow", nil)
	if rec.GrantID != r.GrantID {
		t.Errorf("record %+v", rec)
	}
	if d := f.decide(dev, "audit"); d.Outcome != policy.Allow || d.GrantID != r.GrantID {
		t.Errorf("decide %v %v", d.Outcome, d.Reasons)
	}
}

func TestDenialEndsTheRequest(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, access.RequestSpec{Entitlement: "two", Reason: "r"})
	r, err := f.svc.Review(ctx, lee, r.ID, true, "", r.Digest)
	if err != nil {
		t.Fatal(err)
	}
	r, err = f.svc.Review(ctx, sam, r.ID, false, "not during the freeze", r.Digest)
	if err != nil || r.State != access.RequestDenied || r.Denial == nil || r.Denial.Approver.ID != "user:sam" || r.Denial.Comment != "not during the freeze" || r.GrantID != "" {
		t.Fatalf("%v %+v", err, r)
	}
	f.wantRecord(access.ActionReview, "user:sam", "deny", nil)
	if ev := f.event(notify.EventRequestDenied); ev.ev.Actor != "user:sam" {
		t.Errorf("event %+v", ev)
	}
	if _, err := f.svc.Review(ctx, les, r.ID, true, "", r.Digest); !errors.Is(err, access.ErrClosed) {
		t.Errorf("approve after denial: %v", err)
	}
	if d := f.decide(dev, "two"); d.Outcome == policy.Allow {
		t.Error("denied request grants access")
	}
	// A denial needs an approver too.
	r2 := f.create(dev, access.RequestSpec{Entitlement: "two", Reason: "r"})
	if _, err := f.svc.Review(ctx, eve, r2.ID, false, "", r2.Digest); !errors.Is(err, access.ErrNotApprover) {
		t.Errorf("denial by an outsider: %v", err)
	}
}

// The last approval decides the request again: a conflict acquired while
// it waited denies it.
func TestLastApprovalRechecksPolicy(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, dbSpec())
	f.mu.Lock()
	f.heldByLease["user:dev"] = []string{"audit"}
	f.mu.Unlock()
	got, err := f.svc.Review(ctx, lee, r.ID, true, "", r.Digest)
	if !errors.Is(err, access.ErrDenied) || codesOf(err) != policy.ReasonConflictingEntitlement {
		t.Fatalf("Review: %v", err)
	}
	if got.State != access.RequestDenied || got.GrantID != "" || !strings.HasPrefix(got.Denial.Comment, "policy refuses the request now: ") {
		t.Fatalf("request %+v", got)
	}
	f.wantRecord(access.ActionReview, "user:lee", "deny", access.ErrDenied)
}

func TestPendingExpiry(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, dbSpec())
	f.clock.Advance(59 * time.Minute)
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.svc.Get(ctx, dev, r.ID); got.State != access.RequestPending {
		t.Fatalf("expired early: %s", got.State)
	}
	f.clock.Advance(time.Minute)
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := f.svc.Get(ctx, dev, r.ID)
	if got.State != access.RequestExpired || !got.ClosedAt.Equal(f.clock.Now()) {
		t.Fatalf("request %+v", got)
	}
	f.wantRecord(access.ActionExpire, "mayfly", access.OutcomeDone, nil)
	f.event(notify.EventRequestExpired)
}

func TestGrantStartsAtStartAtAndEnds(t *testing.T) {
	f := newFixture(t)
	spec := dbSpec()
	spec.StartAt = t0.Add(3 * time.Hour)
	r := f.create(dev, spec)
	r, err := f.svc.Review(ctx, lee, r.ID, true, "", r.Digest)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := f.svc.GetGrant(ctx, dev, r.GrantID)
	if !g.Start.Equal(spec.StartAt) || !g.End.Equal(spec.StartAt.Add(2*time.Hour)) {
		t.Fatalf("grant %v - %v", g.Start, g.End)
	}
	if d := f.decide(dev, "db-admin"); d.Outcome == policy.Allow || d.Reasons[0].Code != policy.ReasonGrantNotStarted {
		t.Fatalf("before start: %v %v", d.Outcome, d.Reasons)
	}
	f.clock.Advance(3 * time.Hour)
	if d := f.decide(dev, "db-admin"); d.Outcome != policy.Allow {
		t.Fatalf("at start: %v", d.Reasons)
	}
	f.clock.Advance(2 * time.Hour)
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	g, _ = f.svc.GetGrant(ctx, dev, g.ID)
	if g.State != access.GrantEnded || !g.LeasesRevoked {
		t.Fatalf("grant %+v", g)
	}
	if rec := f.wantRecord(access.ActionEndGrant, "mayfly", access.OutcomeDone, nil); rec.GrantID != g.ID || rec.RequestID != r.ID {
		t.Errorf("record %+v", rec)
	}
	if !slices.Contains(f.revokedIDs(), g.ID) {
		t.Errorf("leases of the ended grant not revoked: %v", f.revokedIDs())
	}
	if d := f.decide(dev, "db-admin"); d.Outcome == policy.Allow {
		t.Error("ended grant still allows")
	}
}

func TestExtensionNeedsApproval(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, dbSpec())
	r, _ = f.svc.Review(ctx, lee, r.ID, true, "", r.Digest)
	f.clock.Advance(time.Hour)
	ext := f.create(dev, dbSpec())
	if ext.State != access.RequestPending || ext.Extends != r.GrantID {
		t.Fatalf("extension %+v", ext)
	}
	rec := f.wantRecord(access.ActionCreate, "user:dev", "needs_approval", nil)
	if !slices.ContainsFunc(rec.Reasons, func(r policy.Reason) bool { return r.Code == policy.ReasonExtendsGrant }) {
		t.Errorf("reasons %+v", rec.Reasons)
	}
	ext, err := f.svc.Review(ctx, sam, ext.ID, true, "", ext.Digest)
	if err != nil || ext.State != access.RequestApproved {
		t.Fatal(err)
	}
	g, _ := f.svc.GetGrant(ctx, dev, ext.GrantID)
	if !g.End.Equal(f.clock.Now().Add(2 * time.Hour)) {
		t.Errorf("extension ends %v", g.End)
	}
}

func TestBreakGlass(t *testing.T) {
	f := newFixture(t)
	g, err := f.svc.BreakGlass(ctx, oscar, "db-admin", 2*time.Hour, "orders DB down, INC-9")
	if err != nil {
		t.Fatal(err)
	}
	if g.Kind != policy.GrantBreakGlass || !g.End.Equal(t0.Add(30*time.Minute)) || !g.ReviewDue.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("grant %+v", g)
	}
	rec := f.wantRecord(access.ActionBreakGlass, "user:oscar", "allow", nil)
	if rec.GrantID != g.ID || !slices.ContainsFunc(rec.Reasons, func(r policy.Reason) bool { return r.Code == policy.ReasonTTLClamped }) {
		t.Errorf("record %+v", rec)
	}
	ev := f.event(notify.EventBreakGlassUsed)
	if !reflect.DeepEqual(ev.targets, []string{"webhook:sec"}) || ev.ev.GrantID != g.ID || ev.ev.Reason != "orders DB down, INC-9" || !ev.ev.Due.Equal(g.ReviewDue) {
		t.Errorf("event %+v", ev)
	}
	if d := f.decide(oscar, "db-admin"); d.Outcome != policy.Allow || d.GrantKind != policy.GrantBreakGlass || d.TTL != 15*time.Minute {
		t.Fatalf("decide %v %v", d.Outcome, d.Reasons)
	}
	// Nobody else may.
	if _, err := f.svc.BreakGlass(ctx, dev, "db-admin", 0, "x"); !errors.Is(err, access.ErrDenied) || codesOf(err) != policy.ReasonBreakGlassNotAllowed {
		t.Errorf("break-glass by a developer: %v", err)
	}
	f.wantRecord(access.ActionBreakGlass, "user:dev", "deny", access.ErrDenied)

	// The review is overdue a day later: escalated once, and break-glass blocked.
	f.clock.Advance(24 * time.Hour)
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	ev = f.event(notify.EventReviewOverdue)
	if ev.ev.GrantID != g.ID || !reflect.DeepEqual(ev.targets, []string{"webhook:sec"}) {
		t.Errorf("escalation %+v", ev)
	}
	f.wantRecord(access.ActionEscalate, "mayfly", access.OutcomeDone, nil)
	if err := f.svc.Tick(ctx); err != nil { // a second pass does not escalate again
		t.Fatal(err)
	}
	recs, _ := f.svc.Records(ctx, time.Time{})
	escalations := 0
	for _, r := range recs {
		if r.Action == access.ActionEscalate {
			escalations++
		}
	}
	if escalations != 1 {
		t.Errorf("%d escalations, want 1", escalations)
	}
	if st, _ := f.svc.State(ctx, oscar); !st.BreakGlassBlocked {
		t.Fatal("not blocked")
	}
	_, err = f.svc.BreakGlass(ctx, oscar, "db-admin", 0, "again")
	if !errors.Is(err, access.ErrDenied) || codesOf(err) != policy.ReasonBreakGlassBlocked {
		t.Fatalf("break-glass while blocked: %v", err)
	}
	f.wantRecord(access.ActionBreakGlass, "user:oscar", "deny", access.ErrDenied)

	// The user may not review their own use; the owner may, which unblocks.
	if _, err := f.svc.CompleteBreakGlassReview(ctx, oscar, g.ID, "all fine"); !errors.Is(err, access.ErrSelfApproval) {
		t.Fatalf("self review: %v", err)
	}
	f.wantRecord(access.ActionCompleteReview, "user:oscar", access.OutcomeRefused, access.ErrSelfApproval)
	if _, err := f.svc.CompleteBreakGlassReview(ctx, dev, g.ID, "fine"); !errors.Is(err, access.ErrNotApprover) {
		t.Fatalf("review by a non-owner: %v", err)
	}
	g, err = f.svc.CompleteBreakGlassReview(ctx, olga, g.ID, "justified: INC-9")
	if err != nil || g.ReviewedBy != "user:olga" || !g.ReviewedAt.Equal(f.clock.Now()) {
		t.Fatalf("%v %+v", err, g)
	}
	f.wantRecord(access.ActionCompleteReview, "user:olga", access.OutcomeDone, nil)
	if _, err := f.svc.CompleteBreakGlassReview(ctx, root, g.ID, "again"); !errors.Is(err, access.ErrAlreadyDecided) {
		t.Errorf("second review: %v", err)
	}
	if _, err := f.svc.BreakGlass(ctx, oscar, "db-admin", 0, "again"); err != nil {
		t.Fatalf("break-glass after the review: %v", err)
	}
}

func TestCertificationLapse(t *testing.T) {
	f := newFixture(t)
	if d := f.decide(runner, "deploy"); d.Outcome != policy.Allow {
		t.Fatalf("at first sight: %v", d.Reasons)
	}
	f.clock.Advance(24 * 24 * time.Hour) // within ReviewNotice of the due date
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := f.event(notify.EventReviewDue); ev.ev.GrantID != "std-ci" || !ev.ev.Due.Equal(t0.Add(30*24*time.Hour)) {
		t.Errorf("review.due %+v", ev)
	}
	reviews, err := f.svc.ListReviews(ctx, olga)
	if err != nil || len(reviews) != 1 {
		t.Fatalf("reviews %+v %v", reviews, err)
	}
	if r := reviews[0]; r.Kind != access.ReviewCertification || r.Item.GrantID != "std-ci" || !r.UsageKnown || r.Leases30d != 42 || r.Suggestion != access.Certify || r.Item.Lapsed {
		t.Errorf("review %+v", r)
	}
	if reviews, _ := f.svc.ListReviews(ctx, dev); len(reviews) != 0 {
		t.Errorf("a non-owner sees reviews: %+v", reviews)
	}

	f.clock.Advance(6 * 24 * time.Hour) // 30 days after it was first seen
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.revokedIDs(), "std-ci") {
		t.Fatalf("lapsed grant's leases not revoked: %v", f.revokedIDs())
	}
	f.wantRecord(access.ActionLapse, "mayfly", access.OutcomeDone, nil)
	f.event(notify.EventReviewOverdue)
	d := f.decide(runner, "deploy")
	if d.Outcome != policy.Deny || d.Reasons[0].Code != policy.ReasonCertificationLapsed {
		t.Fatalf("after the lapse: %v %v", d.Outcome, d.Reasons)
	}
	// Once per lapse.
	n := len(f.revokedIDs())
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.revokedIDs()) != n {
		t.Error("leases revoked again for the same lapse")
	}

	// Only the owner certifies.
	if _, err := f.svc.Certify(ctx, dev, "std-ci", access.Certify, ""); !errors.Is(err, access.ErrNotApprover) {
		t.Fatalf("certify by a non-owner: %v", err)
	}
	f.wantRecord(access.ActionCertify, "user:dev", access.OutcomeRefused, access.ErrNotApprover)
	if _, err := f.svc.Certify(ctx, olga, "std-olga", access.Certify, ""); !errors.Is(err, access.ErrSelfApproval) {
		t.Fatalf("certify one's own grant: %v", err)
	}
	if _, err := f.svc.Certify(ctx, olga, "nope", access.Certify, ""); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("certify unknown: %v", err)
	}
	if _, err := f.svc.Certify(ctx, olga, "std-ci", access.Certify, "still deploys daily"); err != nil {
		t.Fatal(err)
	}
	f.wantRecord(access.ActionCertify, "user:olga", access.OutcomeDone, nil)
	if d := f.decide(runner, "deploy"); d.Outcome != policy.Allow {
		t.Fatalf("after certification: %v", d.Reasons)
	}

	// Revoke at certification: denied at once, leases revoked.
	before := len(f.revokedIDs())
	if _, err := f.svc.Certify(ctx, root, "std-ci", access.Revoke, "moving to OIDC"); err != nil {
		t.Fatal(err)
	}
	if got := f.revokedIDs(); len(got) != before+1 || got[len(got)-1] != "std-ci" {
		t.Errorf("revoke did not revoke leases: %v", got)
	}
	if d := f.decide(runner, "deploy"); d.Outcome != policy.Deny || d.Reasons[0].Code != policy.ReasonCertificationLapsed {
		t.Fatalf("after revoke: %v", d.Reasons)
	}
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.revokedIDs(); len(got) != before+1 {
		t.Errorf("Tick revoked a revoked grant's leases again: %v", got)
	}
}

func TestRevokeGrant(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, dbSpec())
	r, _ = f.svc.Review(ctx, lee, r.ID, true, "", r.Digest)
	if _, _, err := f.svc.RevokeGrant(ctx, eve, r.GrantID, "x"); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("revoke by a stranger: %v", err)
	}
	f.wantRecord(access.ActionRevokeGrant, "user:eve", access.OutcomeRefused, access.ErrNotFound)
	f.mu.Lock()
	f.revokeErr = errors.New("redis down")
	f.mu.Unlock()
	g, n, err := f.svc.RevokeGrant(ctx, sam, r.GrantID, "done early")
	if err == nil || g.State != access.GrantRevoked || g.LeasesRevoked || n != 0 {
		t.Fatalf("revoke with failing leases: %v %+v", err, g)
	}
	f.wantRecord(access.ActionRevokeGrant, "user:sam", access.OutcomeDone, nil)
	if d := f.decide(dev, "db-admin"); d.Outcome == policy.Allow {
		t.Fatal("revoked grant still allows")
	}
	f.mu.Lock()
	f.revokeErr = nil
	f.mu.Unlock()
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if g, _ := f.svc.GetGrant(ctx, dev, r.GrantID); !g.LeasesRevoked || !slices.Contains(f.revokedIDs(), g.ID) {
		t.Fatalf("Run did not retry: %+v", g)
	}
	if _, _, err := f.svc.RevokeGrant(ctx, dev, r.GrantID, "again"); !errors.Is(err, access.ErrClosed) {
		t.Errorf("second revoke: %v", err)
	}
	// The subject may give access back.
	r2 := f.create(dan, dbSpec())
	r2, _ = f.svc.Review(ctx, lee, r2.ID, true, "", r2.Digest)
	if g, n, err := f.svc.RevokeGrant(ctx, dan, r2.GrantID, "finished"); err != nil || n != 2 || g.RevokedBy != "user:dan" {
		t.Fatalf("self revoke: %v %d %+v", err, n, g)
	}
}

func TestCancelGetListVisibility(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, dbSpec())
	other := f.create(dan, access.RequestSpec{Entitlement: "two", Reason: "r"})
	if _, err := f.svc.Get(ctx, eve, r.ID); !errors.Is(err, access.ErrNotFound) {
		t.Errorf("stranger get: %v", err)
	}
	for _, pr := range []authn.Principal{dev, devCLI, lee, olga, root} {
		if _, err := f.svc.Get(ctx, pr, r.ID); err != nil {
			t.Errorf("get as %s: %v", pr.ID, err)
		}
	}
	list := func(pr authn.Principal, opt access.ListOptions) []string {
		rs, next, err := f.svc.List(ctx, pr, opt)
		if err != nil || next != "" {
			t.Fatalf("list: %v %q", err, next)
		}
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
		return ids
	}
	if got := list(dan, access.ListOptions{}); !reflect.DeepEqual(got, []string{other.ID}) {
		t.Errorf("dan sees %v", got)
	}
	if got := list(root, access.ListOptions{}); len(got) != 2 {
		t.Errorf("admin sees %v", got)
	}
	if got := list(eve, access.ListOptions{}); got != nil {
		t.Errorf("stranger sees %v", got)
	}
	if got := list(les, access.ListOptions{ToReview: true}); !reflect.DeepEqual(got, []string{r.ID, other.ID}) {
		t.Errorf("les reviews %v", got)
	}
	if rs, next, _ := f.svc.List(ctx, root, access.ListOptions{PageSize: 1}); len(rs) != 1 || next != r.ID {
		t.Errorf("page 1: %d %q", len(rs), next)
	} else if rs, next, _ := f.svc.List(ctx, root, access.ListOptions{PageSize: 1, PageToken: next}); len(rs) != 1 || rs[0].ID != other.ID || next != other.ID {
		t.Errorf("page 2: %v %q", rs, next)
	}

	if _, err := f.svc.Cancel(ctx, lee, r.ID); !errors.Is(err, access.ErrForbidden) {
		t.Errorf("cancel by an approver: %v", err)
	}
	f.wantRecord(access.ActionCancel, "user:lee", access.OutcomeRefused, access.ErrForbidden)
	if _, err := f.svc.Cancel(ctx, eve, r.ID); !errors.Is(err, access.ErrNotFound) {
		t.Errorf("cancel by a stranger: %v", err)
	}
	got, err := f.svc.Cancel(ctx, devCLI, r.ID) // the requester under another identity
	if err != nil || got.State != access.RequestCancelled {
		t.Fatalf("cancel: %v %+v", err, got)
	}
	f.wantRecord(access.ActionCancel, devCLI.ID, access.OutcomeDone, nil)
	if _, err := f.svc.Cancel(ctx, dev, r.ID); !errors.Is(err, access.ErrClosed) {
		t.Errorf("second cancel: %v", err)
	}
	if _, err := f.svc.Review(ctx, lee, r.ID, true, "", r.Digest); !errors.Is(err, access.ErrClosed) {
		t.Errorf("approve a cancelled request: %v", err)
	}
}

func TestWatch(t *testing.T) {
	f := newFixture(t)
	r := f.create(dev, access.RequestSpec{Entitlement: "two", Reason: "r"})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, err := f.svc.Watch(wctx, eve, r.ID); !errors.Is(err, access.ErrNotFound) {
		t.Fatalf("stranger watch: %v", err)
	}
	ch, err := f.svc.Watch(wctx, dev, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	next := func() (access.Request, bool) {
		select {
		case got, ok := <-ch:
			return got, ok
		case <-time.After(5 * time.Second):
			t.Fatal("no update")
			return access.Request{}, false
		}
	}
	if got, _ := next(); got.State != access.RequestPending || len(got.Approvals) != 0 {
		t.Fatalf("first %+v", got)
	}
	if _, err := f.svc.Review(ctx, lee, r.ID, true, "", r.Digest); err != nil {
		t.Fatal(err)
	}
	if got, _ := next(); len(got.Approvals) != 1 {
		t.Fatalf("second %+v", got)
	}
	if _, err := f.svc.Review(ctx, sam, r.ID, true, "", r.Digest); err != nil {
		t.Fatal(err)
	}
	if got, _ := next(); got.State != access.RequestApproved {
		t.Fatalf("third %+v", got)
	}
	if _, ok := next(); ok {
		t.Fatal("channel open after the request closed")
	}
}

func TestListReviewsBreakGlass(t *testing.T) {
	f := newFixture(t)
	g, err := f.svc.BreakGlass(ctx, oscar, "db-admin", 0, "down")
	if err != nil {
		t.Fatal(err)
	}
	reviews, err := f.svc.ListReviews(ctx, olga)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []access.ReviewKind
	for _, r := range reviews {
		kinds = append(kinds, r.Kind)
	}
	if !reflect.DeepEqual(kinds, []access.ReviewKind{access.ReviewCertification, access.ReviewBreakGlass}) || reviews[1].Grant.ID != g.ID {
		t.Fatalf("reviews %+v", reviews)
	}
	grants, _, err := f.svc.Grants(ctx, olga, access.GrantFilter{ReviewPending: true})
	if err != nil || len(grants) != 1 || grants[0].ID != g.ID {
		t.Fatalf("pending break-glass grants %v %v", grants, err)
	}
	if grants, _, _ := f.svc.Grants(ctx, eve, access.GrantFilter{}); len(grants) != 0 {
		t.Errorf("stranger sees grants %v", grants)
	}
}

// What-if over recorded decisions finds those a policy change would flip.
func TestWhatIfOverRecords(t *testing.T) {
	f := newFixture(t)
	f.create(dev, dbSpec()) // 2h: needs approval
	f.create(dan, access.RequestSpec{Entitlement: "db-admin", Reason: "r", Ticket: "INC-1", Duration: 30 * time.Minute})
	if _, err := f.svc.Create(ctx, eve, dbSpec()); err == nil {
		t.Fatal("eve may request")
	}
	in := policy.Input{Principal: runner, Entitlement: "deploy", Now: f.clock.Now()}
	f.svc.RecordIssue(ctx, in, f.pol.Decide(in))

	stricter := parsePolicy(t, strings.Replace(testPolicy, "max_duration: 4h, pending_ttl: 1h", "max_duration: 1h, pending_ttl: 1h", 1))
	changes, sum, err := f.svc.WhatIf(ctx, stricter, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Record.Request.Principal.ID != "user:dev" || changes[0].New.Outcome != policy.Deny ||
		changes[0].New.Reasons[0].Code != policy.ReasonDurationTooLong || !changes[0].Tightens {
		t.Fatalf("changes %+v", changes)
	}
	if sum.Records != 4 || sum.Changed != 1 || sum.Tightened != 1 || sum.Transitions["request: needs_approval -> deny"] != 1 {
		t.Errorf("summary %+v", sum)
	}
}

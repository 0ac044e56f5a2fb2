package redis_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

const servicePolicy = `
version: 1
trust_domains: [td.test]
groups:
  devs: ["user:dev"]
  leads: ["user:lee"]
  oncall: ["user:oscar"]
  owners: ["user:olga"]
entitlements:
  db-admin:
    description: d
    owner: group:owners
    issuer: jwt
    ttl: 15m
    max_ttl: 1h
    requestable_by: [group:devs]
    approval: {approvals: 1, approvers: [group:leads], max_duration: 4h, pending_ttl: 1h}
    break_glass: {allowed: [group:oncall], max_ttl: 30m, review_within: 24h}
  deploy:
    description: d
    owner: user:olga
    issuer: jwt
    ttl: 10m
    max_ttl: 30m
    standing:
      - {id: std-ci, subject: "spiffe://td.test/ci/runner", purpose: CI deploys, until: 2099-01-01, review_every: 30d}
`

// TestServiceReplicas runs the access service, two replicas of it, on
// one Redis store: a request made on one is approved on the other, grants
// end once, a certification and the decision records are seen by both.
func TestServiceReplicas(t *testing.T) {
	c := client(t, testenv.Redis(t).Addr())
	store := newStore(t, c, redis.Options{})
	p := parseServicePolicy(t)
	var mu sync.Mutex
	now := time.Date(2030, 5, 6, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var revoked []string
	replica := func() *access.Service {
		return newService(t, store, p, clock, func(grantID string) {
			mu.Lock()
			defer mu.Unlock()
			revoked = append(revoked, grantID)
		})
	}
	a, b := replica(), replica()
	ctx := t.Context()
	dev, lee := authn.Principal{Kind: authn.KindHuman, ID: "user:dev"}, authn.Principal{Kind: authn.KindHuman, ID: "user:lee"}
	oscar, olga := authn.Principal{Kind: authn.KindHuman, ID: "user:oscar"}, authn.Principal{Kind: authn.KindHuman, ID: "user:olga"}

	r, err := a.Create(ctx, dev, access.RequestSpec{Entitlement: "db-admin", Reason: "fix index", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r, err = b.Review(ctx, lee, r.ID, true, "ok", r.Digest); err != nil || r.State != access.RequestApproved || r.GrantID == "" {
		t.Fatalf("review on the other replica: %+v, %v", r, err)
	}
	if got, err := a.Get(ctx, dev, r.ID); err != nil || got.State != access.RequestApproved || got.Version != r.Version {
		t.Fatalf("get on the first replica: %+v, %v", got, err)
	}
	st, err := a.State(ctx, dev)
	if err != nil || len(st.Grants) != 1 || st.Grants[0].ID != r.GrantID {
		t.Fatalf("state of dev: %+v, %v", st, err)
	}
	bg, err := b.BreakGlass(ctx, oscar, "db-admin", 0, "outage")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Certify(ctx, olga, "std-ci", access.Certify, "still used"); err != nil {
		t.Fatal(err)
	}
	if st, err := b.State(ctx, dev); err != nil || st.Certified["std-ci"].IsZero() {
		t.Fatalf("certification seen on the other replica: %+v, %v", st, err)
	}

	mu.Lock()
	now = now.Add(2 * time.Hour) // both grants are over
	mu.Unlock()
	var wg sync.WaitGroup
	for _, svc := range []*access.Service{a, b} {
		wg.Go(func() {
			if err := svc.Tick(ctx); err != nil {
				t.Errorf("tick: %v", err)
			}
		})
	}
	wg.Wait()
	for _, id := range []string{r.GrantID, bg.ID} {
		g, err := store.GetGrant(ctx, id)
		if err != nil || g.State != access.GrantEnded || !g.LeasesRevoked {
			t.Fatalf("grant %s after the ticks: %+v, %v", id, g, err)
		}
		if !slices.Contains(revoked, id) {
			t.Errorf("leases of %s not revoked", id)
		}
	}
	recs, err := b.Records(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, rec := range recs {
		actions = append(actions, rec.Action)
	}
	for _, want := range []string{access.ActionCreate, access.ActionReview, access.ActionBreakGlass, access.ActionCertify, access.ActionEndGrant} {
		if !slices.Contains(actions, want) {
			t.Errorf("records %v lack %s", actions, want)
		}
	}
	if !slices.IsSortedFunc(recs, func(x, y *access.DecisionRecord) int { return strings.Compare(x.ID, y.ID) }) {
		t.Error("records not in id order")
	}
}

func parseServicePolicy(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(servicePolicy), policy.Options{Issuers: map[string]func(*yaml.Node) (any, error){
		"jwt": func(*yaml.Node) (any, error) { return nil, nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newService is one replica of the access service on store; revoked
// hears of every grant whose leases it revokes.
func newService(t *testing.T, store access.Store, p *policy.Policy, clock func() time.Time, revoked func(grantID string)) *access.Service {
	t.Helper()
	svc, err := access.New(access.Config{
		Store:  store,
		Policy: func() *policy.Policy { return p },
		RevokeLeases: func(ctx context.Context, grantID string) (int, error) {
			revoked(grantID)
			return 1, nil
		},
		Now:      clock,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Interval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// TestStateCacheAcrossReplicas: a replica keeps what State read while the
// store's generation stands, and a change made on another replica is seen
// by its very next decision: a grant revoked there is gone, a
// certification revoked there counts, a Redis flushed behind its back is
// read again.
func TestStateCacheAcrossReplicas(t *testing.T) {
	c := client(t, testenv.Redis(t).Addr())
	store := newStore(t, c, redis.Options{})
	p := parseServicePolicy(t)
	now := time.Date(2030, 5, 6, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a := newService(t, store, p, clock, func(string) {})
	b := newService(t, store, p, clock, func(string) {})
	ctx := t.Context()
	dev, lee := authn.Principal{Kind: authn.KindHuman, ID: "user:dev"}, authn.Principal{Kind: authn.KindHuman, ID: "user:lee"}
	olga := authn.Principal{Kind: authn.KindHuman, ID: "user:olga"}

	grants := func(svc *access.Service) []string {
		t.Helper()
		st, err := svc.State(ctx, dev)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, g := range st.Grants {
			ids = append(ids, g.ID)
		}
		return ids
	}
	if got := grants(b); len(got) != 0 {
		t.Fatalf("grants before any request: %v", got)
	}
	r, err := a.Create(ctx, dev, access.RequestSpec{Entitlement: "db-admin", Reason: "fix index", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r, err = a.Review(ctx, lee, r.ID, true, "ok", r.Digest); err != nil || r.GrantID == "" {
		t.Fatalf("approve: %+v, %v", r, err)
	}
	// b read "no grants" before the approval on a: its next State sees it.
	if got := grants(b); !slices.Equal(got, []string{r.GrantID}) {
		t.Fatalf("grants on b after the approval on a: %v, want [%s]", got, r.GrantID)
	}
	if got := grants(b); !slices.Equal(got, []string{r.GrantID}) { // from b's cache
		t.Fatalf("grants on b, read again: %v", got)
	}
	if _, _, err := a.RevokeGrant(ctx, olga, r.GrantID, "no longer needed"); err != nil {
		t.Fatal(err)
	}
	if got := grants(b); len(got) != 0 {
		t.Fatalf("grants on b after the revocation on a: %v, want none", got)
	}

	certified := func(svc *access.Service) time.Time {
		t.Helper()
		st, err := svc.State(ctx, dev)
		if err != nil {
			t.Fatal(err)
		}
		return st.Certified["std-ci"]
	}
	if _, err := a.Certify(ctx, olga, "std-ci", access.Certify, "still used"); err != nil {
		t.Fatal(err)
	}
	if certified(b).IsZero() {
		t.Fatal("certification on a not seen by b")
	}
	if _, err := a.Certify(ctx, olga, "std-ci", access.Revoke, "unused"); err != nil {
		t.Fatal(err)
	}
	if at := certified(b); !at.IsZero() {
		t.Fatalf("std-ci after its owner revoked it on a: certified at %v on b, want revoked", at)
	}

	// A grant created straight in the store after a flush: b must not
	// answer from what it read before the flush.
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	g := &access.Grant{ID: "g-after-flush", Kind: policy.GrantRequest, Subject: dev.ID, Entitlement: "db-admin", Reason: "r",
		Start: now, End: now.Add(time.Hour), State: access.GrantActive, CreatedAt: now}
	if err := store.CreateGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if got := grants(b); !slices.Equal(got, []string{g.ID}) {
		t.Fatalf("grants on b after a flush and a new grant: %v", got)
	}
}

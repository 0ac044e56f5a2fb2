package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/policy"
)

func TestNewOptions(t *testing.T) {
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	s, err := redis.New(c, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := redis.Options{Shards: 16, Prefix: "mf:access", RecordRetention: 90 * 24 * time.Hour}
	if got := s.Options(); got != want {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}
	ring := goredis.NewRing(&goredis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	for _, tc := range []struct {
		c    goredis.UniversalClient
		opts redis.Options
		want string
	}{
		{nil, redis.Options{}, "redis: nil client"},
		{c, redis.Options{Shards: -1}, "redis: Shards -1 is not between 1 and 16384"},
		{c, redis.Options{Prefix: "a{b}"}, `redis: Prefix "a{b}" contains '{' or '}'`},
		{c, redis.Options{RecordRetention: -time.Second}, "redis: RecordRetention -1s is negative"},
		{c, redis.Options{RecordRetention: time.Microsecond}, "redis: RecordRetention 1µs is under a millisecond"},
		{c, redis.Options{WaitReplicas: -1}, "redis: WaitReplicas -1 is negative"},
		{ring, redis.Options{WaitReplicas: 1}, "redis: WaitReplicas needs a *redis.Client or *redis.ClusterClient, not *redis.Ring"},
	} {
		if _, err := redis.New(tc.c, tc.opts); err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
	if _, err := redis.New(ring, redis.Options{}); err != nil {
		t.Errorf("New(ring) without WaitReplicas: %v", err)
	}
}

func TestArgumentErrors(t *testing.T) {
	_, _, s := single(t, redis.Options{})
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"CreateRequest(nil)", s.CreateRequest(ctx, nil), "redis: nil request"},
		{"CreateRequest without id", s.CreateRequest(ctx, &access.Request{}), "redis: request without id"},
		{"CreateGrant without id", s.CreateGrant(ctx, &access.Grant{}), "redis: grant without id"},
		{"AddCertification without grant", s.AddCertification(ctx, &access.Certification{ID: "c"}), "redis: certification without id or grant id"},
		{"AppendRecord without id", s.AppendRecord(ctx, &access.DecisionRecord{}), "redis: record without id"},
		{"AppendRecord past 2^53 ms", s.AppendRecord(ctx, &access.DecisionRecord{ID: "r", At: time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)}), "out of range"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, tc.err, tc.want)
		}
	}
	if _, _, err := s.Mark(ctx, "k", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("Mark in the year 10000: no error")
	}
	if _, err := s.UpdateRequest(ctx, nil); err == nil || err.Error() != "redis: nil request" {
		t.Errorf("UpdateRequest(nil): %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.GetRequest(cancelled, "x"); !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "redis: ") {
		t.Errorf("GetRequest with a cancelled context: %v", err)
	}
}

// TestKeyLayout checks the keys doc.go describes, and that an update
// moves index entries instead of copying them.
func TestKeyLayout(t *testing.T) {
	_, c, s := single(t, redis.Options{Shards: 4})
	ctx := t.Context()
	r := newRequest(1, "user:alice", "db")
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	k := func(rest string) string { return keyOf(s, r.ID, rest) }
	if m := c.HGetAll(ctx, k("request:"+r.ID)).Val(); m["v"] != "1" || m["r"] != "user:alice" || m["e"] != "db" || m["t"] != "pending" || !strings.HasPrefix(m["j"], `{"id":"`+r.ID) {
		t.Fatalf("request hash %v", m)
	}
	for _, idx := range []string{"requests", "requests:requester:user:alice", "requests:entitlement:db", "requests:state:pending"} {
		if got := c.ZRange(ctx, k(idx), 0, -1).Val(); !slices.Equal(got, []string{r.ID}) {
			t.Errorf("%s = %v", idx, got)
		}
	}
	r.Requester.ID, r.Entitlement, r.State = "user:bob", "web", access.RequestApproved
	if _, err := s.UpdateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	for idx, want := range map[string]int64{
		"requests": 1, "requests:requester:user:alice": 0, "requests:entitlement:db": 0, "requests:state:pending": 0,
		"requests:requester:user:bob": 1, "requests:entitlement:web": 1, "requests:state:approved": 1,
	} {
		if n := c.ZCard(ctx, k(idx)).Val(); n != want {
			t.Errorf("%s holds %d ids, want %d", idx, n, want)
		}
	}
	if v := c.HGet(ctx, k("request:"+r.ID), "v").Val(); v != "2" {
		t.Errorf("version field %q", v)
	}

	g := newGrant(1, "user:alice", "db", policy.GrantBreakGlass)
	if err := s.CreateGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if m := c.HGetAll(ctx, keyOf(s, g.ID, "grant:"+g.ID)).Val(); m["s"] != "user:alice" || m["k"] != "break_glass" || m["t"] != "active" {
		t.Fatalf("grant hash %v", m)
	}
	cert := &access.Certification{ID: lease.NewID(at(1)), GrantID: "g1", At: at(1).Add(5), Decision: access.Certify}
	if err := s.AddCertification(ctx, cert); err != nil {
		t.Fatal(err)
	}
	if m := c.HGetAll(ctx, keyOf(s, cert.ID, "cert:"+cert.ID)).Val(); m["g"] != "g1" || m["n"] != fmt.Sprint(at(1).Nanosecond()+5) {
		t.Fatalf("certification hash %v", m)
	}
	if id := c.HGet(ctx, keyOf(s, cert.ID, "certs:latest"), "g1").Val(); id != cert.ID {
		t.Fatalf("certs:latest g1 = %q", id)
	}
	if _, _, err := s.Mark(ctx, "seen/g1", at(1)); err != nil {
		t.Fatal(err)
	}
	if v := c.Get(ctx, keyOf(s, "seen/g1", "mark:seen/g1")).Val(); v != "2031-03-04T05:06:07.001Z" {
		t.Fatalf("mark = %q", v)
	}
	rec := &access.DecisionRecord{ID: lease.NewID(at(10)), At: at(7)}
	if err := s.AppendRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	rk := func(rest string) string { return keyOf(s, rec.ID, rest) }
	if c.Exists(ctx, rk("record:"+rec.ID)).Val() != 1 || c.ZScore(ctx, rk("records:at"), rec.ID).Val() != float64(at(7).UnixMilli()) ||
		c.ZRank(ctx, rk("records"), rec.ID).Val() != 0 || c.Get(ctx, rk("records:skew")).Val() != "3" {
		t.Fatalf("record keys: skew %q", c.Get(ctx, rk("records:skew")).Val())
	}
}

// TestMarkTimes: marks keep the time to the nanosecond, in UTC.
func TestMarkTimes(t *testing.T) {
	_, _, s := single(t, redis.Options{})
	ctx := t.Context()
	when := time.Date(2031, 3, 4, 5, 6, 7, 123456789, time.FixedZone("x", 3600))
	got, first, err := s.Mark(ctx, "k", when)
	if err != nil || !first || !got.Equal(when) {
		t.Fatalf("Mark = %v %v %v", got, first, err)
	}
	got, first, err = s.Mark(ctx, "k", when.Add(time.Hour))
	if err != nil || first || !got.Equal(when) || got.Location() != time.UTC {
		t.Fatalf("second Mark = %v %v %v", got, first, err)
	}
}

// TestRecordsSince: with valid ids, a Records walk with Since starts at
// the least id a record at or after Since can have in each shard. A
// poisoned index entry below that id (its record key is a list, which
// makes any walk that reaches it fail) is never reached; a walk from the
// start is. Once a record with an id of another shape is in the shard,
// the walk starts at the first id again.
func TestRecordsSince(t *testing.T) {
	_, c, s := single(t, redis.Options{Shards: 1})
	ctx := t.Context()
	var ids []string
	for i := range 100 {
		// Times stray from the ids' by up to 2s either way.
		rec := &access.DecisionRecord{ID: lease.NewID(at(i * 1000)), At: at(i*1000 + (i%5-2)*1000), Action: access.ActionIssue}
		if err := s.AppendRecord(ctx, rec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	poison := lease.NewID(at(-10_000))
	c.ZAdd(ctx, keyOf(s, poison, "records"), goredis.Z{Member: poison})
	c.RPush(ctx, keyOf(s, poison, "record:"+poison), "poison")

	got, err := s.Records(ctx, access.RecordQuery{Since: at(50_000)})
	if err != nil {
		t.Fatalf("Records since: %v (the walk reached the poisoned entry)", err)
	}
	var want []string
	for i, id := range ids {
		if i*1000+(i%5-2)*1000 >= 50_000 {
			want = append(want, id)
		}
	}
	var gotIDs []string
	for _, r := range got {
		gotIDs = append(gotIDs, r.ID)
	}
	if !slices.Equal(gotIDs, want) {
		t.Fatalf("Records since = %v, want %v", gotIDs, want)
	}
	_, err = s.Records(ctx, access.RecordQuery{})
	wantStoreError(t, "Records from the start", err, "holds a list")

	if err := s.AppendRecord(ctx, &access.DecisionRecord{ID: "not-a-lease-id", At: at(0)}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Records(ctx, access.RecordQuery{Since: at(50_000)})
	wantStoreError(t, "Records since, with an id of another shape", err, "holds a list")
}

// TestRecordRetention: each append trims, from its shard, up to 16
// records more than RecordRetention older than itself.
func TestRecordRetention(t *testing.T) {
	_, c, s := single(t, redis.Options{Shards: 1, RecordRetention: time.Hour})
	ctx := t.Context()
	for i := range 40 {
		if err := s.AppendRecord(ctx, &access.DecisionRecord{ID: lease.NewID(at(i)), At: at(i)}); err != nil {
			t.Fatal(err)
		}
	}
	later := at(0).Add(time.Hour + 20*time.Millisecond) // records 0..19 are past retention
	count := func() int {
		all, err := s.Records(ctx, access.RecordQuery{Limit: access.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		return len(all)
	}
	if err := s.AppendRecord(ctx, &access.DecisionRecord{ID: lease.NewID(later), At: later}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 41-16 {
		t.Fatalf("%d records after one append past retention, want %d", n, 41-16)
	}
	if err := s.AppendRecord(ctx, &access.DecisionRecord{ID: lease.NewID(later.Add(1)), At: later}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 22 {
		t.Fatalf("%d records after two appends, want 22 (20 trimmed)", n)
	}
	p := s.Options().Prefix + ":{0}:"
	if n := c.ZCard(ctx, p+"records:at").Val(); n != 22 {
		t.Fatalf("records:at holds %d", n)
	}
	if n := c.Exists(ctx, p+"record:"+lease.NewID(at(0))).Val(); n != 0 {
		t.Fatal("a trimmed record's key remains")
	}
}

// TestListBudget: listings whose matches are sparse in the index they
// walk take several scripts (each examines at most 1000 ids) and still
// return exact pages.
func TestListBudget(t *testing.T) {
	_, _, s := single(t, redis.Options{Shards: 1})
	ctx := t.Context()
	var sparse []string
	for i := range 2600 {
		who, ent := "user:alice", "db"
		if i%2 == 1 {
			who = "user:bob"
		}
		if i%10 == 9 {
			ent = "web"
		}
		r := newRequest(i, who, ent)
		if who == "user:bob" && i%100 != 99 {
			r.State = access.RequestDenied
		}
		if err := s.CreateRequest(ctx, r); err != nil {
			t.Fatal(err)
		}
		if r.State == access.RequestPending && who == "user:bob" {
			sparse = append(sparse, r.ID)
		}
	}
	// Requester bob (1,300 ids) is the smallest index; 26 of them are
	// pending, so a page of 3 takes up to 1,300 ids examined.
	q := access.RequestQuery{Requester: "user:bob", States: []access.RequestState{access.RequestPending}, Limit: 3}
	var got []string
	for {
		page, err := s.ListRequests(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			got = append(got, r.ID)
		}
		if len(page) < q.Limit {
			break
		}
		q.After = page[len(page)-1].ID
	}
	if !slices.Equal(got, sparse) {
		t.Fatalf("paged sparse matches: %d, want %d", len(got), len(sparse))
	}
	all, err := s.ListRequests(ctx, access.RequestQuery{Entitlement: "db", States: []access.RequestState{access.RequestPending, access.RequestDenied}, Limit: 2000})
	if err != nil || len(all) != 1000 {
		t.Fatalf("List limited to 1000: %d, %v", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].ID >= all[i].ID {
			t.Fatal("not in id order")
		}
	}
	// Records of ids of another shape: no skew bound, Since filters
	// 2,600 records in three scripts.
	for i := range 2600 {
		if err := s.AppendRecord(ctx, &access.DecisionRecord{ID: fmt.Sprintf("rec-%05d", i), At: at(i)}); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := s.Records(ctx, access.RecordQuery{Since: at(2590)})
	if err != nil || len(recs) != 10 || recs[0].ID != "rec-02590" {
		t.Fatalf("Records since: %d, %v", len(recs), err)
	}
}

package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// AddCertification stores a certification decision. ErrExists if its id
// is taken. See access.Store.
func (s *Store) AddCertification(ctx context.Context, c *access.Certification) error {
	if err := live(ctx); err != nil {
		return err
	}
	if c == nil {
		return errors.New("redis: nil certification")
	}
	if c.ID == "" || c.GrantID == "" {
		return errors.New("redis: certification without id or grant id")
	}
	if sec := c.At.Unix(); sec > maxMillis || sec < -maxMillis {
		return fmt.Errorf("redis: certification %s: time %s is out of range", c.ID, c.At.Format(time.RFC3339))
	}
	data, err := encodeJSON("certification", c.ID, c)
	if err != nil {
		return err
	}
	k := s.keysOf(c.ID)
	_, err = s.run(ctx, addCertScript, []string{k.cert(c.ID), k.certsLatest(), k.gen()},
		k.p, c.ID, c.GrantID, strconv.FormatInt(c.At.Unix(), 10), strconv.Itoa(c.At.Nanosecond()), data, newGeneration())
	if err != nil {
		return fail("add", "certification", c.ID, err)
	}
	return nil
}

// LatestCertifications returns the latest certification (greatest At,
// then greatest id) of every standing grant id that has one: each shard
// keeps the latest of its own certifications per grant, and the shards'
// are merged (one pipeline). See access.Store.
func (s *Store) LatestCertifications(ctx context.Context) (map[string]*access.Certification, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	cmds, err := s.evalEach(ctx, latestCertsScript, len(s.shards), func(i int) ([]string, []any) {
		k := s.shards[i]
		return []string{k.certsLatest()}, []any{k.p}
	})
	if err != nil {
		return nil, fmt.Errorf("redis: latest certifications: %w", err)
	}
	out := map[string]*access.Certification{}
	for _, cmd := range cmds {
		list, ok := cmd.Val().([]any)
		if !ok {
			return nil, fmt.Errorf("redis: latest certifications: unexpected reply %v", cmd.Val())
		}
		for _, v := range list {
			data, _ := v.(string)
			c, err := decoded[access.Certification]("certification", "(latest)", data)
			if err != nil {
				return nil, err
			}
			cur := out[c.GrantID]
			if cur == nil || c.At.After(cur.At) || (c.At.Equal(cur.At) && c.ID > cur.ID) {
				out[c.GrantID] = c
			}
		}
	}
	return out, nil
}

// Mark stores at under key unless the key is marked already, and returns
// the stored time and whether this call stored it. See access.Store.
func (s *Store) Mark(ctx context.Context, key string, at time.Time) (time.Time, bool, error) {
	if err := live(ctx); err != nil {
		return time.Time{}, false, err
	}
	if y := at.UTC().Year(); y < 0 || y > 9999 {
		return time.Time{}, false, fmt.Errorf("redis: mark %q: time %s is out of range", key, at)
	}
	res, err := s.run(ctx, markScript, []string{s.keysOf(key).mark(key)}, at.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return time.Time{}, false, fail("set", "mark", strconv.Quote(key), err)
	}
	r, ok := res.([]any)
	if !ok || len(r) != 2 {
		return time.Time{}, false, fmt.Errorf("redis: mark %q: unexpected reply %v", key, res)
	}
	stored, _ := r[0].(int64)
	text, _ := r[1].(string)
	t, err := time.Parse(time.RFC3339Nano, text)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("redis: mark %q is damaged: %w", key, err)
	}
	return t, stored == 1, nil
}

// Unmark removes a mark; removing a key that is not marked is not an
// error. See access.Store.
func (s *Store) Unmark(ctx context.Context, key string) error {
	if err := live(ctx); err != nil {
		return err
	}
	if _, err := s.run(ctx, unmarkScript, []string{s.keysOf(key).mark(key)}); err != nil {
		return fail("remove", "mark", strconv.Quote(key), err)
	}
	return nil
}

// AppendRecord stores a decision record. ErrExists if its id is taken.
// See access.Store.
//
// The same script removes up to 16 records of the shard whose At is more
// than Options.RecordRetention before rec.At.
func (s *Store) AppendRecord(ctx context.Context, rec *access.DecisionRecord) error {
	if err := live(ctx); err != nil {
		return err
	}
	if rec == nil {
		return errors.New("redis: nil record")
	}
	if rec.ID == "" {
		return errors.New("redis: record without id")
	}
	at := rec.At.UnixMilli()
	if at > maxMillis || at < -maxMillis {
		return fmt.Errorf("redis: record %s: time %s is out of range", rec.ID, rec.At.Format(time.RFC3339))
	}
	cutoff := rec.At.Add(-s.opts.RecordRetention).UnixMilli()
	skew := "u" // the id carries no time: the shard's walks start at the first id
	if t, ok := idTime(rec.ID); ok && t-at <= maxMillis && t-at >= -maxMillis {
		skew = strconv.FormatInt(t-at, 10)
	}
	data, err := encodeJSON("record", rec.ID, rec)
	if err != nil {
		return err
	}
	k := s.keysOf(rec.ID)
	_, err = s.run(ctx, appendScript, []string{k.record(rec.ID), k.records(), k.recordsAt(), k.recordsSkew()},
		k.p, rec.ID, data, at, skew, cutoff, trimBatch)
	if err != nil {
		return fail("append", "record", rec.ID, err)
	}
	return nil
}

// Records returns up to q.Limit records with At at or after q.Since and
// ids after q.After, in ascending id order. See access.Store.
//
// Each shard is walked in id order; with q.Since set, the walk starts at
// the least id a record at or after q.Since can have in that shard (by
// the shard's skew, see doc.go) and skips earlier records by their time
// index.
func (s *Store) Records(ctx context.Context, q access.RecordQuery) ([]*access.DecisionRecord, error) {
	if err := live(ctx); err != nil {
		return nil, err
	}
	since := ""
	if !q.Since.IsZero() {
		since = strconv.FormatInt(min(max(q.Since.UnixMilli(), -maxMillis), maxMillis), 10)
	}
	streams := make([]*stream, len(s.shards))
	for i, k := range s.shards {
		streams[i] = &stream{
			keys: []string{k.records(), k.recordsAt(), k.recordsSkew()},
			args: []any{k.p + kRecord, since},
			min:  afterBound(q.After),
		}
	}
	out, err := walkStreams(ctx, s, recordsScript, streams, access.PageLimit(q.Limit), func(id, data string) (*access.DecisionRecord, bool, error) {
		rec, err := decodeJSON[access.DecisionRecord]("record", id, data)
		if err != nil {
			return nil, false, err
		}
		return rec, !rec.At.Before(q.Since), nil
	})
	if err != nil {
		return nil, fmt.Errorf("redis: records: %w", err)
	}
	return out, nil
}

// idTime is the time in a lease.NewID-style id: its first 10 characters,
// 48 bits of milliseconds. ok is false for an id of another shape.
func idTime(id string) (ms int64, ok bool) {
	if !lease.ValidID(id) {
		return 0, false
	}
	for i := range 10 {
		ms = ms<<5 | int64(strings.IndexByte(crockford, id[i]))
	}
	return ms, true
}

const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

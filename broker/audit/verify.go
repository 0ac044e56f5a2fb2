package audit

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
)

// ProblemKind is what Verify found wrong.
type ProblemKind string

const (
	// Modified: an event's content no longer matches its hash, or its hash
	// no longer matches the prev its successor recorded (it was altered
	// and rehashed, or replaced).
	Modified ProblemKind = "modified"
	// Deleted: events are missing: a gap in seq, a prefix removed without
	// an audit.trimmed record, or a tail shorter than the chain head.
	Deleted ProblemKind = "deleted"
	// Inserted: an event that is not part of the chain: a second event
	// with a seq already taken, an extra seq that does not link, or events
	// past the chain head.
	Inserted ProblemKind = "inserted"
	// Reordered: the events are all there but stored out of seq order.
	Reordered ProblemKind = "reordered"
	// Malformed: a record is not a well-formed event (not JSON, unknown
	// fields, truncated).
	Malformed ProblemKind = "malformed"
	// BadCheckpoint: a checkpoint does not sign the event before it, or
	// its signature does not verify with a trusted key. A checkpoint that
	// fails after a consistent chain means the events since the previous
	// checkpoint were rewritten wholesale (every hash recomputed).
	BadCheckpoint ProblemKind = "bad_checkpoint"
)

// Problem is the first thing wrong with a trail.
type Problem struct {
	// Kind is what is wrong.
	Kind ProblemKind
	// Seq is where: the modified, inserted or reordered event, or the
	// first missing seq.
	Seq uint64
	// Pos is where the record is stored ("line 12", "entry 12-0").
	Pos string
	// Detail says what is wrong, for people.
	Detail string
}

// String returns "<kind> at seq <n> (<pos>): <detail>".
func (p *Problem) String() string {
	s := string(p.Kind) + " at seq " + strconv.FormatUint(p.Seq, 10)
	if p.Pos != "" {
		s += " (" + p.Pos + ")"
	}
	return s + ": " + p.Detail
}

// Report is the result of Verify.
type Report struct {
	// Records is how many records were read.
	Records uint64
	// First and Last are the seqs of the first and last event that
	// verified.
	First, Last uint64
	// LastHash is the hash of Last: keep it elsewhere to detect a later
	// rewrite of the unsealed tail.
	LastHash string
	// Checkpoints counts checkpoints that verified.
	Checkpoints int
	// LastCheckpoint is the seq of the last one.
	LastCheckpoint uint64
	// Unsealed counts verified events after the last verified checkpoint:
	// a rewrite of those alone is not caught by any signature. Compare
	// Last and LastHash with a copy of the head kept elsewhere to catch
	// it, or wait for the next checkpoint.
	Unsealed uint64
	// SignaturesChecked is false when Verify had no public key: then
	// checkpoints were checked for shape only.
	SignaturesChecked bool
	// TrimmedThrough is set when the trail starts after a recorded trim:
	// events 1..TrimmedThrough were removed, as an audit.trimmed event
	// records, and the first event is the signed checkpoint of
	// TrimmedThrough.
	TrimmedThrough uint64
	// Problem is the first problem found; nil when the trail verifies.
	Problem *Problem

	// For Trim: the last verified checkpoint and its prev.
	lastCP     uint64
	lastCPPrev string
}

// OK reports whether the trail verified.
func (r Report) OK() bool { return r.Problem == nil }

// String summarises the report on one line.
func (r Report) String() string {
	if r.Problem != nil {
		return "FAILED: " + r.Problem.String()
	}
	if r.Records == 0 {
		return "ok: empty trail"
	}
	s := fmt.Sprintf("ok: seq %d..%d, %d checkpoint(s)", r.First, r.Last, r.Checkpoints)
	if !r.SignaturesChecked {
		s += " (signatures not checked: no public key)"
	}
	if r.TrimmedThrough > 0 {
		s += fmt.Sprintf(", trimmed through seq %d", r.TrimmedThrough)
	}
	if r.Unsealed > 0 {
		s += fmt.Sprintf(", %d event(s) after the last checkpoint", r.Unsealed)
	}
	return s
}

// headReader is implemented by readers that know the chain head apart
// from the events (RedisStreamSink), so Verify can tell a deleted tail.
type headReader interface {
	storedHead(ctx context.Context) (Head, bool, error)
}

// lookahead is how many records Verify reads past an anomaly to tell
// reordering from deletion and insertion.
const lookahead = 4096

// Verify reads the whole trail from r, recomputes every hash and link,
// checks every checkpoint's signature with pubs (Ed25519 or ECDSA public
// keys; several for rotated keys or replicas with their own keys), and
// reports the first problem: the first event that was modified, deleted,
// inserted or reordered, a malformed record, or a bad checkpoint. With no
// key, signatures are not checked (Report.SignaturesChecked is false).
//
// The error is for a trail that could not be read (I/O, Redis) or a key
// that cannot be used; tampering is reported in Report.Problem.
func Verify(ctx context.Context, r Reader, pubs ...crypto.PublicKey) (Report, error) {
	ring, err := newKeyRing(pubs)
	if err != nil {
		return Report{}, err
	}
	return verify(ctx, r, ring, verifyOptions{})
}

type verifyOptions struct {
	// through stops after the event with this seq (0: read everything).
	through uint64
	// trimming: called by Trim, which needs the last checkpoint.
	trimming bool
}

// item is one record read, or an error.
type item struct {
	rec Record
	err error
}

// verifier holds Verify's state.
type verifier struct {
	ring   keyRing
	rep    Report
	expect uint64 // the next seq
	prev   string // the hash the next event must carry as Prev
	pos    string // where the last accepted event is
	// A trail that starts after a trim needs an audit.trimmed record of it.
	needTrim   bool
	trimHash   string
	trimSeen   bool
	next       func() (Record, error, bool)
	buf        []item
	readErr    error
	acceptedAt map[uint64]string // pos of recently accepted seqs, for duplicates
}

func verify(ctx context.Context, r Reader, ring keyRing, opts verifyOptions) (Report, error) {
	next, stop := iter.Pull2(r.Records(ctx, 0))
	defer stop()
	v := &verifier{ring: ring, expect: 1, prev: GenesisHash, next: next, acceptedAt: map[uint64]string{}}
	v.rep.SignaturesChecked = len(ring) > 0
	for {
		it, ok := v.pull()
		if !ok {
			break
		}
		if it.err != nil {
			var me *MalformedError
			if !errors.As(it.err, &me) {
				return v.rep, it.err
			}
			v.fail(Malformed, v.expect, me.Pos, me.Reason)
			break
		}
		v.rep.Records++
		if done := v.step(it.rec); done {
			break
		}
		if opts.through > 0 && v.rep.Last >= opts.through {
			v.finish()
			return v.rep, nil
		}
	}
	if v.readErr != nil {
		return v.rep, v.readErr
	}
	if v.rep.Problem == nil && !opts.trimming {
		if v.needTrim && !v.trimSeen {
			v.fail(Deleted, 1, "", fmt.Sprintf("events 1..%d were removed without an audit.trimmed record of it", v.rep.TrimmedThrough))
		} else if hr, ok := r.(headReader); ok {
			h, ok, err := hr.storedHead(ctx)
			if err != nil {
				return v.rep, err
			}
			if ok {
				v.checkHead(h)
			}
		}
	}
	v.finish()
	return v.rep, nil
}

// pull returns the next record, from the lookahead buffer first.
func (v *verifier) pull() (item, bool) {
	if len(v.buf) > 0 {
		it := v.buf[0]
		v.buf = v.buf[1:]
		return it, true
	}
	return v.read()
}

// read reads one record from the reader; a read error ends the trail.
func (v *verifier) read() (item, bool) {
	if v.readErr != nil {
		return item{}, false
	}
	rec, err, ok := v.next()
	if !ok {
		return item{}, false
	}
	if err != nil && !errors.Is(err, ErrMalformed) {
		v.readErr = err
		return item{}, false
	}
	return item{rec, err}, true
}

// ahead fills the lookahead buffer and returns the well-formed events in
// it, in storage order.
func (v *verifier) ahead() []Record {
	for len(v.buf) < lookahead {
		it, ok := v.read()
		if !ok {
			break
		}
		v.buf = append(v.buf, it)
	}
	var out []Record
	for _, it := range v.buf {
		if it.err == nil {
			out = append(out, it.rec)
		}
	}
	return out
}

func (v *verifier) fail(k ProblemKind, seq uint64, pos, detail string) {
	v.rep.Problem = &Problem{Kind: k, Seq: seq, Pos: pos, Detail: detail}
}

func (v *verifier) finish() {
	if v.rep.Records == 0 && v.rep.Last == 0 {
		return
	}
	base := max(v.rep.LastCheckpoint, v.rep.First-1)
	if v.rep.First > 0 && v.rep.Last >= base {
		v.rep.Unsealed = v.rep.Last - base
	}
}

// step checks one event; it returns true when a problem ends the check.
func (v *verifier) step(rec Record) bool {
	e := &rec.Event
	if v.rep.First == 0 && v.expect == 1 && e.Seq > 1 && v.trimmedStart(rec) {
		return v.rep.Problem != nil
	}
	switch {
	case e.Seq == v.expect:
		return v.inOrder(rec)
	case e.Seq > v.expect:
		v.gap(rec)
		return true
	default:
		v.behind(rec)
		return true
	}
}

// trimmedStart accepts a first event that is the signed checkpoint of a
// trimmed prefix; it returns false when the event is not one.
func (v *verifier) trimmedStart(rec Record) bool {
	e := &rec.Event
	cp := e.Checkpoint
	if e.Type != TypeCheckpoint || cp == nil || cp.Seq != e.Seq-1 || cp.Hash != e.Prev {
		return false
	}
	if h, err := ComputeHash(e); err != nil || h != e.Hash {
		return false
	}
	if len(v.ring) > 0 {
		if err := v.ring.verifyCheckpoint(cp); err != nil {
			v.fail(BadCheckpoint, e.Seq, rec.Pos, "the first event claims to seal a trimmed prefix, but "+err.Error())
			return true
		}
	}
	v.rep.TrimmedThrough = e.Seq - 1
	v.needTrim, v.trimHash = true, e.Prev
	v.expect, v.prev = e.Seq, e.Prev
	v.inOrder(rec)
	return true
}

// inOrder checks an event that has the expected seq.
func (v *verifier) inOrder(rec Record) bool {
	e := &rec.Event
	h, err := ComputeHash(e)
	switch {
	case err != nil:
		v.fail(Modified, e.Seq, rec.Pos, "prev is not a hash")
		return true
	case h != e.Hash:
		v.fail(Modified, e.Seq, rec.Pos, "the content does not match the event's hash")
		return true
	case e.Prev != v.prev && e.Seq == 1:
		v.fail(Modified, 1, rec.Pos, "the first event does not start from the genesis hash")
		return true
	case e.Prev != v.prev:
		v.fail(Modified, e.Seq-1, v.pos, fmt.Sprintf("its hash does not match the prev recorded by seq %d (%s): seq %d was altered and its hash recomputed, or replaced",
			e.Seq, rec.Pos, e.Seq-1))
		return true
	}
	if e.Type == TypeCheckpoint {
		cp := e.Checkpoint
		switch {
		case cp == nil:
			v.fail(BadCheckpoint, e.Seq, rec.Pos, "checkpoint event without a checkpoint")
			return true
		case cp.Seq != e.Seq-1 || cp.Hash != e.Prev:
			v.fail(BadCheckpoint, e.Seq, rec.Pos, fmt.Sprintf("the checkpoint signs seq %d, not the event before it", cp.Seq))
			return true
		}
		if len(v.ring) > 0 {
			if err := v.ring.verifyCheckpoint(cp); err != nil {
				detail := err.Error()
				if v.rep.LastCheckpoint > 0 {
					detail += fmt.Sprintf("; the events after the checkpoint at seq %d were rewritten", v.rep.LastCheckpoint)
				} else {
					detail += "; the events before it were rewritten"
				}
				v.fail(BadCheckpoint, e.Seq, rec.Pos, detail)
				return true
			}
		}
		v.rep.Checkpoints++
		v.rep.LastCheckpoint = e.Seq
		v.rep.lastCP, v.rep.lastCPPrev = e.Seq, e.Prev
	} else if e.Checkpoint != nil {
		v.fail(Modified, e.Seq, rec.Pos, "a checkpoint on an event that is not a checkpoint")
		return true
	}
	if e.Type == TypeTrimmed && v.needTrim &&
		e.Fields["through_seq"] == strconv.FormatUint(v.rep.TrimmedThrough, 10) && e.Fields["through_hash"] == v.trimHash {
		v.trimSeen = true
	}
	if v.rep.First == 0 {
		v.rep.First = e.Seq
	}
	v.rep.Last, v.rep.LastHash = e.Seq, e.Hash
	v.prev, v.pos = e.Hash, rec.Pos
	v.expect = e.Seq + 1
	v.acceptedAt[e.Seq] = rec.Pos
	if len(v.acceptedAt) > 2*lookahead {
		clear(v.acceptedAt)
		v.acceptedAt[e.Seq] = rec.Pos
	}
	return false
}

// gap classifies an event whose seq is past the expected one: the events
// between were deleted, or stored later (reordered), or this one does not
// belong here (inserted).
func (v *verifier) gap(rec Record) {
	e := &rec.Event
	later := v.ahead()
	var resumes bool
	if len(later) > 0 {
		n := later[0].Event
		resumes = n.Seq == v.expect && n.Prev == v.prev
	}
	find := func(pred func(*Event) bool) *Record {
		for i := range later {
			if pred(&later[i].Event) {
				return &later[i]
			}
		}
		return nil
	}
	// A genuine event moved earlier still links to its real predecessor,
	// which is stored later.
	if pred := find(func(x *Event) bool { return x.Seq == e.Seq-1 && x.Hash == e.Prev }); pred != nil {
		v.fail(Reordered, e.Seq, rec.Pos, fmt.Sprintf("seq %d is stored before seq %d (%s)", e.Seq, v.expect, posOf(later, v.expect)))
		return
	}
	if dup := find(func(x *Event) bool { return x.Seq == e.Seq }); dup != nil && resumes {
		v.fail(Inserted, e.Seq, rec.Pos, fmt.Sprintf("an extra event with seq %d is stored where seq %d belongs; seq %d is also at %s",
			e.Seq, v.expect, e.Seq, dup.Pos))
		return
	}
	if resumes {
		v.fail(Inserted, e.Seq, rec.Pos, fmt.Sprintf("an event with seq %d that links to nothing is stored where seq %d belongs", e.Seq, v.expect))
		return
	}
	if m := find(func(x *Event) bool { return x.Seq >= v.expect && x.Seq < e.Seq }); m != nil {
		v.fail(Reordered, e.Seq, rec.Pos, fmt.Sprintf("seq %d is stored before seq %d (%s)", e.Seq, m.Event.Seq, m.Pos))
		return
	}
	missing := fmt.Sprintf("seq %d is missing", v.expect)
	if e.Seq-v.expect > 1 {
		missing = fmt.Sprintf("seqs %d..%d are missing", v.expect, e.Seq-1)
	}
	where := "at the start of the trail"
	if v.expect > 1 {
		where = fmt.Sprintf("after seq %d", v.expect-1)
	}
	v.fail(Deleted, v.expect, rec.Pos, fmt.Sprintf("%s: seq %d follows %s", missing, e.Seq, strings.TrimPrefix(where, "at ")))
}

// posOf returns where seq is stored among later, or "later".
func posOf(later []Record, seq uint64) string {
	for _, r := range later {
		if r.Event.Seq == seq {
			return r.Pos
		}
	}
	return "later"
}

// behind classifies an event whose seq was already passed.
func (v *verifier) behind(rec Record) {
	e := &rec.Event
	first, ok := v.acceptedAt[e.Seq]
	if !ok {
		if e.Seq < v.rep.First {
			v.fail(Inserted, e.Seq, rec.Pos, fmt.Sprintf("seq %d is stored after seq %d, where the trail starts", e.Seq, v.rep.First))
			return
		}
		first = "an earlier record"
	}
	detail := fmt.Sprintf("a second event with seq %d (the first is at %s)", e.Seq, first)
	if later := v.ahead(); len(later) > 0 && e.Seq == v.expect-1 {
		switch n := later[0].Event; {
		case n.Seq == v.expect && n.Prev == e.Hash && n.Prev != v.prev:
			detail += fmt.Sprintf("; seq %d links to this copy, so the one at %s was inserted", v.expect, first)
		case n.Seq == v.expect && n.Prev == v.prev:
			detail += fmt.Sprintf("; seq %d links to the copy at %s, so this one was inserted", v.expect, first)
		}
	}
	v.fail(Inserted, e.Seq, rec.Pos, detail)
}

// checkHead compares the end of the stored trail with the chain head.
func (v *verifier) checkHead(h Head) {
	last := v.rep.Last
	switch {
	case h.Seq == 0 && last > 0:
		v.fail(Deleted, last+1, "", fmt.Sprintf("the chain head record is missing, so nothing confirms the trail ends at seq %d", last))
	case h.Seq > last:
		v.fail(Deleted, last+1, "", fmt.Sprintf("the chain head is at seq %d but the stored trail ends at seq %d", h.Seq, last))
	case h.Seq < last:
		v.fail(Inserted, h.Seq+1, "", fmt.Sprintf("events past the chain head (seq %d) were added outside the chain", h.Seq))
	case last > 0 && h.Hash != v.prev:
		v.fail(Modified, last, v.pos, "the last event's hash differs from the chain head's")
	}
}

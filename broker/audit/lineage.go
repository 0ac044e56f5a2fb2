package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// Root says where a lineage starts. Exactly one field is set.
type Root struct {
	// Subject: every request, grant and lease of one principal.
	Subject string
	// Entitlement: every request, grant and lease of one entitlement.
	Entitlement string
	// RequestID: one access request, its approvals, the grant it gave
	// and every lease minted under that grant.
	RequestID string
	// GrantID: one grant, the request it came from (if any) and every
	// lease minted under it.
	GrantID string
	// LeaseID: one lease, with the grant and request it rests on.
	LeaseID string
}

// NodeKind is what a lineage node stands for.
type NodeKind string

// Node kinds.
const (
	NodeSubject     NodeKind = "subject"
	NodeEntitlement NodeKind = "entitlement"
	NodeRequest     NodeKind = "request"
	NodeGrant       NodeKind = "grant"
	NodeLease       NodeKind = "lease"
)

// Node is one request, grant or lease in a lineage tree (or the subject or
// entitlement at its root).
type Node struct {
	// Kind is what the node stands for.
	Kind NodeKind
	// ID is the request, grant or lease id (the principal id or
	// entitlement name at the root of a subject or entitlement).
	ID string
	// Subject and Entitlement, as the node's events record them.
	Subject, Entitlement string
	// Events are the events about this node itself, in seq order: a
	// request's creation, approvals and end; a grant's creation, reviews
	// and end; a lease's issue, renewals, revocation request and end.
	Events []Event
	// Children are the nodes under this one (a request's grant, a grant's
	// leases), in the order of their first event.
	Children []*Node
	// State sums the node up: a request is pending, approved, denied,
	// cancelled or expired; a grant active or ended; a lease active,
	// revoking (asked to end), revoked or irrevocable. Empty for the root
	// of a subject or entitlement.
	State string
	// Start is the time of the node's first event; End when it ended
	// (zero while it has not).
	Start, End time.Time
	// How is why a lease ended or was asked to end (a lease.Reason value),
	// or why a grant ended.
	How string
	// ExpiresAt is a lease's expiry as last issued or renewed.
	ExpiresAt time.Time

	first uint64 // lowest seq of the node and its children
}

// Lineage reads the trail from r and builds the tree under root: from a
// subject or entitlement to its requests, grants and leases; from a
// request to its approvals, its grant and the leases under it, with how
// and when each ended. For a grant or lease root, the tree starts at the
// request it came from, when there is one. Decisions without a grant (a
// denial) hang on the node they name, or on the root. Children and events
// are in seq order, so the tree (and its text) is deterministic.
//
// It reads the trail twice (links can come after the events they link:
// a request's events precede the grant that names it); it does not verify
// the trail. With nothing matching, the root has no events or children.
func Lineage(ctx context.Context, r Reader, root Root) (*Node, error) {
	set := 0
	for _, s := range []string{root.Subject, root.Entitlement, root.RequestID, root.GrantID, root.LeaseID} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		return nil, errors.New("audit: lineage: exactly one of Subject, Entitlement, RequestID, GrantID, LeaseID must be set")
	}
	sc := newScope(root)
	if err := sc.scan(ctx, r, false); err != nil {
		return nil, err
	}
	if err := sc.scan(ctx, r, true); err != nil {
		return nil, err
	}
	return sc.build(), nil
}

// scope finds the events of a lineage.
type scope struct {
	root                   Root
	perLease               bool // the root selects leases one by one (subject, entitlement, lease)
	reqs, grants, leases   map[string]bool
	events                 []Event
	grantReq, leaseGrant   map[string]string
	leaseReq               map[string]string
	subjectOf, entitlement map[string]string
}

func newScope(root Root) *scope {
	return &scope{
		root: root, perLease: root.Subject != "" || root.Entitlement != "" || root.LeaseID != "",
		reqs: map[string]bool{}, grants: map[string]bool{}, leases: map[string]bool{},
		grantReq: map[string]string{}, leaseGrant: map[string]string{}, leaseReq: map[string]string{},
	}
}

func hasPrefix(t Type, ps ...string) bool {
	for _, p := range ps {
		if strings.HasPrefix(string(t), p) {
			return true
		}
	}
	return false
}

func (s *scope) direct(e *Event) bool {
	r := s.root
	switch {
	case r.Subject != "":
		return e.Subject == r.Subject
	case r.Entitlement != "":
		return e.Entitlement == r.Entitlement
	case r.RequestID != "":
		return e.RequestID == r.RequestID
	case r.GrantID != "":
		return e.GrantID == r.GrantID
	}
	return e.LeaseID == r.LeaseID
}

func (s *scope) includes(e *Event) bool {
	if e.Type == TypeCheckpoint || e.Type == TypeTrimmed {
		return false
	}
	switch {
	case s.direct(e):
		return true
	case e.LeaseID != "" && s.leases[e.LeaseID]:
		return true
	case e.GrantID != "" && s.grants[e.GrantID] && (!s.perLease || hasPrefix(e.Type, "grant.", "review.", "breakglass.")):
		return true
	case e.RequestID != "" && s.reqs[e.RequestID] && (s.root.RequestID != "" || hasPrefix(e.Type, "request.")):
		return true
	}
	return false
}

// scan reads the trail once, widening the sets of ids in scope; with
// collect, it also keeps the events in scope.
func (s *scope) scan(ctx context.Context, r Reader, collect bool) error {
	for rec, err := range r.Records(ctx, 0) {
		if err != nil {
			return err
		}
		e := &rec.Event
		if !s.includes(e) {
			continue
		}
		if e.LeaseID != "" {
			s.leases[e.LeaseID] = true
			if e.GrantID != "" {
				s.leaseGrant[e.LeaseID] = e.GrantID
			}
			if e.RequestID != "" {
				s.leaseReq[e.LeaseID] = e.RequestID
			}
		}
		if e.GrantID != "" {
			s.grants[e.GrantID] = true
			if e.RequestID != "" && s.grantReq[e.GrantID] == "" {
				s.grantReq[e.GrantID] = e.RequestID
			}
		}
		if e.RequestID != "" {
			s.reqs[e.RequestID] = true
		}
		if collect {
			s.events = append(s.events, rec.Event)
		}
	}
	return nil
}

// build makes the tree from the collected events.
func (s *scope) build() *Node {
	slices.SortStableFunc(s.events, func(a, b Event) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	nodes := map[NodeKind]map[string]*Node{NodeRequest: {}, NodeGrant: {}, NodeLease: {}}
	get := func(k NodeKind, id string) *Node {
		n := nodes[k][id]
		if n == nil {
			n = &Node{Kind: k, ID: id}
			nodes[k][id] = n
		}
		return n
	}
	var root *Node
	r := s.root
	switch {
	case r.Subject != "":
		root = &Node{Kind: NodeSubject, ID: r.Subject, Subject: r.Subject}
	case r.Entitlement != "":
		root = &Node{Kind: NodeEntitlement, ID: r.Entitlement, Entitlement: r.Entitlement}
	case r.RequestID != "":
		root = get(NodeRequest, r.RequestID)
	case r.GrantID != "":
		root = get(NodeGrant, r.GrantID)
	default:
		root = get(NodeLease, r.LeaseID)
	}
	for _, e := range s.events {
		var n *Node
		switch {
		case hasPrefix(e.Type, "request.") && e.RequestID != "":
			n = get(NodeRequest, e.RequestID)
		case hasPrefix(e.Type, "grant.", "review.", "breakglass.") && e.GrantID != "":
			n = get(NodeGrant, e.GrantID)
		case e.LeaseID != "":
			n = get(NodeLease, e.LeaseID)
		case e.GrantID != "":
			n = get(NodeGrant, e.GrantID)
		case e.RequestID != "":
			n = get(NodeRequest, e.RequestID)
		default:
			n = root
		}
		n.Events = append(n.Events, e)
		if n.Subject == "" {
			n.Subject = e.Subject
		}
		if n.Entitlement == "" {
			n.Entitlement = e.Entitlement
		}
	}
	// Parents: lease -> grant (or request), grant -> request, request -> root.
	parent := map[*Node]*Node{}
	for id, n := range nodes[NodeLease] {
		if g := s.leaseGrant[id]; g != "" {
			parent[n] = get(NodeGrant, g)
		} else if q := s.leaseReq[id]; q != "" {
			parent[n] = get(NodeRequest, q)
		}
	}
	for id, n := range nodes[NodeGrant] {
		if q := s.grantReq[id]; q != "" {
			parent[n] = get(NodeRequest, q)
		}
	}
	// A grant or lease root climbs to the request it came from.
	for {
		p := parent[root]
		if p == nil || (r.GrantID == "" && r.LeaseID == "") {
			break
		}
		root = p
	}
	for _, kind := range []NodeKind{NodeLease, NodeGrant, NodeRequest} {
		for _, n := range nodes[kind] {
			if n == root {
				continue
			}
			p := parent[n]
			if p == nil || p == n {
				p = root
			}
			p.Children = append(p.Children, n)
		}
	}
	finish(root)
	return root
}

// finish sorts children and computes the summaries, depth first.
func finish(n *Node) {
	n.first = ^uint64(0)
	if len(n.Events) > 0 {
		n.first = n.Events[0].Seq
		n.Start = n.Events[0].Time
	}
	for _, c := range n.Children {
		finish(c)
		n.first = min(n.first, c.first)
	}
	if n.Kind == NodeGrant && n.Entitlement == "" {
		// A standing grant seen only through its leases and reviews.
		for _, c := range n.Children {
			if n.Entitlement == "" {
				n.Entitlement = c.Entitlement
			} else if c.Entitlement != n.Entitlement {
				n.Entitlement = ""
				break
			}
		}
	}
	sort.SliceStable(n.Children, func(i, j int) bool {
		a, b := n.Children[i], n.Children[j]
		if a.first != b.first {
			return a.first < b.first
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.ID < b.ID
	})
	switch n.Kind {
	case NodeRequest:
		n.State = "pending"
		for _, e := range n.Events {
			switch e.Type {
			case TypeRequestApproved:
				if e.GrantID != "" {
					n.State, n.End = "approved", e.Time
				}
			case TypeRequestDenied:
				n.State, n.End = "denied", e.Time
			case TypeRequestCancelled:
				n.State, n.End = "cancelled", e.Time
			case TypeRequestExpired:
				n.State, n.End = "expired", e.Time
			}
		}
		for _, c := range n.Children {
			if c.Kind == NodeGrant && n.State == "pending" {
				n.State = "approved"
			}
		}
	case NodeGrant:
		n.State = "active"
		for _, e := range n.Events {
			if e.Type == TypeGrantEnded || e.Type == TypeReviewRevoked {
				n.State, n.End = "ended", e.Time
				if n.How == "" {
					n.How = e.How
				}
			}
		}
	case NodeLease:
		n.State = "active"
		for _, e := range n.Events {
			switch e.Type {
			case TypeLeaseIssued, TypeLeaseRenewed:
				if t, err := time.Parse(time.RFC3339Nano, e.Fields["expires_at"]); err == nil {
					n.ExpiresAt = t
				}
			case TypeLeaseRevokeRequested:
				if n.State == "active" {
					n.State, n.How = "revoking", e.How
				}
			case TypeLeaseRevoked:
				n.State, n.End = "revoked", e.Time
				if e.How != "" {
					n.How = e.How
				}
			case TypeLeaseIrrevocable:
				n.State, n.End = "irrevocable", e.Time
				if e.How != "" && n.How == "" {
					n.How = e.How
				}
			}
		}
	}
}

// WriteText renders the tree as indented text, like tree(1): one line per
// node and one per event, in seq order, times in UTC.
//
//	request r-1 db-admin for user:alice [approved]
//	├── #1 2030-01-02T10:00:00Z request.created by user:alice ttl=1h
//	├── #2 2030-01-02T10:05:00Z request.approved by user:bob
//	└── grant g-1 db-admin [active]
//	    ├── #3 2030-01-02T10:05:00Z grant.created by user:bob
//	    └── lease 01j... db-admin for user:alice [revoked: expired at 2030-01-02T11:00:01Z]
//	        ├── #4 ...
func (n *Node) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString(n.header())
	b.WriteByte('\n')
	n.writeItems(&b, "")
	_, err := io.WriteString(w, b.String())
	return err
}

// Text returns WriteText's output as a string.
func (n *Node) Text() string {
	var b strings.Builder
	n.WriteText(&b)
	return b.String()
}

func (n *Node) writeItems(b *strings.Builder, indent string) {
	type entry struct {
		seq   uint64
		event *Event
		child *Node
	}
	var items []entry
	for i := range n.Events {
		items = append(items, entry{seq: n.Events[i].Seq, event: &n.Events[i]})
	}
	for _, c := range n.Children {
		items = append(items, entry{seq: c.first, child: c})
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].seq < items[j].seq })
	for i, it := range items {
		branch, next := "├── ", "│   "
		if i == len(items)-1 {
			branch, next = "└── ", "    "
		}
		b.WriteString(indent + branch)
		if it.event != nil {
			b.WriteString(eventLine(it.event))
			b.WriteByte('\n')
			continue
		}
		b.WriteString(it.child.header())
		b.WriteByte('\n')
		it.child.writeItems(b, indent+next)
	}
}

// header is a node's line.
func (n *Node) header() string {
	s := string(n.Kind) + " " + n.ID
	if n.Kind == NodeRequest || n.Kind == NodeGrant || n.Kind == NodeLease {
		if n.Entitlement != "" {
			s += " " + n.Entitlement
		}
		if n.Subject != "" && n.Kind != NodeGrant {
			s += " for " + n.Subject
		}
	}
	if n.State == "" {
		return s
	}
	st := n.State
	if n.How != "" {
		st += ": " + n.How
	}
	switch {
	case !n.End.IsZero():
		st += " at " + n.End.UTC().Format(time.RFC3339)
	case n.Kind == NodeLease && !n.ExpiresAt.IsZero():
		st += ", expires " + n.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return s + " [" + st + "]"
}

// eventLine is an event's line: seq, time, type, actor and details.
func eventLine(e *Event) string {
	s := fmt.Sprintf("#%d %s %s", e.Seq, e.Time.UTC().Format(time.RFC3339), e.Type)
	if e.Actor != "" {
		s += " by " + e.Actor
	}
	if e.Outcome != "" {
		s += " " + e.Outcome
	}
	if e.How != "" {
		s += " how=" + e.How
	}
	if len(e.Reasons) > 0 {
		s += " reasons=" + strings.Join(e.Reasons, ",")
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := e.Fields[k]
		if v == "" || strings.ContainsAny(v, " \t\n\"") {
			v = fmt.Sprintf("%q", v)
		}
		s += " " + k + "=" + v
	}
	return s
}

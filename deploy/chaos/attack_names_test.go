package chaos

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/devca"
)

// TestAttackNames: entitlement and subject names that differ from a
// granted one by case, whitespace or a look-alike Unicode letter never
// match its grant.
func TestAttackNames(t *testing.T) {
	e := startAttackEnv(t, attackOptions{policy: authnPolicy, oidc: true})
	orders := e.conn(t, e.svidTLS(t, e.CA, devca.MintOptions{ID: mustID(ordersID), TTL: time.Hour}), "")
	entitlement := func(name string) func(t *testing.T) {
		return func(t *testing.T) {
			before := e.leases(t)
			_, err := issueOn(orders, name)
			wantStatus(t, err, codes.InvalidArgument, "entitlement")
			leaseCountUnchanged(t, e, before)
		}
	}
	// A certificate whose only URI SAN is uri (not a valid SPIFFE ID).
	rawURI := func(uri string) func(t *testing.T) {
		return func(t *testing.T) {
			before := e.leases(t)
			_, err := issueOn(e.conn(t, e.svidTLS(t, e.CA, devca.MintOptions{TTL: time.Hour, ExtraURIs: []string{uri}}), ""), "orders-api")
			wantStatus(t, err, codes.Unauthenticated, "")
			leaseCountUnchanged(t, e, before)
		}
	}
	// A valid principal that is not the granted one: PermissionDenied,
	// recorded as a denied issuance.
	denied := func(actor string, dial func(t *testing.T) error) func(t *testing.T) {
		return func(t *testing.T) {
			before := e.leases(t)
			wantStatus(t, dial(t), codes.PermissionDenied, "no grant")
			leaseCountUnchanged(t, e, before)
			e.wantRecorded(t, access.ActionIssue, actor, "", "deny", "")
		}
	}
	asSVID := func(id string) func(t *testing.T) error {
		return func(t *testing.T) error {
			_, err := issueOn(e.conn(t, e.svidTLS(t, e.CA, devca.MintOptions{ID: mustID(id), TTL: time.Hour}), ""), "orders-api")
			return err
		}
	}
	asUser := func(user string, groups ...string) func(t *testing.T) error {
		return func(t *testing.T) error {
			_, err := issueOn(e.conn(t, nil, e.OIDC.good(t, user, groups...)), "orders-api")
			return err
		}
	}
	userRefused := func(user string) func(t *testing.T) {
		return func(t *testing.T) {
			before := e.leases(t)
			_, err := issueOn(e.conn(t, nil, e.OIDC.good(t, user)), "orders-api")
			wantStatus(t, err, codes.Unauthenticated, "names the user")
			leaseCountUnchanged(t, e, before)
		}
	}

	Matrix(t, Case{ID: "A5", Title: "names differing by case, whitespace or Unicode look-alikes never match a grant"}, []Attack{
		{"control: the granted names are served", func(t *testing.T) {
			if _, err := issueOn(orders, "orders-api"); err != nil {
				t.Fatalf("workload: %v", err)
			}
			if err := asUser("alice")(t); err != nil {
				t.Fatalf("user:alice: %v", err)
			}
			if err := asUser("dave", "platform")(t); err != nil {
				t.Fatalf("a member of oidc-group:dev/platform: %v", err)
			}
		}},
		{"entitlement: upper case", entitlement("Orders-API")},
		{"entitlement: one upper-case letter", entitlement("orders-Api")},
		{"entitlement: trailing space", entitlement("orders-api ")},
		{"entitlement: leading space", entitlement(" orders-api")},
		{"entitlement: trailing tab", entitlement("orders-api\t")},
		{"entitlement: zero-width space", entitlement("orders-api\u200b")},
		{"entitlement: Cyrillic o", entitlement("\u043erders-api")},
		{"entitlement: Unicode hyphen", entitlement("orders\u2010api")},
		{"entitlement: fullwidth letters", entitlement("\uff4frders-api")},
		{"entitlement: combining accent", entitlement("orde\u0301rs-api")},
		{"subject: SPIFFE path differing by case", denied("spiffe://mayfly.test/workload/Orders", asSVID("spiffe://mayfly.test/workload/Orders"))},
		{"subject: SPIFFE path with a suffix", denied("spiffe://mayfly.test/workload/orders-x", asSVID("spiffe://mayfly.test/workload/orders-x"))},
		{"subject: SPIFFE path one segment deeper", denied("spiffe://mayfly.test/workload/orders/x", asSVID("spiffe://mayfly.test/workload/orders/x"))},
		{"subject: trust domain in upper case", rawURI("spiffe://MAYFLY.test/workload/orders")},
		{"subject: Cyrillic o in the path", rawURI("spiffe://mayfly.test/workload/\u043erders")},
		{"subject: trailing space (percent-encoded)", rawURI("spiffe://mayfly.test/workload/orders%20")},
		{"subject: percent-encoded letter", rawURI("spiffe://mayfly.test/workload/%6Frders")},
		{"subject: trailing slash", rawURI("spiffe://mayfly.test/workload/orders/")},
		{"subject: dot segment", rawURI("spiffe://mayfly.test/workload/./orders")},
		{"user: differing by case", denied("user:Alice", asUser("Alice"))},
		{"user: trailing space", userRefused("alice ")},
		{"user: Cyrillic a", userRefused("\u0430lice")},
		{"user: fullwidth letter", userRefused("\uff41lice")},
		{"group: differing by case", denied("user:erin", asUser("erin", "Platform"))},
		{"group: trailing space", denied("user:frank", asUser("frank", "platform "))},
		{"group: Cyrillic a", denied("user:grace", asUser("grace", "pl\u0430tform"))},
	})
}

package access

import (
	"context"
	"testing"
)

// genStore is a Store whose generation and grants the test sets; only
// what the state cache calls is implemented.
type genStore struct {
	Store
	gen    string
	grants []*Grant
}

func (g *genStore) Generation(context.Context) (string, error) { return g.gen, nil }
func (g *genStore) ListGrants(context.Context, GrantQuery) ([]*Grant, error) {
	return g.grants, nil
}

// TestCacheNeverServesAnOlderGeneration: a decision that read the new
// generation is not answered from a value cached under an older one, even
// when a slower decision that read the older generation took the cache
// back meanwhile.
func TestCacheNeverServesAnOlderGeneration(t *testing.T) {
	st := &genStore{gen: "old"}
	s := &Service{store: st}
	ctx := t.Context()

	slow, err := s.view(ctx) // a decision reads "old" ...
	if err != nil {
		t.Fatal(err)
	}
	st.gen, st.grants = "new", []*Grant{{ID: "g1", Subject: "dev"}} // ... a grant is created ...
	fresh, err := s.view(ctx)                                       // ... a second decision reads "new"
	if err != nil {
		t.Fatal(err)
	}
	// A third decision that also read "old" before the grant takes the
	// cache back to it, and the slow one stores what it read then.
	st.gen = "old"
	if _, err := s.view(ctx); err != nil {
		t.Fatal(err)
	}
	st.grants = nil
	if gs, _ := s.subjectGrants(ctx, slow, "dev"); len(gs) != 0 {
		t.Fatalf("slow decision read %d grants", len(gs))
	}
	st.grants = []*Grant{{ID: "g1", Subject: "dev"}}
	gs, err := s.subjectGrants(ctx, fresh, "dev")
	if err != nil || len(gs) != 1 {
		t.Fatalf("the decision that saw generation %q got %d grants (%v): served from the cache of an older one", fresh.gen, len(gs), err)
	}
}

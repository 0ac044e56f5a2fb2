package jwt

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary tokens, and mutations of a real one, to the
// issuer's verification (introspection's parsing path). It must never
// panic, and it must accept nothing but the one token it signed.
func FuzzVerify(f *testing.F) {
	iss, err := New(Config{IssuerURL: "https://mayfly.example.org", Logger: testLoggerDiscard()})
	if err != nil {
		f.Fatal(err)
	}
	c, err := iss.Issue(context.Background(), issuerRequest(testLease(time.Now(), time.Hour)))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "..", "a.b.c", c.Token, c.Token + "x", c.Token[:len(c.Token)-2]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := iss.Verify(token)
		switch {
		case err == nil && token != c.Token:
			t.Fatalf("a token the issuer did not sign verified: %q (%+v)", token, claims)
		case err != nil && !errors.Is(err, ErrInvalidToken):
			t.Fatalf("error %v is not ErrInvalidToken", err)
		}
	})
}

func testLoggerDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

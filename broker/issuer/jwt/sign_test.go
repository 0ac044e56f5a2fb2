package jwt

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
)

// TestSignedLikeGolangJWT pins the hand-built header and payload to what
// golang-jwt's SignedString makes of the same claims, byte for byte, for
// every algorithm and for strings that encoding/json escapes; and checks
// that golang-jwt verifies the signature with the public key.
func TestSignedLikeGolangJWT(t *testing.T) {
	claims := []wireClaims{
		{Iss: "https://mayfly.example.com", Sub: "spiffe://example.org/ns/shop/sa/orders", Aud: audience{"https://orders.example.com"},
			Iat: 1700000000, Nbf: 1700000000, Exp: 1700000900, Jti: "01hxyz0000000000000000000a", Ent: "orders-api", Scope: "orders.read orders.write"},
		{Iss: "https://m.example.com/oidc", Sub: "user:alice", Aud: audience{"a", "b", "c"},
			Iat: 1, Nbf: 1, Exp: 2, Jti: "j", Ent: "e"},
		{Iss: "https://m.example.com", Sub: "spiffe://td/<a>&\"b\"\\c\x01\x7f\u2028é\xff", Aud: audience{"x<y", "z&w"},
			Iat: -5, Nbf: 0, Exp: 1 << 40, Jti: "tab\there", Ent: "ent\n", Scope: "s>1 s\u00e9"},
	}
	for _, alg := range []string{ES256, RS256, EdDSA} {
		k, err := generateKey(alg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for n, c := range claims {
			got, err := k.signToken(appendClaims(nil, &c))
			if err != nil {
				t.Fatalf("%s claims %d: %v", alg, n, err)
			}
			ref := gojwt.NewWithClaims(k.method, &c)
			ref.Header["kid"] = k.kid
			want, err := ref.SigningString()
			if err != nil {
				t.Fatal(err)
			}
			dot := strings.LastIndexByte(got, '.')
			if got[:dot] != want {
				t.Errorf("%s claims %d: signing input\n%s\nwant\n%s", alg, n, got[:dot], want)
			}
			if err := k.method.Verify(got[:dot], mustDecode(t, got[dot+1:]), k.pub); err != nil {
				t.Errorf("%s claims %d: golang-jwt does not verify the signature: %v", alg, n, err)
			}
		}
	}
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := b64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIssueVerifiesWithGoJose signs through Issue with every algorithm and
// checks the token the way an outside relying party does (go-jose, JWKS).
func TestIssueVerifiesWithGoJose(t *testing.T) {
	for _, alg := range []string{ES256, RS256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			e := newEnv(t, Config{Algorithm: alg})
			for range 20 { // ES256 r and s are sometimes shorter than 32 bytes
				l := testLease(time.Now(), time.Minute)
				c := e.issue(t, l, testParams)
				e.harnessVerify(t, l, c, testParams)
			}
		})
	}
}

func TestAppendStringLikeEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "<>&", "\x00\x1f\x7f", "é", "\u2028\u2029", "\xff\xfe", "日本"} {
		want, _ := json.Marshal(s)
		if got := appendString([]byte("x"), s); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Errorf("appendString(%q) = %s; want x%s", s, got, want)
		}
	}
}

func TestRawECDSASignature(t *testing.T) {
	der := func(r, s *big.Int) []byte {
		b, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := new(big.Int).SetBytes(bytes.Repeat([]byte{0xff}, 32)) // needs a leading 0x00 in DER
	for _, tt := range []struct{ r, s *big.Int }{
		{big.NewInt(1), big.NewInt(2)},
		{full, big.NewInt(0x80)},
		{new(big.Int).Lsh(big.NewInt(1), 200), full},
	} {
		var out [64]byte
		if err := rawECDSASignature(der(tt.r, tt.s), &out); err != nil {
			t.Fatalf("r=%x s=%x: %v", tt.r, tt.s, err)
		}
		var wr, ws [32]byte
		tt.r.FillBytes(wr[:])
		tt.s.FillBytes(ws[:])
		if !bytes.Equal(out[:32], wr[:]) || !bytes.Equal(out[32:], ws[:]) {
			t.Errorf("r=%x s=%x: got %x", tt.r, tt.s, out)
		}
	}
	good := der(big.NewInt(1), big.NewInt(2))
	tooBig := der(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))
	for name, b := range map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte{}, good...), 0),
		"not seq":   append([]byte{0x31}, good[1:]...),
		"negative":  der(big.NewInt(-1), big.NewInt(2)),
		"33 bytes":  tooBig,
		"one int":   {0x30, 0x03, 0x02, 0x01, 0x01},
	} {
		var out [64]byte
		if err := rawECDSASignature(b, &out); err == nil {
			t.Errorf("%s: accepted %x", name, b)
		}
	}

	// And a real one round-trips through ecdsa.Verify.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("x"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	var out [64]byte
	if err := rawECDSASignature(sig, &out); err != nil {
		t.Fatal(err)
	}
	if !ecdsa.Verify(&key.PublicKey, digest[:], new(big.Int).SetBytes(out[:32]), new(big.Int).SetBytes(out[32:])) {
		t.Error("r||s does not verify")
	}
}

// BenchmarkMint is mint alone with the active ES256 key: claims, header,
// signature, credential.
func BenchmarkMint(b *testing.B) {
	iss, err := New(Config{IssuerURL: "https://mayfly.example.com", Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	l := testLease(time.Now(), 15*time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.mint(l, testParams, l.IssuedAt, l.ExpiresAt); err != nil {
			b.Fatal(err)
		}
	}
}

func TestExtraClaims(t *testing.T) {
	b, err := appendExtra([]byte(`{"iss":"x"}`), map[string]any{
		"https://aws.amazon.com/source_identity": "td+ns+api",
		"https://aws.amazon.com/tags":            map[string]any{"principal_tags": map[string][]string{"mayfly:lease": {"01"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"iss":"x","https://aws.amazon.com/source_identity":"td+ns+api","https://aws.amazon.com/tags":{"principal_tags":{"mayfly:lease":["01"]}}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	if _, err := appendExtra([]byte(`{}`), map[string]any{"sub": "evil"}); err == nil {
		t.Fatal("an extra claim replaced sub")
	}
}

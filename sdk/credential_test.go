package sdk

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestCredentialRedactsSecrets(t *testing.T) {
	t.Parallel()
	lease := Lease{ID: "lease001", Entitlement: "orders-db-ro"}
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		cred    Credential
		secrets []string
		want    string
	}{
		{
			name:    "jwt",
			cred:    Credential{Lease: lease, Kind: KindJWT, Token: "eyJhbGciOi.secret.sig", Scopes: []string{"orders:read", "orders:list"}, ExpiresAt: expires},
			secrets: []string{"eyJhbGciOi", "secret.sig"},
			want:    "sdk.Credential{kind=jwt lease_id=lease001 entitlement=orders-db-ro expires_at=2030-01-02T03:04:05Z token=REDACTED scopes=orders:read orders:list}",
		},
		{
			name:    "username_password",
			cred:    Credential{Lease: lease, Kind: KindUsernamePassword, Username: "v-orders-1", Password: "pa55w0rd!", ExpiresAt: expires},
			secrets: []string{"pa55w0rd!"},
			want:    "sdk.Credential{kind=username_password lease_id=lease001 entitlement=orders-db-ro expires_at=2030-01-02T03:04:05Z username=v-orders-1 password=REDACTED}",
		},
		{
			name:    "certificate",
			cred:    Credential{Lease: lease, Kind: KindCertificate, CertPEM: "-----BEGIN CERTIFICATE-----", KeyPEM: "-----BEGIN PRIVATE KEY-----xyz", ChainPEM: "chain", ExpiresAt: expires},
			secrets: []string{"PRIVATE KEY", "xyz"},
			want:    "sdk.Credential{kind=certificate lease_id=lease001 entitlement=orders-db-ro expires_at=2030-01-02T03:04:05Z cert_pem=(27 bytes) key_pem=REDACTED chain_pem=(5 bytes)}",
		},
		{
			name:    "aws",
			cred:    Credential{Lease: lease, Kind: KindAWS, AccessKeyID: "ASIAEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI", SessionToken: "FwoGZXIvYXdzE", ExpiresAt: expires},
			secrets: []string{"ASIAEXAMPLE", "wJalrXUtnFEMI", "FwoGZXIvYXdzE"},
			want:    "sdk.Credential{kind=aws lease_id=lease001 entitlement=orders-db-ro expires_at=2030-01-02T03:04:05Z access_key_id=REDACTED secret_access_key=REDACTED session_token=REDACTED}",
		},
		{
			name:    "oauth_token",
			cred:    Credential{Lease: lease, Kind: KindOAuthToken, Token: "ya29.a0Af", ExpiresAt: expires},
			secrets: []string{"ya29.a0Af"},
			want:    "sdk.Credential{kind=oauth_token lease_id=lease001 entitlement=orders-db-ro expires_at=2030-01-02T03:04:05Z token=REDACTED}",
		},
		{
			name:    "raw",
			cred:    Credential{Lease: lease, Kind: KindRaw, Fields: map[string]string{"password": "s3cr3t", "api_key": "k-123"}, ExpiresAt: expires},
			secrets: []string{"s3cr3t", "k-123"},
			want:    "sdk.Credential{kind=raw lease_id=lease001 entitlement=orders-db-ro expires_at=2030-01-02T03:04:05Z fields=api_key=REDACTED password=REDACTED}",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cred.String(); got != tc.want {
				t.Errorf("String() =\n%s\nwant\n%s", got, tc.want)
			}
			var logs bytes.Buffer
			slog.New(slog.NewJSONHandler(&logs, nil)).Info("got", "cred", tc.cred, "ptr", &tc.cred)
			slog.New(slog.NewTextHandler(&logs, nil)).Info("got", "cred", tc.cred)
			outputs := map[string]string{
				"%v":     fmt.Sprintf("%v", tc.cred),
				"%+v":    fmt.Sprintf("%+v", tc.cred),
				"%#v":    fmt.Sprintf("%#v", tc.cred),
				"%s":     fmt.Sprintf("%s", &tc.cred),
				"%v ptr": fmt.Sprintf("%v", &tc.cred),
				"nested": fmt.Sprintf("%+v", Renewal{Credential: &tc.cred}),
				"slog":   logs.String(),
			}
			for name, out := range outputs {
				for _, s := range tc.secrets {
					if strings.Contains(out, s) {
						t.Errorf("%s output leaks %q: %s", name, s, out)
					}
				}
				if !strings.Contains(out, "REDACTED") {
					t.Errorf("%s output has no REDACTED marker: %s", name, out)
				}
			}
			if !strings.Contains(logs.String(), `"cred":{"kind":"`+tc.cred.Kind+`"`) {
				t.Errorf("JSON log lacks the credential group: %s", logs.String())
			}
		})
	}
}

func TestCredentialValidUntil(t *testing.T) {
	t.Parallel()
	a := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	b := a.Add(time.Minute)
	for _, tc := range []struct {
		native, lease, want time.Time
	}{
		{native: a, lease: b, want: a},
		{native: b, lease: a, want: a},
		{native: time.Time{}, lease: b, want: b},
		{native: a, lease: time.Time{}, want: a},
	} {
		c := &Credential{ExpiresAt: tc.native, Lease: Lease{ExpiresAt: tc.lease}}
		if got := c.validUntil(); !got.Equal(tc.want) {
			t.Errorf("validUntil(native %v, lease %v) = %v, want %v", tc.native, tc.lease, got, tc.want)
		}
	}
}

func TestCredentialClone(t *testing.T) {
	t.Parallel()
	c := &Credential{Scopes: []string{"a"}, Fields: map[string]string{"k": "v"}}
	cp := c.clone()
	cp.Scopes[0] = "b"
	cp.Fields["k"] = "w"
	if c.Scopes[0] != "a" || c.Fields["k"] != "v" {
		t.Error("clone shares Scopes or Fields with the original")
	}
	if (*Credential)(nil).clone() != nil {
		t.Error("clone of nil is not nil")
	}
}

package gcp

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestDecodeParams(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want Params
	}{
		{"service_account: " + testSA, Params{ServiceAccount: testSA, Scopes: []string{DefaultScope}, MaxLifetime: time.Hour}},
		{"service_account: " + testSA + "\nscopes: []\nmax_lifetime: 90m\ndelegates: [projects/-/serviceAccounts/a-hop@p.iam.gserviceaccount.com, b-hop@p.iam.gserviceaccount.com]",
			Params{ServiceAccount: testSA, Scopes: []string{DefaultScope}, MaxLifetime: 90 * time.Minute, Delegates: []string{"a-hop@p.iam.gserviceaccount.com", "b-hop@p.iam.gserviceaccount.com"}}},
		{"service_account: my-project@appspot.gserviceaccount.com\nscopes: [openid, email]", Params{ServiceAccount: "my-project@appspot.gserviceaccount.com", Scopes: []string{"openid", "email"}, MaxLifetime: time.Hour}},
		{"service_account: sa@project.example.com.iam.gserviceaccount.com", Params{ServiceAccount: "sa@project.example.com.iam.gserviceaccount.com", Scopes: []string{DefaultScope}, MaxLifetime: time.Hour}},
	} {
		got, err := DecodeParams(node(t, tc.yaml))
		if err != nil {
			t.Errorf("DecodeParams(%q): %v", tc.yaml, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("DecodeParams(%q) = %+v; want %+v", tc.yaml, got, tc.want)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"", "service_account is required"},
		{"service_account: " + testSA + "\nservice_account: " + testSA, "appears twice"},
		{"service_account: [a]", "service_account must be a string"},
		{"service_account: Reader@p.iam.gserviceaccount.com", "not a service account email"},
		{"service_account: reader@gmail.com", "not a service account email"},
		{"service_account: " + testSA + "\nscopes: x", "scopes must be a list"},
		{"service_account: " + testSA + "\nscopes: [a, a]", `scope "a" appears twice`},
		{"service_account: " + testSA + "\nscopes: [1]", "scopes[0] must be a string"},
		{"service_account: " + testSA + "\nmax_lifetime: 30s", "max_lifetime 30s"},
		{"service_account: " + testSA + "\nmax_lifetime: 1.5s", "max_lifetime"},
		{"service_account: " + testSA + "\nmax_lifetime: soon", "not a duration"},
		{"service_account: " + testSA + "\ndelegates: [" + testSA + "]", "repeats a service account"},
		{"service_account: " + testSA + "\ndelegates: [" + strings.Repeat("x@p.iam.gserviceaccount.com, ", 11) + "]", "at most 10"},
	} {
		got, err := DecodeParams(node(t, tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "gcp: ") {
			t.Errorf("DecodeParams(%q) = %+v, %v; want an error containing %q", tc.yaml, got, err, tc.want)
		}
	}
}

func TestTTLBounds(t *testing.T) {
	p, err := DecodeParams(node(t, "service_account: "+testSA+"\nmax_lifetime: 12h"))
	if err != nil {
		t.Fatal(err)
	}
	if min, max := p.TTLBounds(); min != 2*time.Minute || max != 12*time.Hour {
		t.Errorf("TTLBounds = %v, %v", min, max)
	}
	if min, max := (Params{}).TTLBounds(); min != MinTTL || max != time.Hour {
		t.Errorf("zero Params: TTLBounds = %v, %v", min, max)
	}
}

func TestScrub(t *testing.T) {
	tok := "ya29.a0AfB_byC" + strings.Repeat("x", 40)
	got := scrub("invalid token\n" + tok + " for sa@p.iam.gserviceaccount.com")
	if strings.Contains(got, "ya29") || strings.Contains(got, "\n") || !strings.Contains(got, "sa@p.iam.gserviceaccount.com") {
		t.Errorf("scrub = %q", got)
	}
}

package api

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidNameIsTheRegexp pins validName to the pattern the policy uses.
func TestValidNameIsTheRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	names := []string{"", "a", "0", "orders-api", "long.api_v2", "-a", ".a", "_a", "A", "a-", "a b", "a\n", "é",
		"a\x00", strings.Repeat("a", 63), strings.Repeat("a", 64), "a" + strings.Repeat("-", 62), "a/b", "a:b"}
	for c := 0; c < 256; c++ {
		names = append(names, string(rune(c)), "a"+string([]byte{byte(c)}), string([]byte{byte(c)})+"a")
	}
	for _, n := range names {
		if got, want := validName(n), re.MatchString(n); got != want {
			t.Errorf("validName(%q) = %v; the pattern says %v", n, got, want)
		}
	}
}

func FuzzValidName(f *testing.F) {
	re := regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	f.Add("orders-api")
	f.Fuzz(func(t *testing.T, n string) {
		if got, want := validName(n), re.MatchString(n); got != want {
			t.Errorf("validName(%q) = %v; the pattern says %v", n, got, want)
		}
	})
}

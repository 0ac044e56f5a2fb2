package policy

import (
	"errors"
	"math"
	"strings"
	"time"
)

var errBadDuration = errors.New("bad duration")

// ParseDuration reads a policy duration: Go syntax (90s, 15m, 1h30m) with
// whole days allowed in front (90d, 1d12h), since review periods and grant
// lifetimes are thought of in days. A day is exactly 24h: policy durations
// are spans of time, not calendar arithmetic.
func ParseDuration(s string) (time.Duration, error) {
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	var days int64
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		digits := s[:i]
		if digits == "" {
			return 0, errBadDuration
		}
		for j := 0; j < len(digits); j++ {
			c := digits[j]
			if c < '0' || c > '9' {
				return 0, errBadDuration
			}
			if days > (math.MaxInt64/int64(24*time.Hour)-int64(c-'0'))/10 {
				return 0, errBadDuration
			}
			days = days*10 + int64(c-'0')
		}
		s = s[i+1:]
		if s == "" {
			d := time.Duration(days) * 24 * time.Hour
			if neg {
				d = -d
			}
			return d, nil
		}
		if s[0] == '-' || s[0] == '+' {
			return 0, errBadDuration // "1d-2h"
		}
	}
	rest, err := time.ParseDuration(s)
	if err != nil || rest < 0 {
		return 0, errBadDuration
	}
	d := time.Duration(days) * 24 * time.Hour
	if rest > math.MaxInt64-d {
		return 0, errBadDuration
	}
	d += rest
	if neg {
		d = -d
	}
	return d, nil
}

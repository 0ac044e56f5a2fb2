package awssts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Mode is how the broker assumes the role.
type Mode string

const (
	// ModeWebIdentity calls AssumeRoleWithWebIdentity with a broker JWT:
	// no AWS key on the broker. The default.
	ModeWebIdentity Mode = "web_identity"
	// ModeAssumeRole calls AssumeRole signed with the broker's own AWS
	// credentials, and sets SourceIdentity and session tags.
	ModeAssumeRole Mode = "assume_role"
)

// Limits of STS and IAM that DecodeParams and Issue enforce.
const (
	// MinSession is the shortest session STS grants.
	MinSession = 15 * time.Minute
	// MaxSession is the longest maximum session duration a role can have.
	MaxSession = 12 * time.Hour
	// DefaultMaxSessionDuration is a role's maximum session duration unless
	// changed, and max_session_duration's default.
	DefaultMaxSessionDuration = time.Hour
	// SkewAllowance is how long before its lease a session is asked to end:
	// it covers the call itself (Config.CallTimeout, retries included) and
	// clock skew between the broker and AWS.
	SkewAllowance = 30 * time.Second
	// MinTTL is the shortest lease an awssts entitlement may have: a 15
	// minute session, SkewAllowance, and 30 seconds for the pending lease to
	// reach Issue.
	MinTTL = MinSession + SkewAllowance + 30*time.Second

	maxPolicyChars = 2048 // plaintext session policy, after compaction
	maxTags        = 50   // session tags per session, ours included
	maxTagKey      = 128
	maxTagValue    = 256
)

// Tag keys the broker sets on every assume_role session; session_tags may
// not use the mayfly: prefix.
const (
	TagLease       = "mayfly:lease"
	TagEntitlement = "mayfly:entitlement"
	TagSubject     = "mayfly:subject"
)

// Params is an entitlement's awssts section, decoded by DecodeParams:
//
//	issuer: awssts
//	awssts:
//	  role_arn: arn:aws:iam::123456789012:role/reports-read   # required
//	  mode: web_identity                  # or assume_role
//	  session_policy: '{"Version":"2012-10-17","Statement":[...]}'
//	  session_tags: {team: analytics}     # assume_role mode only
//	  max_session_duration: 1h            # the role's maximum, 1h..12h
//	  region: eu-west-1                   # STS region; Config.Region if absent
//	  revoke_sessions_policy: true        # KillSwitch may deny older sessions
type Params struct {
	// RoleARN is the role to assume: arn:PARTITION:iam::ACCOUNT:role/NAME.
	RoleARN string
	// Mode is ModeWebIdentity (default) or ModeAssumeRole.
	Mode Mode
	// SessionPolicy is an inline session policy (compact JSON, at most 2048
	// characters) that narrows the role's permissions; empty for none.
	SessionPolicy string
	// SessionTags are extra session tags (assume_role mode). Keys are
	// unique regardless of case and never start with aws: or mayfly:.
	SessionTags map[string]string
	// MaxSessionDuration is the role's maximum session duration: a session
	// never asks for more (STS would refuse), and max_ttl must not exceed
	// it. DefaultMaxSessionDuration when absent.
	MaxSessionDuration time.Duration
	// Region is the STS region for this entitlement; Config.Region when
	// empty.
	Region string
	// RevokeSessionsPolicy lets KillSwitch put a deny policy on the role.
	RevokeSessionsPolicy bool
}

// TTLBounds is the range an entitlement's ttl and max_ttl must keep to:
// MinTTL, and the role's maximum session duration. DecodeParams cannot see
// ttl, so the policy loader checks it (policy.TTLBounder) when the policy loads (Issue refuses a
// lease shorter than MinTTL anyway, and ends a longer-than-allowed session
// early).
func (p Params) TTLBounds() (min, max time.Duration) {
	max = p.MaxSessionDuration
	if max == 0 {
		max = DefaultMaxSessionDuration
	}
	return MinTTL, max
}

var (
	// roleARNRE: partition, 12-digit account, optional path, role name
	// (IAM: path /…/ of printable ASCII, name [\w+=,.@-]{1,64}).
	roleARNRE = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-[a-z]|aws-eusc):iam::([0-9]{12}):role/((?:[\x21-\x7e]{0,510}/)?)([\w+=,.@-]{1,64})$`)
	// regionRE: us-east-1, us-gov-west-1, cn-north-1, eu-isoe-west-1, ...
	regionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
	// sessionNameRE: RoleSessionName, 2..64 of [\w+=,.@-].
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
)

// partitionRegion is the region prefix each partition requires.
var partitionRegion = map[string]string{"aws-cn": "cn-", "aws-us-gov": "us-gov-"}

// DecodeParams decodes the entitlement's awssts section strictly (see
// Params) and refuses web_identity entitlements when Config.TokenSource is
// not set. It returns a Params.
func (i *Issuer) DecodeParams(node *yaml.Node) (any, error) {
	p, err := DecodeParams(node)
	if err != nil {
		return nil, err
	}
	if p.Mode == ModeWebIdentity && i.cfg.TokenSource == nil {
		return nil, errors.New("awssts: mode web_identity needs the broker's JWT issuer (Config.TokenSource); configure it or use mode: assume_role")
	}
	return p, nil
}

// DecodeParams is Issuer.DecodeParams without an Issuer, for policy tools
// that validate a file offline.
func DecodeParams(node *yaml.Node) (Params, error) {
	node = resolve(node)
	if node != nil && node.Kind == yaml.DocumentNode && len(node.Content) == 1 {
		node = resolve(node.Content[0])
	}
	if node == nil || isNull(node) {
		return Params{}, errors.New("awssts: role_arn is required")
	}
	if node.Kind != yaml.MappingNode {
		return Params{}, errors.New("awssts: params must be a mapping with role_arn and the other keys")
	}
	p := Params{Mode: ModeWebIdentity, MaxSessionDuration: DefaultMaxSessionDuration}
	seen := map[string]bool{}
	for k := 0; k+1 < len(node.Content); k += 2 {
		key, val := resolve(node.Content[k]), resolve(node.Content[k+1])
		if key.Kind != yaml.ScalarNode {
			return Params{}, errors.New("awssts: params keys must be strings")
		}
		if seen[key.Value] {
			return Params{}, fmt.Errorf("awssts: key %q appears twice", key.Value)
		}
		seen[key.Value] = true
		var err error
		switch key.Value {
		case "role_arn":
			p.RoleARN, err = str(key.Value, val)
		case "mode":
			var m string
			if m, err = str(key.Value, val); err == nil {
				p.Mode = Mode(m)
			}
		case "session_policy":
			var s string
			if s, err = str(key.Value, val); err == nil {
				p.SessionPolicy, err = compactPolicy(s)
			}
		case "session_tags":
			p.SessionTags, err = decodeTags(val)
		case "max_session_duration":
			var s string
			if s, err = str(key.Value, val); err == nil {
				p.MaxSessionDuration, err = time.ParseDuration(s)
				if err != nil {
					err = fmt.Errorf("max_session_duration %q is not a duration (say 1h or 12h)", s)
				}
			}
		case "region":
			p.Region, err = str(key.Value, val)
		case "revoke_sessions_policy":
			if val.Kind != yaml.ScalarNode || val.ShortTag() != "!!bool" || val.Decode(&p.RevokeSessionsPolicy) != nil {
				err = errors.New("revoke_sessions_policy must be true or false")
			}
		default:
			err = fmt.Errorf("unknown key %q (want role_arn, mode, session_policy, session_tags, max_session_duration, region, revoke_sessions_policy)", key.Value)
		}
		if err != nil {
			return Params{}, fmt.Errorf("awssts: %w", err)
		}
	}
	if err := p.validate(); err != nil {
		return Params{}, fmt.Errorf("awssts: %w", err)
	}
	return p, nil
}

// validate checks p, whether decoded or built in code.
func (p Params) validate() error {
	m := roleARNRE.FindStringSubmatch(p.RoleARN)
	switch {
	case p.RoleARN == "":
		return errors.New("role_arn is required")
	case m == nil:
		return fmt.Errorf("role_arn %q is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)", p.RoleARN)
	case len(m[3]) > 512:
		return fmt.Errorf("role_arn %q has a path longer than 512 characters", p.RoleARN)
	}
	switch p.Mode {
	case ModeWebIdentity:
		if len(p.SessionTags) > 0 {
			return errors.New("session_tags need mode: assume_role: AssumeRoleWithWebIdentity takes session tags only from the token's https://aws.amazon.com/tags claim")
		}
	case ModeAssumeRole:
	default:
		return fmt.Errorf("mode %q is not web_identity or assume_role", p.Mode)
	}
	if p.SessionPolicy != "" {
		if _, err := compactPolicy(p.SessionPolicy); err != nil {
			return err
		}
	}
	if err := validTags(p.SessionTags); err != nil {
		return err
	}
	if p.MaxSessionDuration < time.Hour || p.MaxSessionDuration > MaxSession || p.MaxSessionDuration%time.Second != 0 {
		return fmt.Errorf("max_session_duration %v must be whole seconds from 1h to 12h (the range of a role's maximum session duration)", p.MaxSessionDuration)
	}
	if p.Region != "" {
		if !regionRE.MatchString(p.Region) {
			return fmt.Errorf("region %q is not an AWS region name", p.Region)
		}
		if prefix, ok := partitionRegion[m[1]]; ok && !strings.HasPrefix(p.Region, prefix) {
			return fmt.Errorf("region %q is not in partition %s of role_arn", p.Region, m[1])
		}
	}
	return nil
}

// roleName is the role's name: the last part of its ARN.
func (p Params) roleName() string {
	return p.RoleARN[strings.LastIndexByte(p.RoleARN, '/')+1:]
}

// compactPolicy checks that s is a JSON policy object with a Statement and
// returns it without insignificant whitespace (what STS counts).
func compactPolicy(s string) (string, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return "", fmt.Errorf("session_policy is not valid JSON (at byte %d)", syn.Offset)
		}
		return "", errors.New("session_policy is not valid JSON")
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		return "", errors.New("session_policy must be a JSON object (an IAM policy document)")
	}
	if _, ok := doc["Statement"]; !ok {
		return "", errors.New("session_policy has no Statement")
	}
	if n := utf8.RuneCount(b.Bytes()); n > maxPolicyChars {
		return "", fmt.Errorf("session_policy has %d characters once compacted; STS allows %d", n, maxPolicyChars)
	}
	return b.String(), nil
}

func decodeTags(n *yaml.Node) (map[string]string, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, errors.New("session_tags must be a mapping of tag keys to values")
	}
	tags := map[string]string{}
	for k := 0; k+1 < len(n.Content); k += 2 {
		key, val := resolve(n.Content[k]), resolve(n.Content[k+1])
		if key.Kind != yaml.ScalarNode || val.Kind != yaml.ScalarNode || isNull(val) {
			return nil, errors.New("session_tags keys and values must be strings")
		}
		if _, dup := tags[key.Value]; dup {
			return nil, fmt.Errorf("session tag %q appears twice", key.Value)
		}
		tags[key.Value] = val.Value
	}
	if err := validTags(tags); err != nil {
		return nil, err
	}
	if len(tags) == 0 {
		return nil, nil
	}
	return tags, nil
}

// validTags applies STS's rules to session_tags, leaving room for ours.
func validTags(tags map[string]string) error {
	if len(tags) > maxTags-3 {
		return fmt.Errorf("session_tags has %d tags; STS allows %d per session and the broker sets 3", len(tags), maxTags)
	}
	lower := map[string]string{}
	for k, v := range tags {
		l := strings.ToLower(k)
		switch {
		case k == "" || utf8.RuneCountInString(k) > maxTagKey || !tagChars(k):
			return fmt.Errorf("session tag key %q must be 1 to %d letters, digits, spaces or _.:/=+-@", k, maxTagKey)
		case strings.HasPrefix(l, "aws:"):
			return fmt.Errorf("session tag key %q: the aws: prefix is reserved", k)
		case strings.HasPrefix(l, "mayfly:"):
			return fmt.Errorf("session tag key %q: the mayfly: prefix is the broker's", k)
		case utf8.RuneCountInString(v) > maxTagValue || !tagChars(v):
			return fmt.Errorf("session tag %q: value must be up to %d letters, digits, spaces or _.:/=+-@", k, maxTagValue)
		}
		if other, dup := lower[l]; dup {
			return fmt.Errorf("session tag keys %q and %q differ only in case; STS treats them as one", other, k)
		}
		lower[l] = k
	}
	return nil
}

// tagChars reports whether s uses only what STS allows in tag keys and
// values: \p{L}\p{Z}\p{N} and _.:/=+-@.
func tagChars(s string) bool {
	for _, r := range s {
		if !tagRune(r) {
			return false
		}
	}
	return utf8.ValidString(s)
}

func tagRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.In(r, unicode.Z) || strings.ContainsRune("_.:/=+-@", r)
}

func str(key string, n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return "", fmt.Errorf("%s must be a string", key)
	}
	return n.Value, nil
}

// resolve follows aliases (a YAML anchor reused under another entitlement).
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// paramsOf accepts what DecodeParams returned (or a Params built in code).
func paramsOf(params any) (Params, error) {
	var p Params
	switch v := params.(type) {
	case Params:
		p = v
	case *Params:
		if v == nil {
			return Params{}, errors.New("params are a nil *awssts.Params")
		}
		p = *v
	default:
		return Params{}, fmt.Errorf("params are %T, want awssts.Params from DecodeParams", params)
	}
	if p.Mode == "" {
		p.Mode = ModeWebIdentity
	}
	if p.MaxSessionDuration == 0 {
		p.MaxSessionDuration = DefaultMaxSessionDuration
	}
	if p.SessionPolicy != "" {
		var err error
		if p.SessionPolicy, err = compactPolicy(p.SessionPolicy); err != nil {
			return Params{}, err
		}
	}
	return p, p.validate()
}

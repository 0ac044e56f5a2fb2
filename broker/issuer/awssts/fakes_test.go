package awssts

// Fakes of AWS STS and IAM (no AWS endpoint is reachable from tests), and a
// real broker JWT issuer served over HTTPS, as AWS would fetch it. The
// fakes speak the Query protocol the SDK speaks (form-encoded POST, XML
// answers and error envelopes), enforce the parameter rules STS and IAM
// enforce, verify SigV4 signatures with the SDK's own signer, and verify
// web identity tokens the way an IAM OIDC provider does: discovery
// document, then jwks_uri, then the signature and iss, aud, exp, and the
// role's trust policy on sub.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// ---------------------------------------------------------------------------
// The broker's JWT issuer, served over TLS like a real OIDC provider.

type brokerJWT struct {
	iss    *jwt.Issuer
	srv    *httptest.Server
	mu     sync.Mutex
	tokens []string // every token minted, to look for leaks
	leases []*lease.Lease
	fail   error
}

func newBrokerJWT(t *testing.T, alg string) *brokerJWT {
	t.Helper()
	b := &brokerJWT{}
	var h http.Handler
	var once sync.WaitGroup
	once.Add(1)
	b.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Wait()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(b.srv.Close)
	iss, err := jwt.New(jwt.Config{IssuerURL: b.srv.URL, Algorithm: alg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("jwt.New: %v", err)
	}
	b.iss = iss
	h = iss.Handler(nil, nil)
	once.Done()
	return b
}

// source is the TokenSource the composition root would wire: the broker's
// JWT issuer minting a token for the lease with the given audience.
func (b *brokerJWT) source(ctx context.Context, l *lease.Lease, aud string) (string, error) {
	b.mu.Lock()
	fail := b.fail
	b.leases = append(b.leases, l.Clone())
	b.mu.Unlock()
	if fail != nil {
		return "", fail
	}
	c, err := b.iss.Issue(ctx, issuer.Request{Lease: l, Params: jwt.Params{Audience: []string{aud}}})
	if err != nil {
		return "", err
	}
	b.mu.Lock()
	b.tokens = append(b.tokens, c.Token)
	b.mu.Unlock()
	return c.Token, nil
}

func (b *brokerJWT) minted() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.tokens...)
}

// tokenClaims are what an OIDC relying party reads from a broker JWT.
type tokenClaims struct {
	josejwt.Claims
	Ent            string          `json:"ent"`
	SourceIdentity string          `json:"https://aws.amazon.com/source_identity"`
	Tags           json.RawMessage `json:"https://aws.amazon.com/tags"`
}

// verifyOIDC verifies token as an IAM OIDC provider (or a Google workload
// identity pool) does: the issuer must be the registered one, the
// discovery document fetched over HTTPS must name it exactly, the key the
// kid names must come from its jwks_uri and verify the signature, and the
// token must be current. It returns the claims and an error code
// (InvalidIdentityToken or IDPCommunicationError) with a message.
func verifyOIDC(client *http.Client, token, wantIssuer string, now time.Time) (*tokenClaims, string, error) {
	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512})
	if err != nil {
		return nil, "InvalidIdentityToken", fmt.Errorf("token is not a JWT signed with RS* or ES*: %v", err)
	}
	var unverified tokenClaims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, "InvalidIdentityToken", err
	}
	if unverified.Issuer != wantIssuer {
		return nil, "InvalidIdentityToken", fmt.Errorf("no OpenIDConnect provider found for %s", unverified.Issuer)
	}
	var disc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := getJSON(client, wantIssuer+"/.well-known/openid-configuration", &disc); err != nil {
		return nil, "IDPCommunicationError", err
	}
	if disc.Issuer != wantIssuer || !strings.HasPrefix(disc.JWKSURI, "https://") {
		return nil, "InvalidIdentityToken", fmt.Errorf("discovery issuer %q jwks_uri %q", disc.Issuer, disc.JWKSURI)
	}
	var set jose.JSONWebKeySet
	if err := getJSON(client, disc.JWKSURI, &set); err != nil {
		return nil, "IDPCommunicationError", err
	}
	if len(tok.Headers) != 1 {
		return nil, "InvalidIdentityToken", errors.New("want one signature")
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		return nil, "InvalidIdentityToken", fmt.Errorf("kid %q not in the JWKS", tok.Headers[0].KeyID)
	}
	var c tokenClaims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		return nil, "InvalidIdentityToken", fmt.Errorf("signature: %v", err)
	}
	if err := c.Claims.ValidateWithLeeway(josejwt.Expected{Issuer: wantIssuer, Time: now}, 5*time.Second); err != nil {
		if errors.Is(err, josejwt.ErrExpired) {
			return nil, "ExpiredTokenException", err
		}
		return nil, "InvalidIdentityToken", err
	}
	if c.Subject == "" || c.IssuedAt == nil || c.Expiry == nil {
		return nil, "InvalidIdentityToken", errors.New("sub, iat and exp are required")
	}
	return &c, "", nil
}

func getJSON(client *http.Client, u string, v any) error {
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// ---------------------------------------------------------------------------
// SigV4, checked with the SDK's own signer.

// verifySigV4 re-signs r (whose body is body) with the credentials its
// access key id names and compares the signature. It returns the access
// key id.
func verifySigV4(r *http.Request, body []byte, service string, lookup func(akid string) (aws.Credentials, bool)) (string, error) {
	auth := r.Header.Get("Authorization")
	m := regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$`).FindStringSubmatch(auth)
	if m == nil {
		return "", errors.New("missing or malformed SigV4 Authorization header")
	}
	akid, region, svc, signed := m[1], m[3], m[4], strings.Split(m[5], ";")
	if svc != service {
		return akid, fmt.Errorf("signed for service %q, not %q", svc, service)
	}
	creds, ok := lookup(akid)
	if !ok {
		return akid, errors.New("unknown access key id")
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return akid, errors.New("bad X-Amz-Date")
	}
	req, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	req.Host = r.Host
	req.ContentLength = int64(len(body))
	for _, h := range signed {
		if h == "host" || h == "content-length" {
			continue
		}
		for _, v := range r.Header.Values(h) {
			req.Header.Add(h, v)
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, region, when); err != nil {
		return akid, err
	}
	if req.Header.Get("Authorization") != auth {
		return akid, errors.New("signature does not match")
	}
	return akid, nil
}

// ---------------------------------------------------------------------------
// fakeSTS speaks AssumeRole, AssumeRoleWithWebIdentity and
// GetCallerIdentity.

// awsFault is an error the fakes answer with.
type awsFault struct {
	Status  int
	Code    string
	Message string
}

type fakeRole struct {
	// MaxSession is the role's maximum session duration.
	MaxSession time.Duration
	// TrustSubs are the sub patterns (StringLike) the trust policy accepts
	// from the broker's OIDC provider; TrustBroker lets the broker's own
	// access key assume the role.
	TrustSubs   []string
	TrustBroker bool
}

// stsCall is what the fake received, after checking it.
type stsCall struct {
	Action          string
	RoleArn         string
	RoleSessionName string
	DurationSeconds int
	SourceIdentity  string
	Policy          string
	Tags            map[string]string
	HasTagsParam    bool
	Token           *tokenClaims // web identity: the verified token
	Signer          string       // AssumeRole: the access key id that signed
	Expires         time.Time
}

type fakeSession struct {
	call    stsCall
	creds   aws.Credentials
	arn     string
	expires time.Time
	sub     string // web identity: the token's sub
}

type fakeSTS struct {
	t        *testing.T
	srv      *httptest.Server
	account  string
	issuer   string       // the IAM OIDC provider's URL
	clients  []string     // its client ids (audiences)
	jwks     *http.Client // how it reaches the provider
	broker   aws.Credentials
	skew     time.Duration // the fake's clock minus the real one
	roles    map[string]fakeRole
	mu       sync.Mutex
	calls    []stsCall
	attempts map[string]int
	fail     func(action string, attempt int) *awsFault
	sessions map[string]*fakeSession // by access key id
	echo     bool                    // errors echo the request (to test scrubbing)
}

var brokerKey = aws.Credentials{AccessKeyID: "AKIDBROKEREXAMPLE", SecretAccessKey: "broker/secret+key/EXAMPLEKEY0123456789abcd", Source: "test"}

const testAccount = "123456789012"

func newFakeSTS(t *testing.T, b *brokerJWT) *fakeSTS {
	f := &fakeSTS{
		t: t, account: testAccount, broker: brokerKey,
		clients:  []string{DefaultAudience},
		roles:    map[string]fakeRole{},
		attempts: map[string]int{},
		sessions: map[string]*fakeSession{},
	}
	if b != nil {
		f.issuer, f.jwks = b.srv.URL, b.srv.Client()
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSTS) now() time.Time { return time.Now().Add(f.skew) }

func (f *fakeSTS) attemptsOf(action string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[action]
}

func (f *fakeSTS) recorded() []stsCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stsCall(nil), f.calls...)
}

func (f *fakeSTS) session(akid string) (*fakeSession, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[akid]
	return s, ok
}

const stsNS = "https://sts.amazonaws.com/doc/2011-06-15/"

func (f *fakeSTS) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, err := url.ParseQuery(string(body))
	if r.Method != http.MethodPost || err != nil || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		writeFault(w, stsNS, &awsFault{400, "InvalidRequest", "not a Query API request"})
		return
	}
	if form.Get("Version") != "2011-06-15" {
		writeFault(w, stsNS, &awsFault{400, "InvalidAction", "bad Version"})
		return
	}
	action := form.Get("Action")
	f.mu.Lock()
	f.attempts[action]++
	n := f.attempts[action]
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		if fault := fail(action, n); fault != nil {
			if f.echo {
				fault.Message += " (request was: " + string(body) + ")"
			}
			writeFault(w, stsNS, fault)
			return
		}
	}
	var fault *awsFault
	switch action {
	case "AssumeRoleWithWebIdentity":
		fault = f.assumeRole(w, r, form, body, true)
	case "AssumeRole":
		fault = f.assumeRole(w, r, form, body, false)
	case "GetCallerIdentity":
		fault = f.getCallerIdentity(w, r, body)
	default:
		fault = &awsFault{400, "InvalidAction", "unknown action " + action}
	}
	if fault != nil {
		writeFault(w, stsNS, fault)
	}
}

var (
	sessionNameOK    = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	sourceIdentityOK = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	tagKeyOK         = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`)
	tagValueOK       = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$`)
)

func (f *fakeSTS) assumeRole(w http.ResponseWriter, r *http.Request, form url.Values, body []byte, web bool) *awsFault {
	c := stsCall{
		Action:          form.Get("Action"),
		RoleArn:         form.Get("RoleArn"),
		RoleSessionName: form.Get("RoleSessionName"),
		SourceIdentity:  form.Get("SourceIdentity"),
		Policy:          form.Get("Policy"),
		Tags:            map[string]string{},
	}
	for k := range form {
		known := map[string]bool{"Action": true, "Version": true, "RoleArn": true, "RoleSessionName": true, "DurationSeconds": true, "Policy": true}
		if web {
			known["WebIdentityToken"] = true
		} else {
			known["SourceIdentity"] = true
		}
		if !known[k] && !(!web && strings.HasPrefix(k, "Tags.member.")) {
			return &awsFault{400, "InvalidParameterCombination", "unexpected parameter " + k}
		}
	}
	d, err := strconv.Atoi(form.Get("DurationSeconds"))
	if err != nil {
		return &awsFault{400, "ValidationError", "DurationSeconds is required here"}
	}
	c.DurationSeconds = d
	role, ok := f.roles[c.RoleArn]
	if !ok {
		return &awsFault{403, "AccessDenied", "role does not exist or is not assumable"}
	}
	if !sessionNameOK.MatchString(c.RoleSessionName) {
		return &awsFault{400, "ValidationError", "RoleSessionName fails [\\w+=,.@-]{2,64}"}
	}
	if d < 900 || time.Duration(d)*time.Second > role.MaxSession {
		return &awsFault{400, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."}
	}
	if c.Policy != "" {
		if len(c.Policy) > 2048 {
			return &awsFault{400, "PackedPolicyTooLarge", "policy too large"}
		}
		if !json.Valid([]byte(c.Policy)) {
			return &awsFault{400, "MalformedPolicyDocument", "policy is not JSON"}
		}
	}
	var sub string
	if web {
		claims, code, err := verifyOIDC(f.jwks, form.Get("WebIdentityToken"), f.issuer, f.now())
		if err != nil {
			return &awsFault{400, code, err.Error()}
		}
		audOK := false
		for _, a := range f.clients {
			if claims.Audience.Contains(a) {
				audOK = true
			}
		}
		if !audOK {
			return &awsFault{400, "InvalidIdentityToken", "Incorrect token audience"}
		}
		trusted := false
		for _, p := range role.TrustSubs {
			if stringLike(p, claims.Subject) {
				trusted = true
			}
		}
		if !trusted {
			return &awsFault{403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"}
		}
		c.Token, sub = claims, claims.Subject
		if claims.SourceIdentity != "" {
			c.SourceIdentity = claims.SourceIdentity
		}
	} else {
		akid, err := verifySigV4(r, body, "sts", func(id string) (aws.Credentials, bool) {
			return f.broker, id == f.broker.AccessKeyID
		})
		if err != nil {
			return &awsFault{403, "SignatureDoesNotMatch", err.Error()}
		}
		c.Signer = akid
		if !role.TrustBroker {
			return &awsFault{403, "AccessDenied", "User is not authorized to perform: sts:AssumeRole"}
		}
		if c.SourceIdentity != "" && !sourceIdentityOK.MatchString(c.SourceIdentity) {
			return &awsFault{400, "ValidationError", "SourceIdentity fails [\\w+=,.@-]{2,64}"}
		}
		for n := 1; ; n++ {
			k, ok := form[fmt.Sprintf("Tags.member.%d.Key", n)]
			if !ok {
				break
			}
			c.HasTagsParam = true
			v := form.Get(fmt.Sprintf("Tags.member.%d.Value", n))
			if !tagKeyOK.MatchString(k[0]) || !tagValueOK.MatchString(v) || strings.HasPrefix(strings.ToLower(k[0]), "aws:") {
				return &awsFault{400, "ValidationError", "bad tag"}
			}
			if _, dup := c.Tags[strings.ToLower(k[0])]; dup {
				return &awsFault{400, "InvalidParameterValue", "duplicate tag key"}
			}
			c.Tags[k[0]] = v
		}
		if len(c.Tags) > 50 {
			return &awsFault{400, "ValidationError", "too many tags"}
		}
	}

	now := f.now()
	c.Expires = now.Add(time.Duration(d) * time.Second).UTC().Truncate(time.Second)
	s := &fakeSession{
		call: c,
		creds: aws.Credentials{
			AccessKeyID:     "ASIA" + strings.ToUpper(randHex(8)),
			SecretAccessKey: "sk/" + randHex(18) + "+x",
			SessionToken:    "IQoJb3JpZ2luX2Vj" + randHex(60),
			CanExpire:       true,
			Expires:         c.Expires,
		},
		arn:     fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", f.account, c.RoleArn[strings.LastIndexByte(c.RoleArn, '/')+1:], c.RoleSessionName),
		expires: c.Expires,
		sub:     sub,
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.sessions[s.creds.AccessKeyID] = s
	f.mu.Unlock()

	type credsXML struct {
		AccessKeyId     string
		SecretAccessKey string
		SessionToken    string
		Expiration      string
	}
	type result struct {
		SubjectFromWebIdentityToken string `xml:",omitempty"`
		Audience                    string `xml:",omitempty"`
		AssumedRoleUser             struct{ Arn, AssumedRoleId string }
		Credentials                 credsXML
		SourceIdentity              string `xml:",omitempty"`
		PackedPolicySize            int
	}
	var res result
	res.AssumedRoleUser.Arn = s.arn
	res.AssumedRoleUser.AssumedRoleId = "AROAEXAMPLEROLEID:" + c.RoleSessionName
	res.Credentials = credsXML{s.creds.AccessKeyID, s.creds.SecretAccessKey, s.creds.SessionToken, c.Expires.Format(time.RFC3339)}
	res.SourceIdentity = c.SourceIdentity
	if web {
		res.SubjectFromWebIdentityToken = sub
		res.Audience = DefaultAudience
	}
	writeResult(w, c.Action, res)
	return nil
}

func (f *fakeSTS) getCallerIdentity(w http.ResponseWriter, r *http.Request, body []byte) *awsFault {
	var sess *fakeSession
	_, err := verifySigV4(r, body, "sts", func(id string) (aws.Credentials, bool) {
		s, ok := f.session(id)
		if !ok {
			return aws.Credentials{}, false
		}
		sess = s
		return s.creds, true
	})
	if err != nil {
		return &awsFault{403, "SignatureDoesNotMatch", err.Error()}
	}
	if r.Header.Get("X-Amz-Security-Token") != sess.creds.SessionToken {
		return &awsFault{403, "InvalidClientTokenId", "The security token included in the request is invalid."}
	}
	if !f.now().Before(sess.expires) {
		return &awsFault{403, "ExpiredToken", "The security token included in the request is expired"}
	}
	writeResult(w, "GetCallerIdentity", struct {
		Arn, UserId, Account string
	}{sess.arn, "AROAEXAMPLEROLEID:" + sess.call.RoleSessionName, f.account})
	return nil
}

// stringLike is IAM's StringLike: * matches any run of characters, ? one.
func stringLike(pattern, s string) bool {
	re := "^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(pattern)) + "$"
	return regexp.MustCompile(re).MatchString(s)
}

func writeResult(w http.ResponseWriter, action string, result any) {
	type envelope struct {
		XMLName  xml.Name
		Xmlns    string `xml:"xmlns,attr"`
		Result   any
		Metadata struct{ RequestId string } `xml:"ResponseMetadata"`
	}
	env := envelope{XMLName: xml.Name{Local: action + "Response"}, Xmlns: stsNS, Result: result}
	env.Metadata.RequestId = "req-" + randHex(8)
	out, err := xml.Marshal(env)
	if err != nil {
		panic(err)
	}
	// The result element is named <Action>Result.
	out = bytes.Replace(out, []byte("<Result>"), []byte("<"+action+"Result>"), 1)
	out = bytes.Replace(out, []byte("</Result>"), []byte("</"+action+"Result>"), 1)
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", env.Metadata.RequestId)
	w.Write(out)
}

func writeFault(w http.ResponseWriter, ns string, f *awsFault) {
	typ := "Sender"
	if f.Status >= 500 {
		typ = "Receiver"
	}
	reqID := "req-" + randHex(8)
	var b bytes.Buffer
	b.WriteString(`<ErrorResponse xmlns="` + ns + `"><Error><Type>` + typ + `</Type><Code>`)
	xml.EscapeText(&b, []byte(f.Code))
	b.WriteString(`</Code><Message>`)
	xml.EscapeText(&b, []byte(f.Message))
	b.WriteString(`</Message></Error><RequestId>` + reqID + `</RequestId></ErrorResponse>`)
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", reqID)
	w.WriteHeader(f.Status)
	w.Write(b.Bytes())
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ---------------------------------------------------------------------------
// fakeIAM speaks GetRolePolicy and PutRolePolicy.

const iamNS = "https://iam.amazonaws.com/doc/2010-05-08/"

type putCall struct {
	RoleName, PolicyName, PolicyDocument string
}

type fakeIAM struct {
	srv      *httptest.Server
	roles    map[string]bool // role names that exist
	mu       sync.Mutex
	policies map[string]string // role/policy → document
	puts     []putCall
	attempts map[string]int
	fail     func(action string, attempt int) *awsFault
}

func newFakeIAM(t *testing.T, roles ...string) *fakeIAM {
	f := &fakeIAM{roles: map[string]bool{}, policies: map[string]string{}, attempts: map[string]int{}}
	for _, r := range roles {
		f.roles[r] = true
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// state returns what the fake received so far.
func (f *fakeIAM) state() (puts []putCall, attempts map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	attempts = map[string]int{}
	for k, v := range f.attempts {
		attempts[k] = v
	}
	return append([]putCall(nil), f.puts...), attempts
}

func (f *fakeIAM) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, err := url.ParseQuery(string(body))
	if r.Method != http.MethodPost || err != nil || form.Get("Version") != "2010-05-08" {
		writeFault(w, iamNS, &awsFault{400, "InvalidRequest", "not an IAM Query API request"})
		return
	}
	if _, err := verifySigV4(r, body, "iam", func(id string) (aws.Credentials, bool) {
		return brokerKey, id == brokerKey.AccessKeyID
	}); err != nil {
		writeFault(w, iamNS, &awsFault{403, "SignatureDoesNotMatch", err.Error()})
		return
	}
	action := form.Get("Action")
	f.mu.Lock()
	f.attempts[action]++
	n := f.attempts[action]
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		if fault := fail(action, n); fault != nil {
			writeFault(w, iamNS, fault)
			return
		}
	}
	role, name := form.Get("RoleName"), form.Get("PolicyName")
	if !f.roles[role] {
		writeFault(w, iamNS, &awsFault{404, "NoSuchEntity", "The role with name " + role + " cannot be found."})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch action {
	case "GetRolePolicy":
		doc, ok := f.policies[role+"/"+name]
		if !ok {
			writeFault(w, iamNS, &awsFault{404, "NoSuchEntity", "The role policy with name " + name + " cannot be found."})
			return
		}
		// IAM returns policy documents URL-encoded.
		writeIAMResult(w, action, "RoleName", role, "PolicyName", name, "PolicyDocument", url.QueryEscape(doc))
	case "PutRolePolicy":
		doc := form.Get("PolicyDocument")
		if !json.Valid([]byte(doc)) {
			writeFault(w, iamNS, &awsFault{400, "MalformedPolicyDocument", "not JSON"})
			return
		}
		f.policies[role+"/"+name] = doc
		f.puts = append(f.puts, putCall{role, name, doc})
		writeIAMResult(w, action)
	default:
		writeFault(w, iamNS, &awsFault{400, "InvalidAction", action})
	}
}

// writeIAMResult writes <ActionResponse><ActionResult>fields…</ActionResult>
// with fields as name, value pairs.
func writeIAMResult(w http.ResponseWriter, action string, fields ...string) {
	var b bytes.Buffer
	b.WriteString(`<` + action + `Response xmlns="` + iamNS + `">`)
	if len(fields) > 0 {
		b.WriteString(`<` + action + `Result>`)
		for i := 0; i+1 < len(fields); i += 2 {
			b.WriteString(`<` + fields[i] + `>`)
			xml.EscapeText(&b, []byte(fields[i+1]))
			b.WriteString(`</` + fields[i] + `>`)
		}
		b.WriteString(`</` + action + `Result>`)
	}
	b.WriteString(`<ResponseMetadata><RequestId>req-` + randHex(8) + `</RequestId></ResponseMetadata></` + action + `Response>`)
	w.Header().Set("Content-Type", "text/xml")
	w.Write(b.Bytes())
}

// ---------------------------------------------------------------------------
// Logs the tests read.

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

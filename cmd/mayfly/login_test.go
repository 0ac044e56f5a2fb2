package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/api"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/devca"
	"github.com/mayflyhq/mayfly/broker/devoidc"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/cmd/internal/devenv"
)

// TestMain keeps every test of the package away from the login cache of
// whoever runs them: a cached token would change which identity the CLI
// uses.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mayfly-cli-config-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	os.Unsetenv("MAYFLY_TOKEN_FILE")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// humanBroker is a broker that people can call with OIDC ID tokens, wired
// as `mayflyd dev` is meant to be: the dev OIDC provider on the broker's
// HTTPS listener, an OIDC verifier for it in authn.Config.Bearer, and the
// real API handlers, interceptors and example policy. Its dev state
// directory has a client.json that publishes the provider.
type humanBroker struct {
	dir      string // the dev state directory (--dev-dir)
	addr     string
	brokerID string
	bundle   string
	op       *devoidc.Provider
	client   *http.Client // trusts the dev CA
}

func startHumanBroker(t *testing.T) *humanBroker {
	t.Helper()
	discard := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString(devenv.TrustDomain)
	brokerID := spiffeid.RequireFromString(devenv.BrokerID)
	ca, err := devca.Open(filepath.Join(dir, "ca"), td)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.MintX509SVIDWithDNS(brokerID, time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpURL := "https://" + httpLn.Addr().String()

	// The dev OIDC provider on the HTTPS listener.
	op, err := devoidc.New(devoidc.Config{Issuer: httpURL + devoidc.DefaultPath, KeyDir: filepath.Join(dir, "dev-oidc"), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(op.Path()+"/", op)
	cert := tls.Certificate{PrivateKey: svid.PrivateKey}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	httpSrv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = httpSrv.ServeTLS(httpLn, "", "") }()
	t.Cleanup(func() { httpSrv.Close() })
	client, err := devoidc.HTTPClient(ca.BundlePath())
	if err != nil {
		t.Fatal(err)
	}

	// Authentication: SVIDs, and the dev provider's ID tokens.
	verifier, err := authn.NewOIDCVerifier(context.Background(), []authn.OIDCProvider{op.OIDCProvider()},
		authn.WithOIDCHTTPClient(client), authn.WithOIDCLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	auth, err := authn.NewAuthenticator(authn.Config{
		TrustDomains: []spiffeid.TrustDomain{td},
		JWTBundles:   ca.JWTBundle(),
		Audience:     brokerID.String(),
		Bearer:       []authn.BearerVerifier{verifier},
	})
	if err != nil {
		t.Fatal(err)
	}

	// The API, as broker.New builds it.
	iss, err := jwt.New(jwt.Config{IssuerURL: httpURL, KeyDir: filepath.Join(dir, "jwt-keys"), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(policy.ExamplePolicy, policy.Options{Issuers: map[string]func(*yaml.Node) (any, error){iss.Name(): iss.DecodeParams}})
	if err != nil {
		t.Fatal(err)
	}
	apiSrv, err := api.New(api.Config{
		Policy:  func() *policy.Policy { return pol },
		Store:   memory.New(),
		Issuers: map[string]issuer.Issuer{iss.Name(): iss},
		JWT:     iss,
		Logger:  discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(authn.ServerCredentials(svid, ca.X509Bundle())),
		grpc.ChainUnaryInterceptor(api.UnaryInterceptor(auth, discard)),
		grpc.ChainStreamInterceptor(api.StreamInterceptor(auth, discard)))
	apiSrv.Register(gs)
	go func() { _ = gs.Serve(grpcLn) }()
	t.Cleanup(gs.Stop)

	// The client file, with the fields the dev broker publishes.
	cliSVID, err := ca.MintX509SVID(spiffeid.RequireFromString(devenv.CLIID), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cliCert, cliKey, err := ca.WriteSVID("cli", cliSVID)
	if err != nil {
		t.Fatal(err)
	}
	if err := devenv.Save(dir, &devenv.Client{
		Addr:         grpcLn.Addr().String(),
		HTTPURL:      httpURL,
		BrokerID:     brokerID.String(),
		Bundle:       ca.BundlePath(),
		CLI:          devenv.Identity{SPIFFEID: devenv.CLIID, Cert: cliCert, Key: cliKey},
		OIDCIssuer:   op.Issuer(),
		OIDCClientID: op.ClientID(),
	}); err != nil {
		t.Fatal(err)
	}
	return &humanBroker{dir: dir, addr: grpcLn.Addr().String(), brokerID: brokerID.String(), bundle: ca.BundlePath(), op: op, client: client}
}

// mayfly runs the CLI in-process.
func mayfly(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// leaseSubject issues demo-api-write with args and returns the lease's
// subject.
func leaseSubject(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, code := mayfly(append(args, "issue", "demo-api-write", "-o", "json")...)
	if code != 0 {
		t.Fatalf("issue %v: exit %d: %s", args, code, stderr)
	}
	var resp struct {
		Lease struct {
			Subject string `json:"subject"`
		} `json:"lease"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("issue output: %v\n%s", err, out)
	}
	return resp.Lease.Subject
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Fatalf("%s has mode %v, want %v", path, st.Mode().Perm(), want)
	}
}

func TestDevUserActsWithoutLogin(t *testing.T) {
	config := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", config)
	hb := startHumanBroker(t)

	if got := leaseSubject(t, "--dev", "--dev-dir", hb.dir, "--user", "alice"); got != "user:alice" {
		t.Fatalf("subject = %q, want user:alice", got)
	}
	cached := filepath.Join(config, "mayfly", "dev-users", "alice.json")
	wantMode(t, cached, 0o600)
	wantMode(t, filepath.Dir(cached), 0o700)
	wantMode(t, filepath.Join(config, "mayfly"), 0o700)
	st, _ := os.Stat(cached)

	// The cached token is used again while it lasts.
	if got := leaseSubject(t, "--dev", "--dev-dir", hb.dir, "--user", "alice"); got != "user:alice" {
		t.Fatalf("second call: subject = %q", got)
	}
	if st2, _ := os.Stat(cached); !st2.ModTime().Equal(st.ModTime()) {
		t.Fatal("a second call logged in again instead of using the cached token")
	}
	if got := leaseSubject(t, "--dev", "--dev-dir", hb.dir, "--user", "bob"); got != "user:bob" {
		t.Fatalf("subject = %q, want user:bob", got)
	}
	// Without --user, --dev is still the dev CLI's SVID.
	if got := leaseSubject(t, "--dev", "--dev-dir", hb.dir); got != devenv.CLIID {
		t.Fatalf("--dev without --user: subject = %q", got)
	}
	// Policy applies to people too: carol is not a developer.
	_, stderr, code := mayfly("--dev", "--dev-dir", hb.dir, "--user", "carol", "issue", "demo-api-write")
	if code != 1 || !strings.Contains(stderr, "PermissionDenied") || !strings.Contains(stderr, "user:carol") {
		t.Fatalf("carol: exit %d: %s", code, stderr)
	}
}

func TestLoginLogout(t *testing.T) {
	config := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", config)
	hb := startHumanBroker(t)
	tokenPath := filepath.Join(config, "mayfly", "token.json")
	asBroker := []string{"--addr", hb.addr, "--broker-id", hb.brokerID, "--bundle", hb.bundle}

	// An interactive login against the provider by its issuer URL: the
	// person reads the URL and code and approves in a browser (here: the
	// form post a browser would make).
	pr, pw := io.Pipe()
	type result struct {
		stdout string
		code   int
	}
	done := make(chan result, 1)
	go func() {
		var out bytes.Buffer
		code := run([]string{"login", "--issuer", hb.op.Issuer(), "--client-id", hb.op.ClientID(), "--issuer-ca", hb.bundle}, &out, pw)
		pw.Close()
		done <- result{out.String(), code}
	}()
	var prompt []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			prompt = append(prompt, line)
		}
		if strings.HasPrefix(sc.Text(), "Waiting for you to log in") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if len(prompt) < 5 || prompt[0] != "To log in, open" || prompt[1] != hb.op.Issuer()+"/device" || prompt[2] != "and enter the code" {
		t.Fatalf("prompt:\n%s", strings.Join(prompt, "\n"))
	}
	if err := devoidc.Approve(context.Background(), hb.client, prompt[1], prompt[3], "bob"); err != nil {
		t.Fatal(err)
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("login did not finish")
	}
	if res.code != 0 || !strings.HasPrefix(res.stdout, "Logged in as bob at "+hb.op.Issuer()+" until ") || !strings.Contains(res.stdout, tokenPath) {
		t.Fatalf("login: exit %d: %s", res.code, res.stdout)
	}
	wantMode(t, tokenPath, 0o600)
	wantMode(t, filepath.Dir(tokenPath), 0o700)

	// Later commands with no SVID use the login: TLS to the broker, the
	// ID token as bearer token.
	if got := leaseSubject(t, asBroker...); got != "user:bob" {
		t.Fatalf("subject = %q, want user:bob", got)
	}
	login, err := readLogin(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	// The token is never printed.
	out, stderr, _ := mayfly(append(asBroker, "leases")...)
	if strings.Contains(out+stderr, login.IDToken) || strings.Contains(res.stdout, login.IDToken) {
		t.Fatal("the ID token was printed")
	}

	// A login for a dev user replaces it.
	out, stderr, code := mayfly("login", "--dev", "--dev-dir", hb.dir, "--user", "carol")
	if code != 0 || !strings.HasPrefix(out, "Logged in as carol") {
		t.Fatalf("login --dev --user carol: exit %d: %s %s", code, out, stderr)
	}
	_, stderr, code = mayfly(append(asBroker, "issue", "demo-api-write")...)
	if code != 1 || !strings.Contains(stderr, "user:carol") {
		t.Fatalf("as carol: exit %d: %s", code, stderr)
	}
	// --token-file says where to write and read.
	other := filepath.Join(t.TempDir(), "alice.json")
	if _, stderr, code = mayfly("login", "--dev", "--dev-dir", hb.dir, "--user", "alice", "--token-file", other); code != 0 {
		t.Fatalf("login --token-file: exit %d: %s", code, stderr)
	}
	wantMode(t, other, 0o600)
	if got := leaseSubject(t, append(asBroker, "--token-file", other)...); got != "user:alice" {
		t.Fatalf("--token-file: subject = %q", got)
	}

	// An expired login is refused before anything is sent.
	login.Expiry = time.Now().Add(-time.Minute).Truncate(time.Second)
	if err := writeLogin(tokenPath, login); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = mayfly(append(asBroker, "leases")...)
	if want := "mayfly: your login expired at " + login.Expiry.UTC().Format(time.RFC3339) + ": run mayfly login\n"; code != 1 || stderr != want {
		t.Fatalf("expired: exit %d: %q, want %q", code, stderr, want)
	}
	// Without the broker's ID, the token is not sent anywhere.
	login.Expiry = time.Now().Add(time.Hour)
	if err := writeLogin(tokenPath, login); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = mayfly("--addr", hb.addr, "--bundle", hb.bundle, "leases")
	if code != 1 || !strings.Contains(stderr, "--broker-id is required with your login") {
		t.Fatalf("no --broker-id: exit %d: %s", code, stderr)
	}

	// logout forgets it.
	out, _, code = mayfly("logout")
	if code != 0 || !strings.Contains(out, "Removed "+tokenPath) {
		t.Fatalf("logout: exit %d: %s", code, out)
	}
	if _, err := os.Stat(tokenPath); !os.IsNotExist(err) {
		t.Fatalf("token file still there: %v", err)
	}
	if out, _, _ = mayfly("logout"); out != "Not logged in.\n" {
		t.Fatalf("second logout: %q", out)
	}
	_, stderr, code = mayfly("--addr", hb.addr, "--broker-id", hb.brokerID, "leases")
	if code != 1 || !strings.Contains(stderr, "no identity: use --dev, or --cert/--key/--bundle, or --socket (SPIFFE Workload API), or log in with mayfly login") {
		t.Fatalf("after logout: exit %d: %s", code, stderr)
	}
}

func TestLoginErrors(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	hb := startHumanBroker(t)
	noOIDC := t.TempDir()
	if err := devenv.Save(noOIDC, &devenv.Client{Addr: hb.addr, BrokerID: hb.brokerID, Bundle: hb.bundle}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"login"}, "mayfly: --issuer and --client-id are required (or --dev for the local dev broker)"},
		{[]string{"login", "--user", "alice"}, "mayfly: --user needs --dev: dev users exist only in the dev broker's OIDC provider"},
		{[]string{"login", "--dev", "--dev-dir", hb.dir, "--issuer", "https://x"}, "mayfly: --dev uses the dev broker's OIDC provider: leave out --issuer and --client-id"},
		{[]string{"login", "--dev", "--dev-dir", noOIDC}, "mayfly: the dev broker publishes no OIDC provider (oidc_issuer in its client.json): restart it with a mayflyd that has one"},
		{[]string{"--user", "alice", "leases"}, "mayfly: --user needs --dev: dev users exist only in the dev broker's OIDC provider; elsewhere run mayfly login"},
		{[]string{"--dev", "--dev-dir", hb.dir, "--user", "Alice", "leases"}, `mayfly: --user "Alice": dev user names are lower-case letters, digits, '.', '_' or '-', starting with a letter`},
		{[]string{"--token-file", "/nonexistent/t.json", "leases"}, "mayfly: --token-file /nonexistent/t.json does not exist: run mayfly login --token-file /nonexistent/t.json"},
		{[]string{"--token-file", hb.bundle, "--cert", "c", "--key", "k", "leases"}, "mayfly: --token-file and --cert/--key are two identities: use one"},
		{[]string{"--token-file", hb.bundle, "leases"}, "mayfly: " + hb.bundle + " is not a token file written by mayfly login; run mayfly login again"},
		{[]string{"login", "--issuer", hb.op.Issuer(), "--client-id", "nobody", "--issuer-ca", hb.bundle}, `mayfly: identity provider ` + hb.op.Issuer() + ` refused to start a login for client "nobody": invalid_client: unknown client_id "nobody": the dev provider's client is "mayfly-cli"`},
		{[]string{"login", "--issuer", hb.op.Issuer(), "--client-id", "x"}, "mayfly: identity provider " + hb.op.Issuer() + ": Get"},
	}
	for _, tc := range cases {
		_, stderr, code := mayfly(tc.args...)
		if code != 1 || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q\nwant prefix %q", tc.args, code, stderr, tc.want)
		}
	}

	// A login denied on the verification page.
	pr, pw := io.Pipe()
	done := make(chan string, 1)
	go func() {
		var out bytes.Buffer
		run([]string{"login", "--dev", "--dev-dir", hb.dir}, &out, pw)
		pw.Close()
		done <- out.String()
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "Waiting") {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	resp, err := hb.client.PostForm(lines[1], map[string][]string{"user_code": {lines[3]}, "action": {"deny"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	rest, _ := io.ReadAll(pr)
	<-done
	if !strings.Contains(string(rest), "mayfly: the login was denied") {
		t.Fatalf("denied login: %q", rest)
	}
}

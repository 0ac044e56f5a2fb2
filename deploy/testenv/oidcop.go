package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// A real OpenID Connect provider that nobody on this project wrote: the
// example OP of github.com/zitadel/oidc/v3 (example/server), unmodified,
// built from the tools module deploy/tools/oidc-op and cached in
//
//	${MAYFLY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mayfly-tools}/oidc-op-<version>/oidc-op
//
// where <version> is the zitadel/oidc version that go.mod pins. The build
// (under a minute) happens once; a lock file serialises concurrent
// builders, and the binary is built under a temporary name and renamed
// into place.
//
// How the example works, from its source (example/server/main.go, config,
// storage): it reads PORT and USERS_FILE from the environment, listens on
// ":PORT" and calls itself http://localhost:PORT/. Its clients are fixed:
// "native" (public, PKCE, redirect http://localhost/auth/callback), "web"
// and "api" (secret "secret"); none may use the device flow, so tokens are
// obtained with the authorization code flow, driving its login form. It
// signs with RS256, its ID tokens last one hour, their "aud" is the client
// ID, and in the code flow they carry only the standard claims ("sub" is
// the user's ID; profile and email claims go to the userinfo endpoint). It
// has no notion of groups.

const (
	// oidcopPackage is the example OP's main package; oidcopModule the
	// module whose version names the cache directory.
	oidcopPackage = "github.com/zitadel/oidc/v3/example/server"
	oidcopModule  = "github.com/zitadel/oidc/v3"
	// oidcopModDir is the tools module, relative to the repository root.
	oidcopModDir = "deploy/tools/oidc-op"
	// oidcopName is the binary's name in the cache.
	oidcopName = "oidc-op"
)

// OIDCProviderServer is a running zitadel/oidc example OP on a loopback
// port.
type OIDCProviderServer struct {
	// Issuer is its issuer URL, "http://localhost:PORT/" (with the slash).
	Issuer string
	// ClientID is the public client that IDToken logs in with; it is the
	// "aud" of the ID tokens.
	ClientID string
	// RedirectURI is that client's registered redirect URI; nothing listens
	// there, IDToken takes the code from the redirect.
	RedirectURI string
	// Users can log in with their Username and Password.
	Users []OIDCProviderUser

	dir     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// OIDCProviderUser is a user of the example OP. Its ID is the "sub" of
// its ID tokens.
type OIDCProviderUser struct {
	ID       string
	Username string
	Password string
	Email    string
}

// OIDCOP starts the zitadel/oidc example OP with two users, alice and bob
// (IDs "alice" and "bob", random passwords), waits until it serves its
// discovery document, and stops it when the test ends. It skips the test
// if the OP cannot be built (fails it when CI=true).
func OIDCOP(t testing.TB) *OIDCProviderServer {
	t.Helper()
	bin, err := oidcopBinary(t)
	if err != nil {
		oidcopSkip(t, "testenv: the zitadel/oidc example OP is unavailable: "+err.Error())
	}
	dir := t.TempDir()
	s := &OIDCProviderServer{
		ClientID:    "native",
		RedirectURI: "http://localhost/auth/callback",
		Users: []OIDCProviderUser{
			{ID: "alice", Username: "alice", Password: oidcopSecret(), Email: "alice@example.org"},
			{ID: "bob", Username: "bob", Password: oidcopSecret(), Email: "bob@example.org"},
		},
		dir:     dir,
		logPath: filepath.Join(dir, "oidc-op.log"),
	}
	usersFile := filepath.Join(dir, "users.json")
	if err := s.writeUsers(usersFile); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// The example binds ":PORT" (every interface), not just loopback; a
	// port that is free on 127.0.0.1 may be taken elsewhere, so try again
	// with another one.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if lastErr = s.start(bin, oidcopFreePort(t), usersFile); lastErr == nil {
			t.Cleanup(s.stop)
			return s
		}
	}
	t.Fatalf("testenv: the zitadel/oidc example OP did not start: %v", lastErr)
	return nil
}

// LogPath is the OP's log (it logs every request, at debug level).
func (s *OIDCProviderServer) LogPath() string { return s.logPath }

func (s *OIDCProviderServer) writeUsers(path string) error {
	type user struct {
		ID, Username, Password, FirstName, LastName, Email string
		EmailVerified                                      bool
		PreferredLanguage                                  string
	}
	users := map[string]user{}
	for _, u := range s.Users {
		users[u.ID] = user{ID: u.ID, Username: u.Username, Password: u.Password, FirstName: u.Username, LastName: "Test",
			Email: u.Email, EmailVerified: true, PreferredLanguage: "en"}
	}
	b, err := json.Marshal(users)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func (s *OIDCProviderServer) start(bin string, port int, usersFile string) error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	off, _ := logFile.Seek(0, io.SeekEnd)
	cmd := exec.Command(bin)
	cmd.Dir = s.dir
	cmd.Env = append(oidcopEnviron(), "PORT="+strconv.Itoa(port), "USERS_FILE="+usersFile)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = oidcopSysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	issuer := "http://localhost:" + strconv.Itoa(port) + "/"
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("it exited: %s", oidcopLogSince(s.logPath, off))
		default:
		}
		if iss, err := oidcopDiscover(client, issuer); err == nil {
			if iss != issuer {
				_ = cmd.Process.Kill()
				<-exited
				return fmt.Errorf("its discovery names issuer %q, expected %q", iss, issuer)
			}
			s.Issuer, s.cmd, s.exited = issuer, cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("no discovery document at %s after 30s: %s", issuer, oidcopLogSince(s.logPath, off))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func oidcopDiscover(client *http.Client, issuer string) (string, error) {
	resp, err := client.Get(issuer + ".well-known/openid-configuration")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(resp.Status)
	}
	var d struct {
		Issuer string `json:"issuer"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return "", err
	}
	return d.Issuer, nil
}

// stop ends the OP: SIGTERM (it has no handler, so it dies at once), then
// SIGKILL after five seconds.
func (s *OIDCProviderServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// IDToken logs in as username with password through the authorization
// code flow with PKCE, as a browser would: it opens the authorization
// URL, submits the OP's own login form (with a cookie jar), follows the
// redirects up to the client's redirect URI, and exchanges the code at the
// token endpoint. It returns the raw ID token, and fails the test when any
// step fails (wrong password included: use Login to see that error).
func (s *OIDCProviderServer) IDToken(t testing.TB, username, password string) string {
	t.Helper()
	tok, err := s.Login(context.Background(), username, password)
	if err != nil {
		t.Fatalf("testenv: log in to the zitadel/oidc example OP as %s: %v", username, err)
	}
	return tok
}

// User returns the user called username; it panics if there is none.
func (s *OIDCProviderServer) User(username string) OIDCProviderUser {
	for _, u := range s.Users {
		if u.Username == username {
			return u
		}
	}
	panic("testenv: the example OP has no user " + username)
}

// oidcopLoginForm finds the auth request ID in the example's login page
// (<input type="hidden" name="id" value="...">).
var oidcopLoginForm = regexp.MustCompile(`<input type="hidden" name="id" value="([^"]*)">`)

// Login is IDToken returning its error.
func (s *OIDCProviderServer) Login(ctx context.Context, username, password string) (string, error) {
	meta, err := s.metadata(ctx)
	if err != nil {
		return "", err
	}
	jar, _ := cookiejar.New(nil)
	redirect, _ := url.Parse(s.RedirectURI)
	client := &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme == redirect.Scheme && req.URL.Host == redirect.Host && req.URL.Path == redirect.Path {
				return http.ErrUseLastResponse // the client's redirect URI: the code is in it
			}
			if len(via) > 10 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
	conf := &oauth2.Config{
		ClientID:    s.ClientID,
		RedirectURL: s.RedirectURI,
		Endpoint:    oauth2.Endpoint{AuthURL: meta.AuthURL, TokenURL: meta.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
		Scopes:      []string{"openid", "profile", "email"},
	}
	verifier := oauth2.GenerateVerifier()
	state, nonce := oidcopSecret(), oidcopSecret()

	// 1. The authorization request ends on the OP's login page.
	resp, err := oidcopGet(ctx, client, conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce)))
	if err != nil {
		return "", fmt.Errorf("authorization request: %w", err)
	}
	page, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	m := oidcopLoginForm.FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		return "", fmt.Errorf("authorization request: expected the login form, got %s at %s", resp.Status, resp.Request.URL.Path)
	}
	authRequestID := html.UnescapeString(string(m[1]))

	// 2. Submit the login form; the OP redirects through its callback to
	// the client's redirect URI with the code.
	loginURL := resp.Request.URL.ResolveReference(&url.URL{Path: "/login/username"})
	form := url.Values{"id": {authRequestID}, "username": {username}, "password": {password}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, loginURL.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = client.Do(req)
	if err != nil {
		return "", fmt.Errorf("login form: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		msg := "no redirect to the client"
		if strings.Contains(string(body), "username or password wrong") {
			msg = "username or password wrong"
		}
		return "", fmt.Errorf("login form: %s (%s)", msg, resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	q := loc.Query()
	if e := q.Get("error"); e != "" {
		return "", fmt.Errorf("login: the OP answered %s: %s", e, q.Get("error_description"))
	}
	if q.Get("state") != state || q.Get("code") == "" {
		return "", errors.New("login: the redirect to the client carries no code or the wrong state")
	}

	// 3. Exchange the code (PKCE, no client secret).
	tok, err := conf.Exchange(context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: 10 * time.Second}), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		return "", fmt.Errorf("token exchange: %w", err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	if idToken == "" {
		return "", errors.New("token exchange: the response has no id_token")
	}
	return idToken, nil
}

type oidcopMetadata struct {
	AuthURL  string `json:"authorization_endpoint"`
	TokenURL string `json:"token_endpoint"`
}

func (s *OIDCProviderServer) metadata(ctx context.Context) (*oidcopMetadata, error) {
	resp, err := oidcopGet(ctx, &http.Client{Timeout: 5 * time.Second}, s.Issuer+".well-known/openid-configuration")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m oidcopMetadata
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || m.AuthURL == "" || m.TokenURL == "" {
		return nil, fmt.Errorf("discovery document: %v", err)
	}
	return &m, nil
}

func oidcopGet(ctx context.Context, client *http.Client, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	return client.Do(req)
}

// oidcopEnviron is the environment without the variables the example
// reads, so that the test's own environment cannot change it.
func oidcopEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "PORT", "USERS_FILE", "REDIRECT_URI":
		default:
			env = append(env, kv)
		}
	}
	return env
}

func oidcopSecret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// oidcopSkip skips the test, or fails it when CI=true.
func oidcopSkip(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: the real-provider test may not be skipped)")
	}
	t.Skip(msg)
}

func oidcopFreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// oidcopSysProcAttr kills the OP with SIGKILL if the test binary dies
// before its cleanup ran (Linux parent-death signal).
func oidcopSysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL))
	}
	return attr
}

// oidcopLogSince is what the log got from offset on, at most 4 KiB.
func oidcopLogSince(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	b = b[off:]
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

var (
	oidcopMu  sync.Mutex
	oidcopBin string
)

// oidcopBinary returns the example OP's binary, building it into the tools
// cache the first time.
func oidcopBinary(t testing.TB) (string, error) {
	oidcopMu.Lock()
	defer oidcopMu.Unlock()
	if oidcopBin != "" {
		return oidcopBin, nil
	}
	root, err := oidcopRepoRoot()
	if err != nil {
		return "", err
	}
	modDir := filepath.Join(root, oidcopModDir)
	version, err := oidcopVersion(filepath.Join(modDir, "go.mod"))
	if err != nil {
		return "", err
	}
	cache, err := oidcopCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, oidcopName+"-"+version)
	bin := filepath.Join(dir, oidcopName)
	if !oidcopExecutable(bin) {
		if err := oidcopBuild(t, modDir, dir, bin, version); err != nil {
			return "", err
		}
	}
	oidcopBin = bin
	return bin, nil
}

func oidcopBuild(t testing.TB, modDir, dir, bin, version string) error {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if !oidcopExecutable(gobin) {
		var err error
		if gobin, err = exec.LookPath("go"); err != nil {
			return errors.New("the go command is not on PATH (needed to build the OP once)")
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// One builder at a time, across processes; the others wait and then
	// find the binary.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if oidcopExecutable(bin) {
		return nil
	}
	tmp := fmt.Sprintf("%s.tmp-%d", bin, os.Getpid())
	defer os.Remove(tmp)
	t.Logf("testenv: building %s %s into %s once", oidcopPackage, version, dir)
	start := time.Now()
	cmd := exec.Command(gobin, "build", "-trimpath", "-o", tmp, oidcopPackage)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if len(out) > 4000 {
			out = out[len(out)-4000:]
		}
		return fmt.Errorf("go build %s in %s: %v\n%s", oidcopPackage, modDir, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return err
	}
	t.Logf("testenv: built the OIDC provider in %v", time.Since(start).Round(time.Second))
	return nil
}

func oidcopExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func oidcopCacheDir() (string, error) {
	if d := os.Getenv("MAYFLY_TOOLS_CACHE"); d != "" {
		return d, nil
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no MAYFLY_TOOLS_CACHE, XDG_CACHE_HOME or home directory: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "mayfly-tools"), nil
}

// oidcopRepoRoot finds the repository root from this file, else upwards
// from the working directory.
func oidcopRepoRoot() (string, error) {
	has := func(root string) bool {
		_, err := os.Stat(filepath.Join(root, oidcopModDir, "go.mod"))
		return err == nil
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")); has(root) {
			return root, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for !has(dir) {
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s/go.mod above the working directory", oidcopModDir)
		}
		dir = parent
	}
	return dir, nil
}

// oidcopVersion is the zitadel/oidc version the tools module pins.
func oidcopVersion(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "require" {
			fields = fields[1:]
		}
		if len(fields) >= 2 && fields[0] == oidcopModule && strings.HasPrefix(fields[1], "v") {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s does not require %s", gomod, oidcopModule)
}

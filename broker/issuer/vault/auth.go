package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/mayflyhq/mayfly/broker/issuer"
)

const (
	// loginMargin: a login token this close to its end is replaced before
	// use rather than sent to Vault to fail.
	loginMargin = 10 * time.Second
	// runBackoffMin and runBackoffMax bound the pause between failed
	// logins or renewals in Run.
	runBackoffMin = time.Second
	runBackoffMax = time.Minute
)

// session is the broker's own Vault token and a client that sends it.
type session struct {
	client *vaultapi.Client
	// login is the login response (nil for Config.Auth.Token).
	login *vaultapi.Secret
	// expires is when the token ends, in Unix nanoseconds; 0 when unknown
	// or never. ttl is the lifetime Vault last granted. Run moves both on
	// every renewal.
	expires, ttl atomic.Int64
}

// setExpiry records a grant of ttl at at.
func (s *session) setExpiry(at time.Time, ttl time.Duration) {
	s.ttl.Store(int64(ttl))
	s.expires.Store(at.Add(ttl).UnixNano())
}

// usable reports whether the token has more than loginMargin (or a tenth
// of its lifetime, if shorter) left. Run renews at about two thirds of
// the lifetime, well before that.
func (s *session) usable(now time.Time) bool {
	e := s.expires.Load()
	margin := min(loginMargin, time.Duration(s.ttl.Load())/10)
	return e == 0 || now.Add(margin).UnixNano() < e
}

// newHTTPClient is the transport every Vault client of the issuer shares.
func newHTTPClient(cfg Config) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLS.ServerName}
	if cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("vault: Config.TLS.CAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("vault: Config.TLS.CAFile %s holds no PEM certificate", cfg.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                 nil, // never through an environment proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: tr,
		// Vault redirects only from a standby to the active node; follow
		// none silently, as the vault/api default does.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// newClient returns a Vault client sending token ("" for none). Nothing
// comes from VAULT_* environment variables: the configuration is all in
// Config.
func (i *Issuer) newClient(token string) (*vaultapi.Client, error) {
	c, err := vaultapi.NewClient(&vaultapi.Config{
		Address:    i.cfg.Address,
		HttpClient: i.http,
		Timeout:    i.cfg.RequestTimeout,
		MaxRetries: 0, // the broker retries: the revoker with backoff, callers on Unavailable
	})
	if err != nil {
		return nil, fmt.Errorf("vault: client for %s: %w", i.cfg.Address, err)
	}
	c.SetHeaders(http.Header{vaultapi.RequestHeaderName: []string{"true"}})
	c.ClearNamespace()
	if i.cfg.Namespace != "" {
		c.SetNamespace(i.cfg.Namespace)
	}
	c.ClearToken()
	if token != "" {
		c.SetToken(token)
	}
	return c, nil
}

// session returns the broker's current Vault session, logging in first if
// there is none or its token is about to end.
func (i *Issuer) session(ctx context.Context) (*session, error) {
	if s := i.sess.Load(); s != nil && s.usable(i.cfg.Clock()) {
		return s, nil
	}
	i.loginMu.Lock()
	defer i.loginMu.Unlock()
	if s := i.sess.Load(); s != nil && s.usable(i.cfg.Clock()) {
		return s, nil
	}
	if i.cfg.Auth.Token != "" {
		// A fixed token cannot log in again; use it until Vault says no.
		return i.sess.Load(), nil
	}
	s, err := i.login(ctx)
	if err != nil {
		return nil, err
	}
	i.sess.Store(s)
	return s, nil
}

// login authenticates with AppRole or JWT.
func (i *Issuer) login(ctx context.Context) (*session, error) {
	var (
		path string
		body map[string]any
		hint string
	)
	switch a := i.cfg.Auth; {
	case a.AppRole != nil:
		secretID := a.AppRole.SecretID
		if a.AppRole.SecretIDFile != "" {
			b, err := os.ReadFile(a.AppRole.SecretIDFile)
			if err != nil {
				return nil, fmt.Errorf("log in with AppRole: read Config.Auth.AppRole.SecretIDFile: %w: %w", err, issuer.ErrUnavailable)
			}
			secretID = strings.TrimSpace(string(b))
		}
		path = "auth/" + a.AppRole.Path + "/login"
		body = map[string]any{"role_id": a.AppRole.RoleID, "secret_id": secretID}
		hint = "check the role_id and secret_id (expired or used up?)"
	case a.JWT != nil:
		jwt, err := a.JWT.TokenSource(ctx)
		if err != nil {
			return nil, fmt.Errorf("log in with JWT: the broker's JWT-SVID is unavailable: %w", issuer.ErrUnavailable)
		}
		path = "auth/" + a.JWT.Path + "/login"
		body = map[string]any{"role": a.JWT.Role, "jwt": jwt}
		hint = fmt.Sprintf("check the jwt role %q: its bound audience and subject, and the auth method's keys", a.JWT.Role)
	default:
		return nil, errors.New("log in: no login method configured")
	}
	c, err := i.newClient("")
	if err != nil {
		return nil, err
	}
	sec, err := c.Logical().WriteWithContext(ctx, path, body)
	if err != nil {
		return nil, classify("log in at "+path, err, hint)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, fmt.Errorf("log in at %s: Vault returned no token: %w", path, issuer.ErrRejected)
	}
	tc, err := i.newClient(sec.Auth.ClientToken)
	if err != nil {
		return nil, err
	}
	s := &session{client: tc, login: sec}
	if sec.Auth.LeaseDuration > 0 {
		s.setExpiry(i.cfg.Clock(), time.Duration(sec.Auth.LeaseDuration)*time.Second)
	}
	i.log.Info("logged in to Vault", "path", path, "ttl", time.Duration(sec.Auth.LeaseDuration)*time.Second,
		"renewable", sec.Auth.Renewable, "policies", sec.Auth.Policies)
	return s, nil
}

// Run keeps the broker's own Vault token alive until ctx ends: it logs in
// (AppRole, JWT), renews the token with a vault/api LifetimeWatcher, and
// logs in again when the token can be renewed no further or renewal fails.
// A fixed Config.Auth.Token is renewed if it is renewable and otherwise
// left alone. Run returns nil when ctx ends; failures are logged and
// retried with backoff, never returned, so Vault being down does not stop
// the broker. Without Run, Issue still logs in when it needs to, but the
// token is not renewed.
func (i *Issuer) Run(ctx context.Context) error {
	backoff := runBackoffMin
	pause := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, runBackoffMax)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		s, err := i.session(ctx)
		if err != nil {
			i.log.Warn("Vault login failed; retrying", "error", err, "retry_in", backoff)
			if !pause() {
				break
			}
			continue
		}
		renewed, err := i.keepAlive(ctx, s)
		if ctx.Err() != nil {
			break
		}
		if renewed {
			backoff = runBackoffMin
		}
		if err != nil {
			i.log.Warn("Vault token renewal stopped", "error", err, "retry_in", backoff)
		}
		if i.cfg.Auth.Token == "" {
			// Log in again next time round: the token cannot be
			// renewed any further, or renewing failed.
			i.sess.CompareAndSwap(s, nil)
		}
		if !pause() {
			break
		}
	}
	return nil
}

// keepAlive renews s's token until it can be renewed no further, renewal
// fails, or ctx ends. renewed reports whether at least one renewal worked.
func (i *Issuer) keepAlive(ctx context.Context, s *session) (renewed bool, err error) {
	secret := s.login
	info, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return false, classify("look up the broker's own token", err, "the token may have expired or been revoked")
	}
	ttl, _ := info.TokenTTL()
	period := tokenDuration(info.Data["period"])
	renewable, _ := info.TokenIsRenewable()
	if ttl > 0 && period == 0 && i.cfg.TokenRole == "" {
		i.log.Warn("the broker's Vault token is not periodic: when it ends, Vault revokes every per-lease token created under it, "+
			"and with them the credentials; give the broker's auth role a token_period, or use a token role with orphan=true (Config.TokenRole)",
			"ttl", ttl)
	}
	if ttl <= 0 {
		// A token without expiry (root, or an operator's non-expiring
		// token): nothing to renew.
		<-ctx.Done()
		return false, nil
	}
	if !renewable {
		// Wait until shortly before it ends; then the caller logs in.
		wait := time.Until(i.cfg.Clock().Add(ttl - loginMargin))
		t := time.NewTimer(max(wait, 0))
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		return false, errors.New("the token is not renewable and is about to end")
	}
	if secret == nil { // a fixed token: build the watcher's input
		secret = &vaultapi.Secret{Auth: &vaultapi.SecretAuth{
			ClientToken:   s.client.Token(),
			Renewable:     true,
			LeaseDuration: int(ttl.Seconds()),
		}}
	}
	w, err := s.client.NewLifetimeWatcher(&vaultapi.LifetimeWatcherInput{
		Secret:        secret,
		RenewBehavior: vaultapi.RenewBehaviorErrorOnErrors,
	})
	if err != nil {
		return false, fmt.Errorf("token watcher: %w", err)
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return renewed, nil
		case err := <-w.DoneCh():
			if err != nil {
				return renewed, classify("renew the broker's own token", err, "the token may have been revoked")
			}
			return renewed, errors.New("the token reached its maximum TTL")
		case r := <-w.RenewCh():
			renewed = true
			if r != nil && r.Secret != nil && r.Secret.Auth != nil && r.Secret.Auth.LeaseDuration > 0 {
				s.setExpiry(r.RenewedAt, time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
				i.log.Debug("renewed the broker's Vault token", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
			}
		}
	}
}

// tokenDuration reads a duration Vault returns as seconds (a json.Number
// or a string).
func tokenDuration(v any) time.Duration {
	switch x := v.(type) {
	case json.Number:
		n, _ := x.Int64()
		return time.Duration(n) * time.Second
	case string:
		d, _ := time.ParseDuration(x)
		return d
	case float64:
		return time.Duration(x) * time.Second
	}
	return 0
}

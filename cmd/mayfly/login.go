package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"

	"github.com/mayflyhq/mayfly/broker/devoidc"
	"github.com/mayflyhq/mayfly/cmd/internal/devenv"
)

// tokenFileName is the login cache in the config directory.
const tokenFileName = "token.json"

// expirySlack is how close to its expiry a cached ID token is no longer
// sent: the broker would refuse it on arrival.
const expirySlack = 10 * time.Second

// cachedLogin is what `mayfly login` keeps: an OIDC ID token and where it
// came from. The file is mode 0600 in a 0700 directory; its content is
// never printed or logged.
type cachedLogin struct {
	// Issuer and ClientID are the identity provider and client the token
	// was obtained from; the token's audience is ClientID.
	Issuer   string `json:"issuer"`
	ClientID string `json:"client_id"`
	// User is who the token names, for messages.
	User string `json:"user,omitempty"`
	// Expiry is the token's "exp".
	Expiry time.Time `json:"expiry"`
	// IDToken is the raw ID token, sent as "authorization: Bearer".
	IDToken string `json:"id_token"`
}

// configDir is $XDG_CONFIG_HOME/mayfly, else ~/.config/mayfly.
func configDir() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "mayfly"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home directory for the login cache; set XDG_CONFIG_HOME or use --token-file: %w", err)
	}
	return filepath.Join(home, ".config", "mayfly"), nil
}

// defaultTokenPath is where `mayfly login` caches the token.
func defaultTokenPath() (string, error) {
	dir, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, tokenFileName), nil
}

// devUserTokenPath is where `mayfly --dev --user NAME` caches NAME's token,
// apart from your own login.
func devUserTokenPath(user string) (string, error) {
	dir, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "dev-users", user+".json"), nil
}

// readLogin reads a token file; a missing file is an error wrapping
// fs.ErrNotExist.
func readLogin(path string) (*cachedLogin, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var l cachedLogin
	if err := json.Unmarshal(b, &l); err != nil || l.IDToken == "" {
		return nil, fmt.Errorf("%s is not a token file written by mayfly login; run mayfly login again", path)
	}
	return &l, nil
}

// writeLogin writes l to path (mode 0600) atomically, creating its
// directory with mode 0700 and tightening it if it exists.
func writeLogin(path string, l *cachedLogin) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("login cache: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("login cache: %w", err)
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("login cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("login cache: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("login cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("login cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("login cache: %w", err)
	}
	return nil
}

// usable reports whether the token can still be sent at now.
func (l *cachedLogin) usable(now time.Time) bool {
	return now.Add(expirySlack).Before(l.Expiry)
}

// expiredError is the message for a login that has run out.
func (l *cachedLogin) expiredError() error {
	return fmt.Errorf("your login expired at %s: run mayfly login", l.Expiry.UTC().Format(time.RFC3339))
}

// loginParams says where and how to log in.
type loginParams struct {
	issuer, clientID string
	scopes           []string
	client           *http.Client
	// devUser, when set, approves the device code as this dev user on the
	// dev provider's verification page instead of asking a person.
	devUser string
	// prompt receives the instructions for the person.
	prompt io.Writer
}

// deviceLogin gets an ID token with the device authorization grant (RFC
// 8628) and checks it against the provider's keys before it is cached.
func deviceLogin(ctx context.Context, p loginParams) (*cachedLogin, error) {
	ctx = oidc.ClientContext(ctx, p.client)
	provider, err := oidc.NewProvider(ctx, p.issuer)
	if err != nil {
		return nil, fmt.Errorf("identity provider %s: %w", p.issuer, err)
	}
	endpoint := provider.Endpoint()
	if endpoint.DeviceAuthURL == "" {
		return nil, fmt.Errorf("identity provider %s does not offer the device authorization grant (no device_authorization_endpoint in its discovery document)", p.issuer)
	}
	endpoint.AuthStyle = oauth2.AuthStyleInParams // a public client: client_id in the form, no secret
	conf := &oauth2.Config{ClientID: p.clientID, Endpoint: endpoint, Scopes: p.scopes}
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity provider %s refused to start a login for client %q: %w", p.issuer, p.clientID, oauthError(err))
	}
	if p.devUser != "" {
		if err := devoidc.Approve(ctx, p.client, da.VerificationURI, da.UserCode, p.devUser); err != nil {
			return nil, err
		}
	} else {
		fmt.Fprintf(p.prompt, "To log in, open\n\n  %s\n\nand enter the code\n\n  %s\n\n", da.VerificationURI, da.UserCode)
		if da.VerificationURIComplete != "" {
			fmt.Fprintf(p.prompt, "(or open %s)\n\n", da.VerificationURIComplete)
		}
		if !da.Expiry.IsZero() {
			fmt.Fprintf(p.prompt, "Waiting for you to log in (the code expires at %s)...\n", da.Expiry.Local().Format("15:04:05"))
		} else {
			fmt.Fprintln(p.prompt, "Waiting for you to log in...")
		}
	}
	tok, err := conf.DeviceAccessToken(ctx, da)
	if err != nil {
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.ErrorCode == "access_denied":
			return nil, errors.New("the login was denied")
		case errors.As(err, &re) && re.ErrorCode == "expired_token", errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return nil, errors.New("the code expired before the login was completed: run mayfly login again")
		case ctx.Err() != nil:
			return nil, fmt.Errorf("login abandoned: %w", ctx.Err())
		}
		return nil, fmt.Errorf("identity provider %s: %w", p.issuer, oauthError(err))
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, fmt.Errorf("identity provider %s returned no ID token (is \"openid\" among the scopes?)", p.issuer)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: p.clientID}).Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("the ID token from %s did not verify: %w", p.issuer, err)
	}
	var claims struct {
		Sub               string `json:"sub"`
		PreferredUsername string `json:"preferred_username"`
		Email             string `json:"email"`
	}
	_ = idt.Claims(&claims)
	user := claims.PreferredUsername
	if user == "" {
		user = claims.Email
	}
	if user == "" {
		user = claims.Sub
	}
	return &cachedLogin{Issuer: p.issuer, ClientID: p.clientID, User: user, Expiry: idt.Expiry, IDToken: raw}, nil
}

// oauthError keeps the OAuth error code and description of a refusal
// (never a response body that might echo a secret).
func oauthError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.ErrorCode != "" {
		if re.ErrorDescription != "" {
			return fmt.Errorf("%s: %s", re.ErrorCode, re.ErrorDescription)
		}
		return errors.New(re.ErrorCode)
	}
	if errors.As(err, &re) && re.Response != nil {
		return fmt.Errorf("HTTP %s", re.Response.Status)
	}
	return err
}

// httpClientTrusting returns an HTTP client that trusts the PEM CA
// certificates in file, or the system's roots when file is empty.
func httpClientTrusting(file string) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if file != "" {
		pemBytes, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("%s holds no PEM certificate", file)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, Timeout: 30 * time.Second}, nil
}

// devUserRE is the dev provider's rule for user names.
var devUserRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,62}$`)

// devOIDC returns the dev broker's client file, checking that it runs a
// dev OIDC provider, and an HTTP client that trusts it.
func (g *globals) devOIDC() (*devenv.Client, *http.Client, error) {
	c, err := g.devClient()
	if err != nil {
		return nil, nil, err
	}
	if c.OIDCIssuer == "" || c.OIDCClientID == "" {
		return nil, nil, errors.New("the dev broker publishes no OIDC provider (oidc_issuer in its client.json): restart it with a mayflyd that has one")
	}
	client, err := httpClientTrusting(c.Bundle)
	if err != nil {
		return nil, nil, fmt.Errorf("dev trust bundle: %w", err)
	}
	return c, client, nil
}

// devUserLogin returns a token for dev user name: the cached one while it
// lasts, else a new one from the dev provider, without a person (dev only).
func (g *globals) devUserLogin(ctx context.Context, name string) (*cachedLogin, error) {
	if !devUserRE.MatchString(name) {
		return nil, fmt.Errorf("--user %q: dev user names are lower-case letters, digits, '.', '_' or '-', starting with a letter", name)
	}
	c, client, err := g.devOIDC()
	if err != nil {
		return nil, err
	}
	path, err := devUserTokenPath(name)
	if err != nil {
		return nil, err
	}
	if l, err := readLogin(path); err == nil && l.Issuer == c.OIDCIssuer && l.ClientID == c.OIDCClientID && l.usable(time.Now().Add(time.Minute)) {
		return l, nil
	}
	l, err := deviceLogin(ctx, loginParams{issuer: c.OIDCIssuer, clientID: c.OIDCClientID, scopes: defaultScopes, client: client, devUser: name})
	if err != nil {
		return nil, fmt.Errorf("dev login as %s: %w", name, err)
	}
	if err := writeLogin(path, l); err != nil {
		return nil, err
	}
	return l, nil
}

// defaultScopes are asked for at login: the ID token, and the profile and
// email claims that name the user.
var defaultScopes = []string{oidc.ScopeOpenID, "profile", "email"}

func newLogin(g *globals) *cobra.Command {
	var (
		issuer, clientID, issuerCA string
		scopes                     []string
	)
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in with your organisation's identity provider (OIDC device flow)",
		Long: `login gets an OIDC ID token from your identity provider with the device
authorization grant: it shows a URL and a code, you open the URL in any
browser and enter the code, and login caches the token in
$XDG_CONFIG_HOME/mayfly/token.json (~/.config/mayfly/token.json; mode 0600).
Later commands given no --cert/--key, --socket or --dev send it to the
broker as a bearer token over TLS (--addr, --broker-id and --bundle say
where the broker is and how to trust it).

With --dev, login uses the OIDC provider of the local dev broker; with
--dev --user NAME it logs in as that dev user without asking (dev only).`,
		Example: `  mayfly login --issuer https://login.example.org --client-id mayfly
  mayfly login --dev
  mayfly login --dev --user alice`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := g.tokenFile
			if path == "" {
				var err error
				if path, err = defaultTokenPath(); err != nil {
					return err
				}
			}
			p := loginParams{issuer: issuer, clientID: clientID, scopes: scopes, prompt: g.stderr}
			switch {
			case g.dev:
				if issuer != "" || clientID != "" {
					return errors.New("--dev uses the dev broker's OIDC provider: leave out --issuer and --client-id")
				}
				c, client, err := g.devOIDC()
				if err != nil {
					return err
				}
				p.issuer, p.clientID, p.client, p.devUser = c.OIDCIssuer, c.OIDCClientID, client, g.user
			case g.user != "":
				return errors.New("--user needs --dev: dev users exist only in the dev broker's OIDC provider")
			case issuer == "" || clientID == "":
				return errors.New("--issuer and --client-id are required (or --dev for the local dev broker)")
			default:
				client, err := httpClientTrusting(issuerCA)
				if err != nil {
					return fmt.Errorf("--issuer-ca: %w", err)
				}
				p.client = client
			}
			l, err := deviceLogin(cmd.Context(), p)
			if err != nil {
				return err
			}
			if err := writeLogin(path, l); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "Logged in as %s at %s until %s (token cached in %s)\n", l.User, l.Issuer, l.Expiry.Local().Format(time.RFC3339), path)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&issuer, "issuer", os.Getenv("MAYFLY_OIDC_ISSUER"), "your identity provider's issuer URL (env MAYFLY_OIDC_ISSUER)")
	f.StringVar(&clientID, "client-id", os.Getenv("MAYFLY_OIDC_CLIENT_ID"), "the OIDC client ID of the Mayfly CLI at your provider; the broker's audience (env MAYFLY_OIDC_CLIENT_ID)")
	f.StringVar(&issuerCA, "issuer-ca", "", "PEM CA certificates to trust for the identity provider (default: the system's)")
	f.StringSliceVar(&scopes, "scope", defaultScopes, "scopes to ask for")
	return cmd
}

func newLogout(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Forget the token that mayfly login cached (and the dev users' tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var paths []string
			if g.tokenFile != "" {
				paths = append(paths, g.tokenFile)
			} else {
				path, err := defaultTokenPath()
				if err != nil {
					return err
				}
				dir, _ := configDir()
				devTokens, _ := filepath.Glob(filepath.Join(dir, "dev-users", "*.json"))
				paths = append([]string{path}, devTokens...)
			}
			removed := 0
			for _, p := range paths {
				err := os.Remove(p)
				switch {
				case err == nil:
					removed++
					fmt.Fprintf(g.stdout, "Removed %s\n", p)
				case !errors.Is(err, fs.ErrNotExist):
					return err
				}
			}
			if removed == 0 {
				fmt.Fprintln(g.stdout, "Not logged in.")
			}
			return nil
		},
	}
}

package vault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/vault"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// Vault policies the fixture writes.
const (
	// brokerPolicy is what the broker's own token needs (see doc.go).
	brokerPolicy = `
path "auth/token/create"          { capabilities = ["update"] }
path "auth/token/create/mayfly"   { capabilities = ["update"] }
path "auth/token/renew-accessor"  { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
path "sys/leases/renew"           { capabilities = ["update"] }
path "sys/leases/revoke"          { capabilities = ["update"] }
path "auth/token/lookup-self"     { capabilities = ["read"] }
path "auth/token/renew-self"      { capabilities = ["update"] }
`
	ordersROPolicy = `path "database/creds/orders-ro" { capabilities = ["read"] }`
	// orders15mPolicy reads the role whose default TTL is the
	// entitlement's ttl (15m).
	orders15mPolicy = `path "database/creds/orders-15m" { capabilities = ["read"] }`
	// ordersAnyPolicy allows every role of the engine, existing or not.
	ordersAnyPolicy = `path "database/creds/*" { capabilities = ["read"] }`
	kvReadPolicy    = `path "secret/data/app" { capabilities = ["read"] }`
	// unrelatedPolicy allows nothing the tests read: a permission error.
	unrelatedPolicy = `path "secret/data/elsewhere" { capabilities = ["read"] }`
)

// fixture is a real PostgreSQL with an orders table and a real Vault dev
// server whose database secrets engine makes roles on it.
type fixture struct {
	pg *testenv.PostgresServer
	v  *testenv.VaultServer
	// brokerToken is a non-root token with brokerPolicy and the policies it
	// grants to per-lease tokens (no token role needed).
	brokerToken string
	// roleToken is a non-root token with brokerPolicy only, not even the
	// default policy (as doc.go recommends); it creates per-lease tokens
	// through the token role "mayfly".
	roleToken string

	mu    sync.Mutex
	super *pgx.Conn // superuser connection for checks
}

// newFixture starts PostgreSQL and Vault and configures:
//
//   - table orders (2 rows) in database postgres;
//   - the database engine at database/ with connection pg and role
//     orders-ro (SELECT on orders, default_ttl 1h, max_ttl 24h);
//   - policies orders-ro, orders-any, kv-read, unrelated and mayfly-broker;
//   - the token role mayfly (allowed_policies: those but mayfly-broker);
//   - a KV secret at secret/app (no lease);
//   - two broker tokens (brokerToken, roleToken).
func newFixture(t testing.TB) *fixture {
	t.Helper()
	pg := testenv.Postgres(t)
	v := testenv.Vault(t)
	f := &fixture{pg: pg, v: v}
	// Credentials join the group role orders_reader rather than get their
	// own GRANT: concurrent GRANT/REVOKE on one table fail with "tuple
	// concurrently updated" in PostgreSQL, membership rows do not clash.
	if _, err := pg.Psql(`CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL);
		INSERT INTO orders VALUES (1, 'tea'), (2, 'cake');
		CREATE ROLE orders_reader NOLOGIN;
		GRANT SELECT ON orders TO orders_reader`); err != nil {
		t.Fatal(err)
	}
	c := v.Client
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("configure Vault: %s: %v", what, err)
		}
	}
	must("mount database", c.Sys().Mount("database", &vaultapi.MountInput{Type: "database"}))
	_, err := c.Logical().Write("database/config/pg", map[string]any{
		"plugin_name":          "postgresql-database-plugin",
		"connection_url":       fmt.Sprintf("postgresql://{{username}}:{{password}}@%s/postgres?sslmode=disable", pg.Addr()),
		"username":             pg.User,
		"password":             pg.Password,
		"allowed_roles":        "*",
		"max_open_connections": 16,
		"verify_connection":    true,
	})
	must("database/config/pg", err)
	f.writeRole(t, "orders-ro", "1h", "24h")
	f.writeRole(t, "orders-15m", "15m", "24h")
	for name, rules := range map[string]string{
		"mayfly-broker": brokerPolicy,
		"orders-ro":     ordersROPolicy,
		"orders-15m":    orders15mPolicy,
		"orders-any":    ordersAnyPolicy,
		"kv-read":       kvReadPolicy,
		"unrelated":     unrelatedPolicy,
	} {
		must("policy "+name, c.Sys().PutPolicy(name, rules))
	}
	_, err = c.Logical().Write("auth/token/roles/mayfly", map[string]any{
		"allowed_policies": "orders-ro,orders-15m,orders-any,kv-read,unrelated",
		"orphan":           false,
		"renewable":        true,
	})
	must("token role mayfly", err)
	_, err = c.KVv2("secret").Put(context.Background(), "app", map[string]any{"api_key": "kv-secret-value"})
	must("kv secret/app", err)

	tok, err := c.Auth().Token().Create(&vaultapi.TokenCreateRequest{
		Policies: []string{"mayfly-broker", "orders-ro", "orders-15m", "kv-read", "unrelated"}, Period: "1h", DisplayName: "broker",
	})
	must("broker token", err)
	f.brokerToken = tok.Auth.ClientToken
	tok, err = c.Auth().Token().Create(&vaultapi.TokenCreateRequest{
		Policies: []string{"mayfly-broker"}, Period: "1h", DisplayName: "broker-role", NoDefaultPolicy: true,
	})
	must("role broker token", err)
	f.roleToken = tok.Auth.ClientToken

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if f.super, err = pgx.Connect(ctx, pg.DSN()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.super.Close(context.Background()) })
	return f
}

// writeRole creates (or replaces) a database role whose credentials are
// members of orders_reader (SELECT on orders). Sessions of a revoked role
// are ended, then the role is dropped.
func (f *fixture) writeRole(t testing.TB, name, defaultTTL, maxTTL string) {
	t.Helper()
	_, err := f.v.Client.Logical().Write("database/roles/"+name, map[string]any{
		"db_name": "pg",
		"creation_statements": []string{
			`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE orders_reader;`,
		},
		"revocation_statements": []string{
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';`,
			`DROP ROLE IF EXISTS "{{name}}";`,
		},
		"default_ttl": defaultTTL,
		"max_ttl":     maxTTL,
	})
	if err != nil {
		t.Fatalf("configure Vault: database/roles/%s: %v", name, err)
	}
}

// cfg is an issuer configuration against the fixture's Vault with the
// given broker token; logs go to w (io.Discard when nil).
func (f *fixture) cfg(token string, w io.Writer) vault.Config {
	if w == nil {
		w = io.Discard
	}
	return vault.Config{
		Address:        f.v.Addr,
		Auth:           vault.Auth{Token: token},
		RequestTimeout: 5 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (f *fixture) issuer(t testing.TB, cfg vault.Config) *vault.Issuer {
	t.Helper()
	iss, err := vault.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// canSelect logs in as the credential and reads the orders table.
func (f *fixture) canSelect(ctx context.Context, user, password string) error {
	conn, err := pgx.Connect(ctx, f.pg.DSNFor(user, password))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil {
		return err
	}
	if n != 2 {
		return fmt.Errorf("orders has %d rows, want 2", n)
	}
	return nil
}

// roleExists reports whether pg_roles has the role.
func (f *fixture) roleExists(t testing.TB, role string) bool {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := f.super.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", role).Scan(&n); err != nil {
		t.Fatalf("query pg_roles: %v", err)
	}
	return n > 0
}

// vaultRoles returns the database roles Vault created that still exist.
func (f *fixture) vaultRoles(t testing.TB) map[string]bool {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := f.super.Query(ctx, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'")
	if err != nil {
		t.Fatalf("query pg_roles: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("query pg_roles: %v", err)
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out
}

// verify fails t unless the credential logs in to PostgreSQL and reads.
func (f *fixture) verify(t *testing.T, c *issuer.Credential) {
	t.Helper()
	if c.Kind != issuer.KindUsernamePassword {
		t.Fatalf("credential kind %q, want %q", c.Kind, issuer.KindUsernamePassword)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.canSelect(ctx, c.Username, c.Password); err != nil {
		t.Fatalf("the credential does not work at PostgreSQL: %v", err)
	}
}

// revoked reports whether the role is gone and a new login fails.
func (f *fixture) revoked(t *testing.T, user, password string) bool {
	t.Helper()
	if f.roleExists(t, user) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.canSelect(ctx, user, password); err == nil {
		t.Errorf("role %s is not in pg_roles but still logs in", user)
		return false
	}
	return true
}

// vaultLease looks a Vault lease up with the root token (nil if gone).
func (f *fixture) vaultLease(t testing.TB, leaseID string) *vaultapi.Secret {
	t.Helper()
	s, err := f.v.Client.Sys().Lookup(leaseID)
	if err != nil {
		var re *vaultapi.ResponseError
		if errors.As(err, &re) && re.StatusCode == 400 {
			return nil
		}
		t.Fatalf("lookup Vault lease: %v", err)
	}
	return s
}

// tokenAlive looks the per-lease token up by accessor with the root token.
func (f *fixture) tokenAlive(t testing.TB, accessor string) bool {
	t.Helper()
	_, err := f.v.Client.Auth().Token().LookupAccessor(accessor)
	if err == nil {
		return true
	}
	var re *vaultapi.ResponseError
	if errors.As(err, &re) && re.StatusCode == 400 {
		return false
	}
	t.Fatalf("lookup accessor: %v", err)
	return false
}

// pendingLease is a lease as the broker writes it before calling Issue.
func pendingLease(ent string, ttl time.Duration) *lease.Lease {
	now := time.Now().Truncate(time.Second)
	return &lease.Lease{
		ID: lease.NewID(now), Subject: "spiffe://mayfly.test/workload/orders", Entitlement: ent,
		GrantID: "grant-test", Issuer: "vault", State: lease.StatePending,
		IssuedAt: now, ExpiresAt: now.Add(ttl), HardEnd: now.Add(4 * ttl), DueAt: now.Add(30 * time.Second),
		Renewable: true, Revocable: true,
	}
}

// bindTo returns a Bind that records the ref in *ref.
func bindTo(ref *string) func(context.Context, string) error {
	var mu sync.Mutex
	return func(_ context.Context, r string) error {
		mu.Lock()
		defer mu.Unlock()
		*ref = r
		return nil
	}
}

// params decodes an entitlement's vault section or fails t.
func params(t testing.TB, text string) vault.Params {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	p, err := vault.DecodeParams(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// proxy is a TCP proxy in front of Vault that a test can cut (connections
// refused and the open ones closed) and restore, to make Vault unreachable
// without losing its state.
type proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	p := &proxy{target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

// URL is the proxy's http URL.
func (p *proxy) URL() string { return "http://" + p.addr }

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *proxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // cut meanwhile
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// cut closes the listener and every open connection: Vault is unreachable.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// restore listens again on the same address.
func (p *proxy) restore(t testing.TB) {
	t.Helper()
	var (
		ln  net.Listener
		err error
	)
	for range 50 { // the port may linger briefly
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
}

// noSecrets fails t if any of secrets appears in text.
func noSecrets(t *testing.T, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) >= 4 && strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%.4s...)", where, s)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
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

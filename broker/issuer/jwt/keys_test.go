package jwt

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mayflyhq/mayfly/broker/issuer"
)

func jwksKids(t *testing.T, e *env) []string {
	t.Helper()
	_, body := e.get(t, JWKSPath)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}

func pemFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestRotation(t *testing.T) {
	for _, alg := range []string{ES256, RS256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			clk := newFakeClock()
			dir := filepath.Join(t.TempDir(), "keys")
			retain := 2 * time.Hour
			e := newEnv(t, Config{Algorithm: alg, KeyDir: dir, Retain: retain, Clock: clk.Now})
			oldKid := e.iss.Keys()[0].KID

			// A token signed with the first key, living as long as Retain allows.
			l := testLease(clk.Now(), retain)
			old := e.issue(t, l, testParams)

			clk.Advance(time.Hour)
			if err := e.iss.Rotate(); err != nil {
				t.Fatalf("Rotate: %v", err)
			}
			keys := e.iss.Keys()
			if len(keys) != 2 || !keys[0].Active || keys[1].KID != oldKid || !keys[1].Retired.Equal(keys[0].Created) {
				t.Fatalf("keys after rotation %+v", keys)
			}
			if got := jwksKids(t, e); !slices.Equal(got, []string{keys[0].KID, oldKid}) {
				t.Errorf("JWKS kids %v; want new then old", got)
			}
			if len(pemFiles(t, dir)) != 2 {
				t.Errorf("key files %v; want 2", pemFiles(t, dir))
			}

			// New tokens use the new key; the old token still verifies.
			fresh := e.issue(t, testLease(clk.Now(), time.Minute), testParams)
			if kid := headerKid(t, fresh.Token); kid != keys[0].KID {
				t.Errorf("new token kid %s; want %s", kid, keys[0].KID)
			}
			if _, err := e.iss.Verify(old.Token); err != nil {
				t.Errorf("old token after rotation: %v", err)
			}

			// Retain after retirement (plus the slack) the old key goes,
			// from the JWKS and from disk; by then the old token had expired.
			clk.Advance(retain + pruneSlack - time.Second)
			e.iss.tick()
			if n := len(e.iss.Keys()); n != 2 {
				t.Fatalf("old key pruned early: %d keys", n)
			}
			clk.Advance(time.Second)
			e.iss.tick()
			if got := jwksKids(t, e); !slices.Equal(got, []string{keys[0].KID}) {
				t.Errorf("JWKS kids after Retain %v; want only %s", got, keys[0].KID)
			}
			files := pemFiles(t, dir)
			if len(files) != 1 || !strings.HasSuffix(files[0], "_"+keys[0].KID+".pem") {
				t.Errorf("key files after prune %v", files)
			}
			if _, err := e.iss.Verify(old.Token); err == nil {
				t.Error("token of a pruned key still verifies")
			}
		})
	}
}

func headerKid(t *testing.T, token string) string {
	t.Helper()
	var hdr map[string]any
	decodeSegment(t, strings.Split(token, ".")[0], &hdr)
	kid, _ := hdr["kid"].(string)
	return kid
}

func TestKeyDirRestart(t *testing.T) {
	clk := newFakeClock()
	dir := filepath.Join(t.TempDir(), "keys")
	cfg := Config{IssuerURL: "https://mayfly.example.com", KeyDir: dir, Clock: clk.Now, Retain: 3 * time.Hour}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := testLease(clk.Now(), time.Hour)
	tok, err := a.Issue(context.Background(), issuer.Request{Lease: l, Params: testParams})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	before := a.Keys()

	// Modes: directory 0700, files 0600.
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("KeyDir mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	for _, f := range pemFiles(t, dir) {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v; want 0600", f, fi.Mode().Perm())
		}
		data, _ := os.ReadFile(f)
		if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----\n") {
			t.Errorf("%s is not PKCS#8 PEM", f)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("KeyDir holds %d entries; want the 2 key files only", len(entries))
	}

	// A restart loads both keys with the same kids, times and roles.
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	after := b.Keys()
	if len(after) != 2 {
		t.Fatalf("after restart %d keys", len(after))
	}
	for n := range after {
		if after[n].KID != before[n].KID || !after[n].Created.Equal(before[n].Created) ||
			!after[n].Retired.Equal(before[n].Retired) || after[n].Active != before[n].Active {
			t.Errorf("key %d before %+v after %+v", n, before[n], after[n])
		}
	}
	if _, err := b.Verify(tok.Token); err != nil {
		t.Errorf("token from before the restart: %v", err)
	}
	if string(b.keys.Load().jwks) != string(a.keys.Load().jwks) {
		t.Error("JWKS changed across a restart")
	}

	// Restarted after Retain: the retired key is pruned at start.
	clk.Advance(3*time.Hour + pruneSlack)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if keys := c.Keys(); len(keys) != 1 || keys[0].KID != before[0].KID {
		t.Errorf("after Retain, restart keeps %+v; want only %s", keys, before[0].KID)
	}
	if files := pemFiles(t, dir); len(files) != 1 {
		t.Errorf("files %v; want 1", files)
	}

	// A new algorithm: a key of it becomes active, the old stays published.
	cfg.Algorithm = EdDSA
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if keys := d.Keys(); len(keys) != 2 || keys[0].Algorithm != EdDSA || keys[1].Algorithm != ES256 {
		t.Errorf("after switching to EdDSA: %+v", keys)
	}
	if got := d.keys.Load().algs; !slices.Equal(got, []string{ES256, EdDSA}) {
		t.Errorf("published algs %v", got)
	}
}

func TestKeyDirChecks(t *testing.T) {
	newDir := func(t *testing.T) (string, Config) {
		dir := filepath.Join(t.TempDir(), "keys")
		cfg := Config{IssuerURL: "https://mayfly.example.com", KeyDir: dir}
		if _, err := New(cfg); err != nil {
			t.Fatal(err)
		}
		return dir, cfg
	}

	t.Run("loose directory is tightened", func(t *testing.T) {
		dir, cfg := newDir(t)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
			t.Errorf("mode %v; want 0700", fi.Mode().Perm())
		}
	})
	t.Run("readable key file", func(t *testing.T) {
		dir, cfg := newDir(t)
		f := pemFiles(t, dir)[0]
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := New(cfg)
		if want := "jwt: key file " + f + " has mode 0644; want 0600"; err == nil || err.Error() != want {
			t.Errorf("New: %v; want %q", err, want)
		}
	})
	t.Run("kid does not match", func(t *testing.T) {
		dir, cfg := newDir(t)
		f := pemFiles(t, dir)[0]
		bad := filepath.Join(dir, strings.SplitN(filepath.Base(f), "_", 2)[0]+"_wrongkid.pem")
		if err := os.Rename(f, bad); err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "kid in the name does not match the key") {
			t.Errorf("New: %v", err)
		}
	})
	t.Run("bad name", func(t *testing.T) {
		dir, cfg := newDir(t)
		if err := os.WriteFile(filepath.Join(dir, "extra.pem"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "name is not <") {
			t.Errorf("New: %v", err)
		}
	})
	t.Run("not PEM", func(t *testing.T) {
		dir, cfg := newDir(t)
		f := pemFiles(t, dir)[0]
		if err := os.WriteFile(f, []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "want exactly one PKCS#8 PRIVATE KEY PEM block") {
			t.Errorf("New: %v", err)
		}
	})
	t.Run("leftover temporary file is ignored", func(t *testing.T) {
		dir, cfg := newDir(t)
		if err := os.WriteFile(filepath.Join(dir, ".key-123.tmp"), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg); err != nil {
			t.Errorf("New: %v", err)
		}
	})
	t.Run("KeyDir is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o600)
		_, err := New(Config{IssuerURL: "https://mayfly.example.com", KeyDir: f})
		if err == nil || !strings.HasPrefix(err.Error(), "jwt: Config.KeyDir") {
			t.Errorf("New: %v", err)
		}
	})
}

func TestRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	iss, err := New(Config{IssuerURL: "https://mayfly.example.com", KeyDir: dir, RotateEvery: time.Second, Retain: time.Hour, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	first := iss.Keys()[0].KID
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- iss.Run(ctx) }()

	deadline := time.Now().Add(5 * time.Second)
	for len(iss.Keys()) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	keys := iss.Keys()
	if len(keys) < 2 || keys[0].KID == first || keys[len(keys)-1].KID != first {
		t.Errorf("Run did not rotate within 5s: %+v", keys)
	}
	if len(pemFiles(t, dir)) != len(keys) {
		t.Errorf("files %v for %d keys", pemFiles(t, dir), len(keys))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v; want nil on ctx end", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
}

func TestRunWakesOnRotate(t *testing.T) {
	// With no schedule, Run still prunes keys retired by a manual Rotate.
	iss, err := New(Config{IssuerURL: "https://mayfly.example.com", Retain: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	iss.cfg.Retain = -pruneSlack + 50*time.Millisecond // test only: prune 50ms after retirement
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go iss.Run(ctx)
	time.Sleep(20 * time.Millisecond)
	if err := iss.Rotate(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(iss.Keys()) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(iss.Keys()); n != 1 {
		t.Errorf("retired key not pruned by Run: %d keys", n)
	}
}

func TestSignWhileRotating(t *testing.T) {
	// Run with -race: signers read the active key while Rotate replaces it,
	// and every token verifies.
	e := newEnv(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := e.iss.Rotate(); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	var signers sync.WaitGroup
	for range 4 {
		signers.Go(func() {
			for range 50 {
				c, err := e.iss.Issue(context.Background(), issuer.Request{Lease: testLease(time.Now(), time.Minute), Params: testParams})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := e.iss.Verify(c.Token); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	signers.Wait()
	cancel()
	wg.Wait()
}

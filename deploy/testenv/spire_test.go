package testenv

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// The SPIRE environment itself: a registered workload gets its X.509- and
// JWT-SVIDs from the agent, per-entry TTLs apply, a deleted entry's SVID
// goes away, and authorities can be prepared.
func TestSPIRE(t *testing.T) {
	start := time.Now()
	s := SPIRE(t, SPIREOptions{TrustDomain: "spire-env.test", X509SVIDTTL: 10 * time.Minute})
	t.Logf("SPIRE %s up in %v (binaries built in this process in %v)", SPIREVersion, time.Since(start).Round(time.Millisecond), spireBuildTime.Round(time.Second))
	if !strings.HasPrefix(s.AgentID.String(), "spiffe://spire-env.test/spire/agent/join_token/") {
		t.Errorf("agent ID %s", s.AgentID)
	}
	for _, p := range []string{s.Dir, s.SocketPath} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o005 != 0o005 && fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s mode %v: other uids cannot reach the agent socket", p, fi.Mode())
		}
	}

	id := "spiffe://spire-env.test/workload/a"
	entry := s.RegisterEntry(t, SPIREEntry{SPIFFEID: id, Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid())}, X509SVIDTTL: 2 * time.Minute})
	svid := s.WaitX509SVID(t, id)
	if life := svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore); life > 2*time.Minute+time.Minute {
		t.Errorf("SVID lifetime %v, want the entry's 2m (plus backdating)", life)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, s.Bundle(t)); err != nil {
		t.Errorf("SVID does not verify against `bundle show`: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "test-audience"}, workloadapi.WithAddr(s.SocketAddr()))
	if err != nil {
		t.Fatal(err)
	}
	if jwt.ID.String() != id || jwt.Audience[0] != "test-audience" {
		t.Errorf("JWT-SVID %s for %v", jwt.ID, jwt.Audience)
	}

	active, prepared, _ := s.X509Authorities(t)
	if active.AuthorityID == "" || prepared.AuthorityID != "" {
		t.Errorf("authorities before prepare: active %+v, prepared %+v", active, prepared)
	}
	next := s.PrepareX509Authority(t)
	if _, prepared, _ := s.X509Authorities(t); prepared.AuthorityID != next {
		t.Errorf("prepared authority %q, want %q", prepared.AuthorityID, next)
	}
	if n := len(s.Bundle(t).X509Authorities()); n != 2 {
		t.Errorf("%d authorities in the bundle after prepare, want 2", n)
	}

	s.DeleteEntry(t, entry)
	deadline := time.Now().Add(20 * time.Second)
	for {
		fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr(s.SocketAddr()))
		fcancel()
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the SVID of a deleted entry is still served")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBinaryCommand runs the test binary as another uid.
func TestTestBinaryCommand(t *testing.T) {
	if os.Getenv("MAYFLY_TESTENV_HELPER") != "" {
		return
	}
	cmd := TestBinaryCommand(t, &syscall.Credential{Uid: 64701, Gid: 64701}, "^TestTestBinaryCommandHelper$", "MAYFLY_TESTENV_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "uid=64701 gid=64701") {
		t.Errorf("helper output:\n%s", out)
	}
}

func TestTestBinaryCommandHelper(t *testing.T) {
	if os.Getenv("MAYFLY_TESTENV_HELPER") == "" {
		return
	}
	t.Logf("uid=%d gid=%d", os.Getuid(), os.Getgid())
}

package testenv_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/deploy/testenv"
)

func TestVault(t *testing.T) {
	v := testenv.Vault(t)
	if v.RootToken == "" || v.Client == nil {
		t.Fatalf("VaultServer = %+v", v)
	}
	// The root token works and the dev server has KV at secret/.
	if _, err := v.Client.KVv2("secret").Put(context.Background(), "x", map[string]any{"k": "v"}); err != nil {
		t.Fatalf("write a KV secret: %v", err)
	}

	// Pause freezes the server with its state; requests time out.
	v.Pause()
	c, err := v.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(v.RootToken)
	c.SetClientTimeout(500 * time.Millisecond)
	if _, err := c.KVv2("secret").Get(context.Background(), "x"); err == nil {
		t.Fatal("a paused Vault answered")
	}
	v.Resume()
	s, err := v.Client.KVv2("secret").Get(context.Background(), "x")
	if err != nil || s.Data["k"] != "v" {
		t.Fatalf("after Resume: %v, %v; want the secret written before the pause", s, err)
	}

	// Stop and Start: same address and root token, fresh state.
	v.Stop()
	if resp, err := http.Get(v.Addr + "/v1/sys/health"); err == nil {
		resp.Body.Close()
		t.Fatal("a stopped Vault answered")
	}
	v.Start()
	if _, err := v.Client.KVv2("secret").Get(context.Background(), "x"); err == nil {
		t.Fatal("a restarted dev server still has the old secret")
	}
	if _, err := v.Client.Auth().Token().LookupSelf(); err != nil {
		t.Fatalf("the root token after Start: %v", err)
	}
}

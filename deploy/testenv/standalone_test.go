package testenv

import (
	"os"
	"testing"
)

// TestNewRedisServer: the constructor for programs without a testing.TB
// starts a server that answers, and Close stops it and removes its
// directory.
func TestNewRedisServer(t *testing.T) {
	RequireRedis(t)
	s, err := NewRedisServer(RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if reply, err := s.Do("PING"); err != nil || reply != "PONG" {
		t.Fatalf("PING: %q %v", reply, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Error("still running after Close")
	}
	if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
		t.Errorf("directory %s left behind: %v", s.Dir(), err)
	}
	if _, err := NewRedisServer(RedisConfig{ReplicaOf: "no-port"}); err == nil {
		t.Error("a ReplicaOf without a port was accepted")
	}
}

// TestNewVaultServer: the same for Vault.
func TestNewVaultServer(t *testing.T) {
	RequireVault(t)
	v, err := NewVaultServer(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if v.Pid() == 0 {
		t.Error("no pid while running")
	}
	sec, err := v.Client.Auth().Token().Create(nil)
	if err != nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		t.Fatalf("token create: %v %+v", err, sec)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if v.Running() || v.Pid() != 0 {
		t.Error("still running after Close")
	}
	if _, err := os.Stat(v.Dir()); !os.IsNotExist(err) {
		t.Errorf("directory %s left behind: %v", v.Dir(), err)
	}
}

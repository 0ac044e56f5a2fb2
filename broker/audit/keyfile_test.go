package audit_test

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"

	"github.com/mayflyhq/mayfly/broker/audit"
)

func TestSigningKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "audit-key.pem")
	s1, err := audit.LoadOrCreateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	pubs, err := audit.LoadPublicKeys(path + ".pub")
	if err != nil || len(pubs) != 1 || !pubs[0].(ed25519.PublicKey).Equal(s1.Public()) {
		t.Fatalf("public key file: %v, %v", pubs, err)
	}
	// Loaded again: the same key; the private key file also yields it.
	s2, err := audit.LoadOrCreateSigningKey(path)
	if err != nil || !s2.Public().(ed25519.PublicKey).Equal(s1.Public()) {
		t.Fatalf("reload: %v", err)
	}
	if pubs, err := audit.LoadPublicKeys(path); err != nil || !pubs[0].(ed25519.PublicKey).Equal(s1.Public()) {
		t.Fatalf("public key from the private key file: %v", err)
	}
	// An existing key whose .pub cannot be written (a read-only mount;
	// here a directory in its place, which even root cannot write as a
	// file) still loads.
	if err := os.Remove(path + ".pub"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path+".pub", 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.LoadOrCreateSigningKey(path); err != nil {
		t.Fatalf("key whose .pub cannot be written: %v", err)
	}
	// Garbage is refused with the path named.
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.LoadOrCreateSigningKey(bad); err == nil {
		t.Fatal("garbage accepted as a key")
	}
}

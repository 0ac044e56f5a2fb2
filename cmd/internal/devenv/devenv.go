// Package devenv is the contract between `mayflyd dev` and the clients that
// use its local trust domain (`mayfly --dev`, examples): where the state
// directory is and what the client file in it says.
package devenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// TrustDomain is the dev trust domain (.test is reserved, never routable).
const TrustDomain = "mayfly.test"

// Well-known dev identities.
const (
	BrokerID   = "spiffe://" + TrustDomain + "/mayfly"
	WorkloadID = "spiffe://" + TrustDomain + "/workload/demo"
	CLIID      = "spiffe://" + TrustDomain + "/cli/dev"
)

// ClientFile is the name of the file in the state directory that tells
// clients how to reach the dev broker.
const ClientFile = "client.json"

// Identity is an X.509-SVID on disk.
type Identity struct {
	SPIFFEID string `json:"spiffe_id"`
	Cert     string `json:"cert"`
	Key      string `json:"key"`
}

// Client says how to reach and trust the dev broker.
type Client struct {
	// Addr is the broker's gRPC address.
	Addr string `json:"addr"`
	// HTTPURL is the broker's HTTPS base (discovery, JWKS, introspection).
	HTTPURL string `json:"http_url"`
	// BrokerID is the broker's SPIFFE ID.
	BrokerID string `json:"broker_id"`
	// Bundle is the dev trust bundle (PEM).
	Bundle string `json:"bundle"`
	// CLI and Workload are the dev identities clients may use.
	CLI      Identity `json:"cli"`
	Workload Identity `json:"workload"`
	// Policy is the policy file the dev broker watches.
	Policy string `json:"policy"`
	// OIDCIssuer is the issuer URL of the dev OIDC provider (broker/devoidc,
	// served on the broker's HTTPS listener under devoidc.DefaultPath, so
	// Bundle verifies it): `mayfly login --dev` and `mayfly --dev --user
	// NAME` sign in there. Empty when the dev broker runs none.
	OIDCIssuer string `json:"oidc_issuer,omitempty"`
	// OIDCClientID is the dev OIDC provider's public client ID, the
	// audience of its ID tokens.
	OIDCClientID string `json:"oidc_client_id,omitempty"`
	// Audit is the dev broker's audit trail (JSONL) and AuditKey the
	// public key its checkpoints verify with: `mayfly --dev audit verify`
	// reads both.
	Audit    string `json:"audit,omitempty"`
	AuditKey string `json:"audit_key,omitempty"`
}

// DefaultDir is the dev state directory: $MAYFLY_DEV_DIR, else
// $XDG_STATE_HOME/mayfly/dev, else ~/.local/state/mayfly/dev.
func DefaultDir() (string, error) {
	if d := os.Getenv("MAYFLY_DEV_DIR"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "mayfly", "dev"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("devenv: no home directory; set MAYFLY_DEV_DIR: %w", err)
	}
	return filepath.Join(home, ".local", "state", "mayfly", "dev"), nil
}

// Save writes c into dir (mode 0600).
func Save(dir string, c *Client) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	tmp := filepath.Join(dir, ClientFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, ClientFile)); err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	return nil
}

// Load reads the client file from dir.
func Load(dir string) (*Client, error) {
	b, err := os.ReadFile(filepath.Join(dir, ClientFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("devenv: no dev broker state in %s: start one with `mayflyd dev` (or `go run ./cmd/mayflyd dev`)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	var c Client
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("devenv: %s: %w", filepath.Join(dir, ClientFile), err)
	}
	return &c, nil
}

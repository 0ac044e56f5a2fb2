package main

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// fileConfig is the mayflyd config file. Unknown keys are errors.
type fileConfig struct {
	Listen          string   `yaml:"listen"`
	HTTPListen      string   `yaml:"http_listen"`
	MetricsListen   string   `yaml:"metrics_listen"`
	TrustDomains    []string `yaml:"trust_domains"`
	JWTSVIDAudience string   `yaml:"jwt_svid_audience"`
	Policy          string   `yaml:"policy"`
	Identity        struct {
		WorkloadAPI string `yaml:"workload_api"`
		Cert        string `yaml:"cert"`
		Key         string `yaml:"key"`
		Bundle      string `yaml:"bundle"`
		JWTBundle   string `yaml:"jwt_bundle"`
	} `yaml:"identity"`
	Leases struct {
		Store          string      `yaml:"store"`
		PendingTimeout duration    `yaml:"pending_timeout"`
		Redis          redisConfig `yaml:"redis"`
	} `yaml:"leases"`
	Revoker struct {
		Batch       int `yaml:"batch"`
		Concurrency int `yaml:"concurrency"`
		// BusyBatch and BusyConcurrency bound the revoker while issuance
		// calls are in flight.
		BusyBatch       int      `yaml:"busy_batch"`
		BusyConcurrency int      `yaml:"busy_concurrency"`
		MaxAttempts     int      `yaml:"max_attempts"`
		Hold            duration `yaml:"hold"`
		BackoffBase     duration `yaml:"backoff_base"`
		BackoffMax      duration `yaml:"backoff_max"`
		// UnavailableBackoffMax caps retries while a backend is down.
		UnavailableBackoffMax duration `yaml:"unavailable_backoff_max"`
	} `yaml:"revoker"`
	JWT struct {
		IssuerURL   string   `yaml:"issuer_url"`
		Algorithm   string   `yaml:"algorithm"`
		KeyDir      string   `yaml:"key_dir"`
		RotateEvery duration `yaml:"rotate_every"`
		Retain      duration `yaml:"retain"`
	} `yaml:"jwt"`
	Issuers issuersConfig `yaml:"issuers"`
	Audit   auditConfig   `yaml:"audit"`
	Quota   struct {
		Rate  float64 `yaml:"rate"`
		Burst int     `yaml:"burst"`
	} `yaml:"quota"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
}

// redisConfig says how to reach the Redis (or Redis Cluster) that holds
// leases and access requests.
type redisConfig struct {
	Addrs        []string `yaml:"addrs"`
	Cluster      bool     `yaml:"cluster"`
	Username     string   `yaml:"username"`
	PasswordEnv  string   `yaml:"password_env"`
	DB           int      `yaml:"db"`
	TLS          bool     `yaml:"tls"`
	CAFile       string   `yaml:"ca_file"`
	Shards       int      `yaml:"shards"`
	Prefix       string   `yaml:"prefix"`
	Retain       duration `yaml:"retain"`
	WaitReplicas int      `yaml:"wait_replicas"`
	WaitTimeout  duration `yaml:"wait_timeout"`
}

// auditConfig says where the audit trail goes.
type auditConfig struct {
	File               string   `yaml:"file"`
	Fsync              string   `yaml:"fsync"`
	Redis              bool     `yaml:"redis"`
	RedisMaxLen        int64    `yaml:"redis_max_len"`
	Stdout             bool     `yaml:"stdout"`
	SigningKey         string   `yaml:"signing_key"`
	CheckpointEvery    int      `yaml:"checkpoint_every"`
	CheckpointInterval duration `yaml:"checkpoint_interval"`
}

// enabled says whether any sink is configured.
func (a auditConfig) enabled() bool { return a.File != "" || a.Redis || a.Stdout }

// duration is a time.Duration written as "30s", "5m", "24h".
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 30s, 5m, 24h)", n.Line, n.Value)
	}
	*d = duration(v)
	return nil
}

func loadConfig(path string) (*fileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if c.Listen == "" {
		c.Listen = "0.0.0.0:7443"
	}
	if c.Leases.Store == "" {
		c.Leases.Store = "memory"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	var missing []string
	if len(c.TrustDomains) == 0 {
		missing = append(missing, "trust_domains")
	}
	if c.Policy == "" {
		missing = append(missing, "policy")
	}
	if c.JWT.IssuerURL == "" {
		missing = append(missing, "jwt.issuer_url")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("config %s: missing %v", path, missing)
	}
	files := c.Identity.Cert != "" || c.Identity.Key != "" || c.Identity.Bundle != ""
	switch {
	case c.Identity.WorkloadAPI != "" && files:
		return nil, fmt.Errorf("config %s: identity: set workload_api or cert/key/bundle, not both", path)
	case c.Identity.WorkloadAPI == "" && !files:
		return nil, fmt.Errorf("config %s: identity: set workload_api (SPIRE agent socket) or cert, key and bundle", path)
	case files && (c.Identity.Cert == "" || c.Identity.Key == "" || c.Identity.Bundle == ""):
		return nil, fmt.Errorf("config %s: identity: cert, key and bundle go together", path)
	}
	if c.Identity.JWTBundle != "" && c.JWTSVIDAudience == "" {
		return nil, fmt.Errorf("config %s: jwt_svid_audience is required with identity.jwt_bundle (the audience callers' JWT-SVIDs must carry, e.g. the broker's SPIFFE ID)", path)
	}
	switch c.Leases.Store {
	case "memory":
	case "redis":
		if len(c.Leases.Redis.Addrs) == 0 {
			return nil, fmt.Errorf("config %s: leases.redis.addrs: at least one address (host:port) is required with store: redis", path)
		}
		if c.Leases.Redis.Cluster && c.Leases.Redis.DB != 0 {
			return nil, fmt.Errorf("config %s: leases.redis.db: Redis Cluster has only database 0", path)
		}
	default:
		return nil, fmt.Errorf("config %s: leases.store: %q is not a lease store (memory or redis)", path, c.Leases.Store)
	}
	a := c.Audit
	switch {
	case a.Redis && c.Leases.Store != "redis":
		return nil, fmt.Errorf("config %s: audit.redis: the shared audit stream lives in the leases' Redis; set leases.store: redis", path)
	case a.enabled() && a.SigningKey == "":
		return nil, fmt.Errorf("config %s: audit.signing_key: a key file is required to sign checkpoints (created if missing; share it between replicas)", path)
	case !a.enabled() && a.SigningKey != "":
		return nil, fmt.Errorf("config %s: audit: signing_key is set but no sink (file, redis or stdout)", path)
	case a.Fsync != "" && a.Fsync != "always" && a.Fsync != "periodic" && a.Fsync != "never":
		return nil, fmt.Errorf("config %s: audit.fsync: %q is not always, periodic or never", path, a.Fsync)
	case c.Quota.Rate < 0 || c.Quota.Burst < 0:
		return nil, fmt.Errorf("config %s: quota: rate and burst must not be negative", path)
	}
	return &c, nil
}

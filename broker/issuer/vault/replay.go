package vault

import (
	"maps"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
)

// replayCache makes a retried Issue for one lease return the credential
// the first one minted, and makes concurrent Issue calls for one lease
// mint once. It holds credentials in memory for Config.ReplayWindow at
// most (never past the lease's expiry): the per-lease token is not kept,
// and a secret cannot be read again from a token accessor.
type replayCache struct {
	mu        sync.Mutex
	entries   map[string]*replayEntry // lease id ->
	nextSweep time.Time
}

type replayEntry struct {
	done  chan struct{}      // closed when the first Issue finished
	cred  *issuer.Credential // nil while in flight, or if it failed
	until time.Time          // forget the credential then
}

// sweepEvery is how often claim drops expired entries.
const sweepEvery = time.Minute

// claim returns the remembered credential of the lease (a copy), or a
// channel to wait on while another Issue for it is in flight, or neither:
// then the caller mints and must call finish.
func (c *replayCache) claim(id string, now time.Time) (*issuer.Credential, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]*replayEntry{}
	}
	if now.After(c.nextSweep) {
		for k, e := range c.entries {
			if e.cred != nil && !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		c.nextSweep = now.Add(sweepEvery)
	}
	if e, ok := c.entries[id]; ok {
		switch {
		case e.cred == nil:
			return nil, e.done // in flight
		case now.Before(e.until):
			return cloneCred(e.cred), nil
		}
		delete(c.entries, id)
	}
	c.entries[id] = &replayEntry{done: make(chan struct{})}
	return nil, nil
}

// finish records the outcome of the claimed issuance: a credential to
// remember until until, or nil when it failed.
func (c *replayCache) finish(id string, cred *issuer.Credential, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok {
		return
	}
	close(e.done)
	if cred == nil {
		delete(c.entries, id)
		return
	}
	e.cred, e.until = cloneCred(cred), until
}

// extend moves the remembered credential's expiry after a renewal.
func (c *replayCache) extend(id string, expiresAt time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[id]; ok && e.cred != nil && expiresAt.After(e.cred.ExpiresAt) {
		e.cred.ExpiresAt = expiresAt
	}
}

// forget drops the lease's credential (revoked).
func (c *replayCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[id]; ok && e.cred != nil {
		delete(c.entries, id)
	}
}

func cloneCred(c *issuer.Credential) *issuer.Credential {
	out := *c
	out.Scopes = append([]string(nil), c.Scopes...)
	out.Fields = maps.Clone(c.Fields)
	return &out
}

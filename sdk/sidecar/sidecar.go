package sidecar

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sidecarv1 "github.com/mayflyhq/mayfly/proto/mayfly/sidecar/v1"
	"github.com/mayflyhq/mayfly/sdk"
)

// Option configures New. Only this package can implement it.
type Option interface {
	configure(*options)
}

type options struct {
	logger         *slog.Logger
	dialOptions    []sdk.DialOption
	stdin          io.Reader
	stdout, stderr io.Writer
}

type option func(*options)

func (f option) configure(o *options) { f(o) }

// WithLogger sets the sidecar's logger (default: slog.Default()). Secrets
// are never logged.
func WithLogger(l *slog.Logger) Option { return option(func(o *options) { o.logger = l }) }

// WithDialOptions adds options to the sdk.Dial that connects to the broker
// (gRPC options, an SDK logger). The identity comes from the
// configuration; do not add another.
func WithDialOptions(opts ...sdk.DialOption) Option {
	return option(func(o *options) { o.dialOptions = append(o.dialOptions, opts...) })
}

// WithExecIO sets the standard input, output and error of the child that
// Exec runs (default: the sidecar's own).
func WithExecIO(stdin io.Reader, stdout, stderr io.Writer) Option {
	return option(func(o *options) { o.stdin, o.stdout, o.stderr = stdin, stdout, stderr })
}

// Sidecar keeps a workload's credentials valid and hands them over: it
// holds one sdk.CredentialSource per configured entitlement (renewing
// before expiry, replacing a lease that cannot be renewed), checks every
// LeaseCheckInterval that each lease is still active and requests a new
// credential when one was revoked (explicit revoke, kill switch), writes
// each credential to its file, serves them on the unix socket, and on Close
// revokes every lease it holds and removes its files and socket.
type Sidecar struct {
	cfg  Config
	opts options
	log  *slog.Logger

	client *sdk.Client
	ents   []*entitlement
	byName map[string]*entitlement

	// rotated receives a value when a credential's value or lease changed
	// (capacity 1: several changes between two reads are seen as one).
	rotated chan struct{}

	ln             *net.UnixListener
	createdSockDir bool // remove the socket's directory at Close
	grpc           *grpc.Server

	mu      sync.Mutex
	started bool
	closed  bool
	stop    context.CancelFunc // ends the watch loops
	wg      sync.WaitGroup     // watch loops and the gRPC server
	done    chan struct{}      // closed by Close, ends WatchCredential streams
}

// entitlement is the state of one configured credential.
type entitlement struct {
	cfg  EntitlementConfig
	mode os.FileMode

	mu      sync.Mutex
	src     *sdk.CredentialSource // nil while a revoked lease is being replaced
	pub     *sdk.Credential       // the credential last published; nil if none
	leaseID string                // lease of the last credential seen, even after it expired
	fp      [32]byte              // fingerprint of pub's value and lease
	written []byte                // what the file holds now; nil if it does not exist
	changed chan struct{}         // closed and replaced at each publish
}

// New checks cfg and returns a sidecar; Start (or Run, or Exec) connects to
// the broker.
func New(cfg *Config, opts ...Option) (*Sidecar, error) {
	if cfg == nil {
		return nil, errors.New("sidecar: no config")
	}
	c := *cfg
	c.Entitlements = slices.Clone(cfg.Entitlements)
	c.Socket.AllowUIDs = slices.Clone(cfg.Socket.AllowUIDs)
	if err := c.check(""); err != nil {
		return nil, fmt.Errorf("sidecar: config: %w", err)
	}
	var o options
	for _, opt := range opts {
		opt.configure(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	s := &Sidecar{
		cfg:     c,
		opts:    o,
		log:     o.logger.With("component", "mayfly-sidecar"),
		byName:  map[string]*entitlement{},
		rotated: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	for _, ec := range c.Entitlements {
		mode, _ := ec.File.fileMode() // checked by check
		e := &entitlement{cfg: ec, mode: mode, changed: make(chan struct{})}
		s.ents = append(s.ents, e)
		s.byName[ec.Name] = e
	}
	return s, nil
}

// Start connects to the broker, gets the first credential of every
// entitlement (waiting at most StartTimeout for each), writes the files and
// opens the socket. An entitlement the broker refuses makes Start fail with
// an error that names it and keeps the broker's status (status.Code sees
// codes.PermissionDenied); nothing is left behind: leases already issued
// are revoked again, and the sidecar cannot be started again.
func (s *Sidecar) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("sidecar: Start after Close")
	case s.started:
		return errors.New("sidecar: already started")
	}

	dialOpts := []sdk.DialOption{sdk.WithLogger(s.opts.logger)}
	if id := s.cfg.Identity.WorkloadAPI; id != nil {
		dialOpts = append(dialOpts, sdk.WithWorkloadAPI(id.Socket))
	} else {
		f := s.cfg.Identity.Files
		dialOpts = append(dialOpts, sdk.WithSVIDFiles(f.Cert, f.Key, f.Bundle))
	}
	if s.cfg.Broker.ID != "" {
		dialOpts = append(dialOpts, sdk.WithBrokerID(s.cfg.Broker.ID))
	}
	dialOpts = append(dialOpts, s.opts.dialOptions...)
	dctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout.Std())
	defer cancel()
	client, err := sdk.Dial(dctx, s.cfg.Broker.Addr, dialOpts...)
	if err != nil {
		return fmt.Errorf("sidecar: connect to the broker at %s: %w", s.cfg.Broker.Addr, err)
	}
	s.client = client
	defer func() {
		if err != nil {
			s.closed = true // a failed sidecar cannot be started again
			_ = s.teardown()
		}
	}()

	for _, e := range s.ents {
		if e.cfg.File.Path != "" {
			// A missing directory is made private: it will hold secrets.
			if err := os.MkdirAll(filepath.Dir(e.cfg.File.Path), 0o700); err != nil {
				return fmt.Errorf("sidecar: entitlement %q: %w", e.cfg.Name, err)
			}
		}
	}
	for _, e := range s.ents {
		src, err := s.newSource(ctx, e)
		if err != nil {
			return startError(e.cfg.Name, err)
		}
		e.mu.Lock()
		e.src = src
		e.mu.Unlock()
		if err := s.publish(e); err != nil {
			return fmt.Errorf("sidecar: entitlement %q: %w", e.cfg.Name, err)
		}
	}

	if s.cfg.Socket.Path != "" {
		ln, created, err := listenSocket(s.cfg.Socket)
		if err != nil {
			return err
		}
		s.ln, s.createdSockDir = ln, created
		s.grpc = newGRPCServer(&service{s: s}, s.cfg.Socket.AllowUIDs)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.grpc.Serve(ln); err != nil {
				s.log.Error("socket server stopped", "error", err)
			}
		}()
	}

	runCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	for _, e := range s.ents {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.watch(runCtx, e)
		}()
	}
	s.started = true
	s.log.Info("sidecar started", "broker", s.cfg.Broker.Addr, "entitlements", len(s.ents), "socket", s.cfg.Socket.Path)
	return nil
}

// startError explains why the first credential of an entitlement failed.
func startError(name string, err error) error {
	switch status.Code(err) {
	case codes.PermissionDenied:
		return fmt.Errorf("sidecar: entitlement %q: the broker refused it (PermissionDenied): this workload holds no grant for it, it does not exist, or it needs an approved access request: %w", name, err)
	case codes.Unauthenticated:
		return fmt.Errorf("sidecar: entitlement %q: the broker did not accept the sidecar's SVID (Unauthenticated): %w", name, err)
	}
	return fmt.Errorf("sidecar: entitlement %q: %w", name, err)
}

// newSource issues the first credential of e, waiting at most StartTimeout.
func (s *Sidecar) newSource(ctx context.Context, e *entitlement) (*sdk.CredentialSource, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout.Std())
	defer cancel()
	var opts []sdk.SourceOption
	if e.cfg.TTL > 0 {
		opts = append(opts, sdk.WithTTL(e.cfg.TTL.Std()))
	}
	if e.cfg.Reason != "" {
		opts = append(opts, sdk.WithReason(e.cfg.Reason))
	}
	return s.client.Credential(ctx, e.cfg.Name, opts...)
}

// Run starts the sidecar if Start was not called yet, keeps the
// credentials until ctx ends, then closes it (revoking every lease and
// removing the files and the socket).
func (s *Sidecar) Run(ctx context.Context) error {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		if err := s.Start(ctx); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return s.Close()
}

// Close stops the sidecar: it stops serving the socket, revokes every lease
// it holds, and removes its files and socket. Calling it again does nothing.
func (s *Sidecar) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.teardown()
}

// teardown undoes Start; s.mu is held.
func (s *Sidecar) teardown() error {
	close(s.done)
	if s.stop != nil {
		s.stop()
	}
	if s.grpc != nil {
		stopped := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			s.grpc.Stop()
		}
	} else if s.ln != nil {
		_ = s.ln.Close()
	}
	s.wg.Wait()
	if s.createdSockDir {
		_ = os.Remove(filepath.Dir(s.cfg.Socket.Path)) // only if empty
	}

	var (
		errs []error
		emu  sync.Mutex
		wg   sync.WaitGroup
	)
	for _, e := range s.ents {
		e.mu.Lock()
		src := e.src
		e.src, e.pub = nil, nil
		e.mu.Unlock()
		if src != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := src.Close(); err != nil { // revokes the lease
					emu.Lock()
					errs = append(errs, fmt.Errorf("entitlement %q: %w", e.cfg.Name, err))
					emu.Unlock()
				}
			}()
		}
		if e.cfg.File.Path != "" {
			if err := removeFile(e.cfg.File.Path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	wg.Wait()
	if s.client != nil {
		if err := s.client.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sidecar: close: %w", err)
	}
	s.log.Info("sidecar stopped; leases revoked, files removed")
	return nil
}

// Credential returns the current credential of a configured entitlement,
// never an expired one; nil when there is none (unknown entitlement, or no
// valid credential right now).
func (s *Sidecar) Credential(entitlement string) *sdk.Credential {
	e, ok := s.byName[entitlement]
	if !ok {
		return nil
	}
	cred, _ := e.current()
	return cred
}

// Environ returns the environment variables that carry the current
// credentials (see EntitlementConfig.EnvPrefix), as NAME=value strings.
func (s *Sidecar) Environ() []string {
	var env []string
	for _, e := range s.ents {
		cred, _ := e.current()
		if cred == nil {
			continue
		}
		for _, kv := range envVars(e.cfg.EnvPrefix, cred) {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return env
}

// Rotated returns a channel that receives a value when the value or the
// lease of a credential changed and its file has been written. It has a
// buffer of one; several changes between two reads are seen as one.
func (s *Sidecar) Rotated() <-chan struct{} { return s.rotated }

// current returns the published credential if it is still valid, and the
// channel closed at the next publish.
func (e *entitlement) current() (*sdk.Credential, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pub == nil || !time.Now().Before(validUntil(e.pub)) {
		return nil, e.changed
	}
	return e.pub, e.changed
}

func (e *entitlement) source() *sdk.CredentialSource {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.src
}

// validUntil is when a credential must no longer be used: the earlier of
// its own expiry and its lease's.
func validUntil(c *sdk.Credential) time.Time {
	switch {
	case c.ExpiresAt.IsZero():
		return c.Lease.ExpiresAt
	case c.Lease.ExpiresAt.IsZero() || c.ExpiresAt.Before(c.Lease.ExpiresAt):
		return c.ExpiresAt
	}
	return c.Lease.ExpiresAt
}

// fingerprint identifies a credential's value and lease, so that a renewal
// which only moved the expiry is not taken for a rotation.
func fingerprint(c *sdk.Credential) [32]byte {
	if c == nil {
		return [32]byte{}
	}
	h := sha256.New()
	for _, s := range []string{c.Lease.ID, c.Kind, c.Token, c.Username, c.Password, c.CertPEM, c.KeyPEM, c.ChainPEM,
		c.AccessKeyID, c.SecretAccessKey, c.SessionToken} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	keys := make([]string, 0, len(c.Fields))
	for k := range c.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s=%d:%s;", len(k), k, len(c.Fields[k]), c.Fields[k])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// publish takes the source's current credential as the one to hand out:
// it wakes watchers, rewrites or removes the file, and signals Rotated when
// the value or the lease changed.
func (s *Sidecar) publish(e *entitlement) error {
	e.mu.Lock()
	var cur *sdk.Credential
	if e.src != nil {
		cur = e.src.Current()
	}
	if cur == e.pub {
		e.mu.Unlock()
		return nil
	}
	fp := fingerprint(cur)
	rotated := cur != nil && fp != e.fp
	e.pub, e.fp = cur, fp
	if cur != nil {
		e.leaseID = cur.Lease.ID
	}
	close(e.changed)
	e.changed = make(chan struct{})
	err := s.writeFile(e, cur)
	e.mu.Unlock()

	if err != nil {
		s.log.Error("writing the credential file failed", "entitlement", e.cfg.Name, "path", e.cfg.File.Path, "error", err)
	}
	if rotated {
		select {
		case s.rotated <- struct{}{}:
		default:
		}
	}
	return err
}

// writeFile brings e's file in line with cred; e.mu is held.
func (s *Sidecar) writeFile(e *entitlement, cred *sdk.Credential) error {
	if e.cfg.File.Path == "" {
		return nil
	}
	if cred == nil {
		if e.written == nil {
			return nil
		}
		e.written = nil
		return removeFile(e.cfg.File.Path)
	}
	data, err := render(e.cfg.File.Template, e.cfg.EnvPrefix, cred)
	if err != nil {
		return fmt.Errorf("render %s: %w", e.cfg.File.Path, err)
	}
	if e.written != nil && string(data) == string(e.written) {
		return nil
	}
	if err := writeFileAtomic(e.cfg.File.Path, data, e.mode); err != nil {
		return fmt.Errorf("write %s: %w", e.cfg.File.Path, err)
	}
	e.written = data
	return nil
}

// watch follows one entitlement until ctx ends: it publishes every change
// of its source, unpublishes a credential that expired with no
// replacement, logs renewal errors, and checks the lease every
// LeaseCheckInterval.
func (s *Sidecar) watch(ctx context.Context, e *entitlement) {
	check := time.NewTicker(s.cfg.LeaseCheckInterval.Std())
	defer check.Stop()
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	resetExpiry := func() {
		expiry.Stop()
		if cred, _ := e.current(); cred != nil {
			expiry.Reset(time.Until(validUntil(cred)) + 10*time.Millisecond)
		}
	}
	resetExpiry()
	for {
		var (
			updated <-chan struct{}
			errs    <-chan error
		)
		if src := e.source(); src != nil {
			updated, errs = src.Updated(), src.Errors()
		}
		select {
		case <-ctx.Done():
			return
		case <-updated:
			_ = s.publish(e)
			resetExpiry()
		case <-expiry.C:
			_ = s.publish(e) // the source's Current is nil once expired
			resetExpiry()
		case err := <-errs:
			s.log.Warn("renewal failed; the credential source retries", "entitlement", e.cfg.Name, "error", err)
		case <-check.C:
			s.checkLease(ctx, e)
			resetExpiry()
		}
	}
}

// checkLease asks the broker whether e's lease is still active and, if it
// was revoked, drops the credential and requests a new one. While no
// source exists (the last request failed), it tries again.
func (s *Sidecar) checkLease(ctx context.Context, e *entitlement) {
	e.mu.Lock()
	src, leaseID := e.src, e.leaseID
	e.mu.Unlock()
	if src == nil {
		s.replace(ctx, e)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	lease, err := s.client.Lease(cctx, leaseID)
	cancel()
	switch {
	case ctx.Err() != nil:
		return
	case status.Code(err) == codes.NotFound:
	case err != nil:
		s.log.Warn("checking the lease failed", "entitlement", e.cfg.Name, "lease", leaseID, "error", err)
		return
	case lease.State == sdk.StatePending || lease.State == sdk.StateActive:
		return
	}
	// The source may have moved to a new lease meanwhile (it revokes the
	// lease it replaces): then all is well.
	if cur := src.Current(); cur != nil && cur.Lease.ID != leaseID {
		return
	}
	reason := "not found"
	if lease != nil {
		reason = lease.State + " (" + lease.RevokeReason + ")"
	}
	s.log.Warn("lease ended early; requesting a new credential", "entitlement", e.cfg.Name, "lease", leaseID, "state", reason)
	e.mu.Lock()
	e.src = nil
	e.mu.Unlock()
	if err := src.Close(); err != nil { // revoking a revoked lease is no error
		s.log.Warn("closing the revoked credential's source", "entitlement", e.cfg.Name, "error", err)
	}
	_ = s.publish(e) // removes the file and tells watchers
	s.replace(ctx, e)
}

// replace requests a new credential for e after its lease was revoked.
func (s *Sidecar) replace(ctx context.Context, e *entitlement) {
	src, err := s.newSource(ctx, e)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("requesting a new credential failed; retrying at the next lease check", "entitlement", e.cfg.Name,
				"retry_in", s.cfg.LeaseCheckInterval.Std(), "error", err)
		}
		return
	}
	e.mu.Lock()
	if ctx.Err() != nil { // Close is running; it would not see this source
		e.mu.Unlock()
		_ = src.Close()
		return
	}
	e.src = src
	e.mu.Unlock()
	_ = s.publish(e)
	s.log.Info("new credential after revocation", "entitlement", e.cfg.Name, "lease", src.Current().Lease.ID)
}

// service implements SidecarService on the socket.
type service struct {
	sidecarv1.UnimplementedSidecarServiceServer
	s *Sidecar
}

func (v *service) lookup(name string) (*entitlement, error) {
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "sidecar: entitlement is required")
	}
	e, ok := v.s.byName[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "sidecar: entitlement %q is not configured in this sidecar", name)
	}
	return e, nil
}

// GetCredential implements sidecarv1.SidecarServiceServer.
func (v *service) GetCredential(_ context.Context, req *sidecarv1.GetCredentialRequest) (*sidecarv1.GetCredentialResponse, error) {
	e, err := v.lookup(req.GetEntitlement())
	if err != nil {
		return nil, err
	}
	cred, _ := e.current()
	if cred == nil {
		return nil, status.Errorf(codes.Unavailable, "sidecar: no valid credential for %q right now; the sidecar keeps trying", e.cfg.Name)
	}
	return &sidecarv1.GetCredentialResponse{Credential: credentialProto(cred), Lease: leaseProto(cred.Lease)}, nil
}

// WatchCredential implements sidecarv1.SidecarServiceServer.
func (v *service) WatchCredential(req *sidecarv1.WatchCredentialRequest, stream grpc.ServerStreamingServer[sidecarv1.WatchCredentialResponse]) error {
	e, err := v.lookup(req.GetEntitlement())
	if err != nil {
		return err
	}
	var last *sdk.Credential
	first := true
	for {
		cred, changed := e.current()
		if first || cred != last {
			resp := &sidecarv1.WatchCredentialResponse{}
			if cred != nil {
				resp.Credential, resp.Lease = credentialProto(cred), leaseProto(cred.Lease)
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
			first, last = false, cred
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		case <-v.s.done:
			return status.Error(codes.Unavailable, "sidecar: stopping")
		}
	}
}

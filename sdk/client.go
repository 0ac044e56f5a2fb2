package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Client talks to a Mayfly broker's CredentialService over mutual TLS, with
// the workload's X.509-SVID as its identity. It is safe for concurrent use.
// Close it when done.
type Client struct {
	conn   *reconnectingConn
	raw    mayflyv1.CredentialServiceClient
	log    *slog.Logger
	retry  retryPolicy
	closer io.Closer // the identity source the client created, if any

	closeOnce sync.Once
	closeErr  error
}

// Dial creates a client for the broker at addr (host:port, or any gRPC
// target). Exactly one identity option is required: WithWorkloadAPI,
// WithSVIDFiles or WithX509Source.
//
// The broker must present an X.509-SVID: the one named by WithBrokerID, or
// by default any SPIFFE ID in the client's own trust domain. The connection
// uses TLS 1.3 and presents the client's SVID.
//
// ctx bounds the set-up only: with WithWorkloadAPI, Dial waits for the first
// SVID from the Workload API. Dial does not wait for the broker; the first
// call connects, and a broker that fails authorisation (a wrong SPIFFE ID or
// an untrusted certificate) makes that call fail with codes.Unavailable and
// the reason in its message.
func Dial(ctx context.Context, addr string, opts ...DialOption) (*Client, error) {
	cfg := dialConfig{retry: defaultRetryPolicy}
	for _, o := range opts {
		o.configureDial(&cfg)
	}
	if cfg.identities != 1 {
		return nil, errors.New("sdk: exactly one of WithWorkloadAPI, WithSVIDFiles or WithX509Source is required")
	}
	var brokerID spiffeid.ID
	if cfg.brokerID != "" {
		id, err := spiffeid.FromString(cfg.brokerID)
		if err != nil {
			return nil, fmt.Errorf("sdk: broker ID: %w", err)
		}
		brokerID = id
	}

	svids, bundles, closer, err := identitySources(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Client, error) {
		if closer != nil {
			_ = closer.Close()
		}
		return nil, err
	}

	authorizer := tlsconfig.AuthorizeID(brokerID)
	if brokerID.IsZero() {
		own, err := svids.GetX509SVID()
		if err != nil {
			return fail(fmt.Errorf("sdk: own X.509-SVID: %w", err))
		}
		authorizer = tlsconfig.AuthorizeMemberOf(own.ID.TrustDomain())
	}
	tlsConfig := tlsconfig.MTLSClientConfig(svids, bundles, authorizer)
	tlsConfig.MinVersion = tls.VersionTLS13

	grpcOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		// Fixed receive windows turn off grpc's BDP estimator, which
		// answers nearly every (small) response with a WINDOW_UPDATE and a
		// PING the broker must ack: control frames and wake-ups on both
		// sides for nothing, as the broker's replies are a few KiB.
		grpc.WithInitialWindowSize(1 << 20),
		grpc.WithInitialConnWindowSize(1 << 20),
	}, cfg.grpcOptions...)
	conn, err := grpc.NewClient(addr, grpcOpts...)
	if err != nil {
		return fail(fmt.Errorf("sdk: dial %s: %w", addr, err))
	}
	rc := &reconnectingConn{svids: svids, cur: conn, serial: leafSerial(svids), grace: time.Minute,
		dial: func() (*grpc.ClientConn, error) { return grpc.NewClient(addr, grpcOpts...) }}
	logger := cfg.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Client{
		conn:   rc,
		raw:    mayflyv1.NewCredentialServiceClient(rc),
		log:    logger.With("component", "mayfly-sdk"),
		retry:  cfg.retry,
		closer: closer,
	}, nil
}

// identitySources returns the SVID and bundle sources chosen by the options,
// and a closer for whatever Dial created itself.
func identitySources(ctx context.Context, cfg *dialConfig) (x509svid.Source, x509bundle.Source, io.Closer, error) {
	switch cfg.identity {
	case identityWorkloadAPI:
		var opts []workloadapi.X509SourceOption
		if cfg.socketAddr != "" {
			opts = append(opts, workloadapi.WithClientOptions(workloadapi.WithAddr(cfg.socketAddr)))
		}
		src, err := workloadapi.NewX509Source(ctx, opts...)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("sdk: workload API: %w", err)
		}
		return src, src, src, nil
	case identityFiles:
		src, err := newFileSource(cfg.certPath, cfg.keyPath, cfg.bundlePath)
		if err != nil {
			return nil, nil, nil, err
		}
		return src, src, nil, nil
	case identitySource:
		if cfg.svidSource == nil || cfg.bundleSource == nil {
			return nil, nil, nil, errors.New("sdk: WithX509Source needs both an SVID source and a bundle source")
		}
		return cfg.svidSource, cfg.bundleSource, nil, nil
	}
	return nil, nil, nil, errors.New("sdk: no identity option")
}

// Raw returns the generated gRPC client on the same connection, for RPCs or
// fields the SDK does not wrap. Calls made through it are not retried.
func (c *Client) Raw() mayflyv1.CredentialServiceClient { return c.raw }

// Close closes the connection to the broker and any identity source Dial
// created (the Workload API connection), but not sources passed with
// WithX509Source. Close sources made by Credential first: closing one revokes
// its lease through this client. Calling Close again returns the first
// result.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		err := c.conn.Close()
		if c.closer != nil {
			err = errors.Join(err, c.closer.Close())
		}
		if err != nil {
			c.closeErr = fmt.Errorf("sdk: close: %w", err)
		}
	})
	return c.closeErr
}

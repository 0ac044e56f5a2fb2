package broker_test

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// TestRawHTTP2PathWithoutLeadingSlash guards against CVE-2026-33186: a
// request whose :path lacks its leading slash once slipped past path-based
// authorization in grpc-go. The broker must refuse it before any handler
// runs. The control case, the same request with the slash, must reach the
// handler and mint a lease, so the harness itself is proven to work.
func TestRawHTTP2PathWithoutLeadingSlash(t *testing.T) {
	env := start(t)
	body, err := proto.Marshal(&mayflyv1.IssueCredentialRequest{Entitlement: "long-api"})
	if err != nil {
		t.Fatal(err)
	}
	const method = "mayfly.v1.CredentialService/IssueCredential"

	status, err := rawGRPC(t, env.ClientTLS(t, workloadID), env.GRPCAddr, method, body)
	if err != nil {
		t.Fatal(err)
	}
	if status == "0" {
		t.Fatalf("path without leading slash was served (grpc-status 0)")
	}
	if n := leaseCount(t, env); n != 0 {
		t.Fatalf("a handler ran for a path without its leading slash: %d leases", n)
	}

	status, err = rawGRPC(t, env.ClientTLS(t, workloadID), env.GRPCAddr, "/"+method, body)
	if err != nil {
		t.Fatal(err)
	}
	if status != "0" || leaseCount(t, env) != 1 {
		t.Fatalf("control request with the slash: grpc-status %q, %d leases", status, leaseCount(t, env))
	}
}

// rawGRPC sends one unary gRPC request over a hand-built HTTP/2 connection
// and returns the grpc-status the server answered ("" if it reset the
// stream instead).
func rawGRPC(t *testing.T, tc *tls.Config, addr, path string, msg []byte) (string, error) {
	t.Helper()
	tc = tc.Clone()
	tc.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		return "", err
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		return "", err
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "https"}, {":path", path}, {":authority", addr},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		return "", err
	}
	frame := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
	copy(frame[5:], msg)
	if err := fr.WriteData(1, true, frame); err != nil {
		return "", err
	}
	var grpcStatus string
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == "grpc-status" {
			grpcStatus = f.Value
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return grpcStatus, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				return "", err
			}
			if f.StreamEnded() {
				return grpcStatus, nil
			}
		case *http2.RSTStreamFrame:
			return grpcStatus, nil
		case *http2.GoAwayFrame:
			return grpcStatus, nil
		}
	}
}

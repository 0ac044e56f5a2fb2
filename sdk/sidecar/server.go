package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	sidecarv1 "github.com/mayflyhq/mayfly/proto/mayfly/sidecar/v1"
)

// PeerCred is the credentials.AuthInfo of a connection on the sidecar
// socket: the identity of the connecting process as the kernel reports it
// (SO_PEERCRED), which the process cannot forge.
type PeerCred struct {
	credentials.CommonAuthInfo
	// UID, GID and PID of the process that connected.
	UID, GID uint32
	PID      int32
}

// AuthType implements credentials.AuthInfo.
func (PeerCred) AuthType() string { return "peercred" }

// peerCredentials are server-side gRPC transport credentials for a unix
// socket: no encryption (the kernel carries the bytes), and the peer's
// uid, gid and pid read with SO_PEERCRED at accept time.
type peerCredentials struct{}

// ServerHandshake reads the peer's credentials from the socket.
func (peerCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("sidecar: connection is a %T, not a unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("sidecar: peer credentials: %w", err)
	}
	var (
		cred *unix.Ucred
		gerr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, fmt.Errorf("sidecar: peer credentials: %w", err)
	}
	if gerr != nil {
		return nil, nil, fmt.Errorf("sidecar: peer credentials: %w", gerr)
	}
	return c, PeerCred{
		// The socket is local: nobody else sees or changes the bytes.
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		UID:            cred.Uid, GID: cred.Gid, PID: cred.Pid,
	}, nil
}

// ClientHandshake is not supported: clients use insecure credentials over
// the unix socket (see DialSocket).
func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("sidecar: peer credentials are for the server side only")
}

// Info implements credentials.TransportCredentials.
func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

// Clone implements credentials.TransportCredentials.
func (p peerCredentials) Clone() credentials.TransportCredentials { return p }

// OverrideServerName implements credentials.TransportCredentials.
func (peerCredentials) OverrideServerName(string) error { return nil }

// authorizeUIDs returns an error with codes.PermissionDenied unless the
// caller's uid is one of allowed.
func authorizeUIDs(ctx context.Context, allowed []int) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, "sidecar: no peer credentials")
	}
	pc, ok := p.AuthInfo.(PeerCred)
	if !ok {
		return status.Error(codes.PermissionDenied, "sidecar: no peer credentials")
	}
	if !slices.Contains(allowed, int(pc.UID)) {
		return status.Errorf(codes.PermissionDenied, "sidecar: uid %d is not allowed to use this socket (socket.allow_uids)", pc.UID)
	}
	return nil
}

// newGRPCServer builds the socket's gRPC server: peer credentials, the uid
// check on every call, and the SidecarService.
func newGRPCServer(svc sidecarv1.SidecarServiceServer, allowed []int) *grpc.Server {
	srv := grpc.NewServer(
		grpc.Creds(peerCredentials{}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := authorizeUIDs(ctx, allowed); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := authorizeUIDs(ss.Context(), allowed); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	)
	sidecarv1.RegisterSidecarServiceServer(srv, svc)
	return srv
}

// lookupGroup resolves a group name or numeric gid.
func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		if gid < 0 {
			return 0, fmt.Errorf("%d is not a gid", gid)
		}
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// listenSocket creates the unix socket of cfg with safe permissions:
//
//   - its directory is created with mode 0700 (0710 and the configured
//     group, so that group can reach the socket but not list the
//     directory); an existing directory must belong to the sidecar's uid
//     and give nothing to others;
//   - a stale socket left by a dead sidecar is removed, a live one is not;
//   - the socket is mode 0600 (0660 and the group).
//
// Until the socket's mode is set, the directory keeps everyone else out.
// createdDir says the directory was made here (Close removes it again).
func listenSocket(cfg SocketConfig) (_ *net.UnixListener, createdDir bool, err error) {
	gid := -1
	dirMode, sockMode := os.FileMode(0o700), os.FileMode(0o600)
	if cfg.Group != "" {
		g, err := lookupGroup(cfg.Group)
		if err != nil {
			return nil, false, fmt.Errorf("sidecar: socket group: %w", err)
		}
		gid, dirMode, sockMode = g, 0o710, 0o660
	}
	dir := filepath.Dir(cfg.Path)
	created := false
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return nil, false, fmt.Errorf("sidecar: socket directory: %w", err)
		}
		if err := os.Mkdir(dir, dirMode); err != nil {
			return nil, false, fmt.Errorf("sidecar: socket directory: %w", err)
		}
		created = true
		if err := os.Chmod(dir, dirMode); err != nil { // regardless of the umask
			return nil, false, fmt.Errorf("sidecar: socket directory: %w", err)
		}
		if gid >= 0 {
			if err := os.Chown(dir, -1, gid); err != nil {
				return nil, false, fmt.Errorf("sidecar: socket directory: %w", err)
			}
		}
	case err != nil:
		return nil, false, fmt.Errorf("sidecar: socket directory: %w", err)
	case !fi.IsDir():
		return nil, false, fmt.Errorf("sidecar: socket directory %s is not a directory", dir)
	default:
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && int(st.Uid) != os.Geteuid() {
			return nil, false, fmt.Errorf("sidecar: socket directory %s belongs to uid %d, not to the sidecar (uid %d); use a directory of the sidecar's own", dir, st.Uid, os.Geteuid())
		}
		if fi.Mode().Perm()&0o007 != 0 {
			return nil, false, fmt.Errorf("sidecar: socket directory %s is open to other users (mode %04o); use a directory of the sidecar's own (it is created with mode %04o if missing)", dir, fi.Mode().Perm(), dirMode)
		}
	}

	if fi, err := os.Lstat(cfg.Path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, false, fmt.Errorf("sidecar: %s exists and is not a socket", cfg.Path)
		}
		if c, err := net.DialTimeout("unix", cfg.Path, time.Second); err == nil {
			c.Close()
			return nil, false, fmt.Errorf("sidecar: another process is serving %s", cfg.Path)
		}
		if err := os.Remove(cfg.Path); err != nil {
			return nil, false, fmt.Errorf("sidecar: remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	if err != nil {
		return nil, false, fmt.Errorf("sidecar: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(cfg.Path, sockMode); err != nil {
		ln.Close()
		return nil, false, fmt.Errorf("sidecar: socket mode: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(cfg.Path, -1, gid); err != nil {
			ln.Close()
			return nil, false, fmt.Errorf("sidecar: socket group: %w", err)
		}
	}
	return ln, created, nil
}

// DialSocket connects to a sidecar's unix socket; use
// sidecarv1.NewSidecarServiceClient on the result. The connection is
// local and carries no credentials: the sidecar identifies the caller by
// its uid.
func DialSocket(path string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	target := "unix:" + path // relative
	if filepath.IsAbs(path) {
		target = "unix://" + path
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("sidecar: dial %s: %w", path, err)
	}
	return cc, nil
}

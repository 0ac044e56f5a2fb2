// Package sidecar is the library behind mayfly-sidecar: it keeps a
// workload's Mayfly credentials valid and hands them to processes that know
// nothing about SPIFFE or the broker, as files, as environment variables of
// a child process, or over a unix socket.
//
// A Sidecar holds one sdk.CredentialSource per configured entitlement, so
// every credential is renewed before it expires and a lease that cannot be
// renewed is replaced. Every lease_check_interval it also asks the broker
// whether each lease is still active, and requests a new credential when
// one was revoked (an explicit revoke, a kill switch). On Close, Run's end or
// Exec's end it revokes every lease it holds and removes its files and
// socket.
//
//	cfg, err := sidecar.LoadConfig("/etc/mayfly/sidecar.yaml")
//	if err != nil {
//		return err
//	}
//	sc, err := sidecar.New(cfg)
//	if err != nil {
//		return err
//	}
//	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	return sc.Run(ctx) // revokes and cleans up when ctx ends
//
// # Files
//
// A credential with a file is written atomically (a temporary file in the
// same directory, fsync, rename) with mode 0600 unless configured, each time
// its value or lease changes, and removed when no valid credential is left
// (revoked and not replaced yet, or expired) and at shutdown. Templates:
// env (KEY='value' lines, shell-quoted), json, raw (the bare secret), or a
// Go text/template applied to an sdk.Credential.
//
// # The socket
//
// With socket.path set, the sidecar serves mayfly.sidecar.v1.SidecarService
// (GetCredential, WatchCredential) on a unix socket. Every call is checked
// against socket.allow_uids with the caller's uid as the kernel reports it
// (SO_PEERCRED); others get codes.PermissionDenied. The socket is mode 0600
// in a directory of mode 0700 (0660 and 0710 with socket.group), so the
// file system keeps everyone else out as well. DialSocket connects to it,
// Fetch gets one credential through it, and Render formats it as a file
// template would (`mayfly-sidecar get` does both).
//
// # Exec
//
// Exec runs a child with the credentials in its environment (MAYFLY_TOKEN,
// MAYFLY_LEASE_ID, …; see EntitlementConfig.EnvPrefix) and, when a
// credential rotates, sends it exec.signal or restarts it.
//
// The package may import more than package sdk (YAML, x/sys), but never the
// broker.
package sidecar

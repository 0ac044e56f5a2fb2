package sidecar_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/deploy/testenv"
	sidecarv1 "github.com/mayflyhq/mayfly/proto/mayfly/sidecar/v1"
	"github.com/mayflyhq/mayfly/sdk/sidecar"
)

// Uids and a gid with no account on the machine: the kernel does not need
// one to run a process, and SO_PEERCRED reports them all the same.
const (
	peerGID        = 64500 // socket.group
	peerAllowedUID = 64501 // in allow_uids
	peerOtherUID   = 64502 // in the group, not in allow_uids
	peerOutsideUID = 64503 // neither
)

// TestSidecarPeerHelper is not a test: TestSocketPeerUID runs the test
// binary as other uids with MAYFLY_SIDECAR_PEER_SOCKET set, and this calls
// the sidecar socket and prints the gRPC status code it got.
func TestSidecarPeerHelper(t *testing.T) {
	sock := os.Getenv("MAYFLY_SIDECAR_PEER_SOCKET")
	if sock == "" {
		return
	}
	cc, err := sidecar.DialSocket(sock)
	if err != nil {
		fmt.Println("RESULT dial-error")
		return
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := sidecarv1.NewSidecarServiceClient(cc).GetCredential(ctx, &sidecarv1.GetCredentialRequest{Entitlement: "slow-token"})
	if err != nil {
		fmt.Printf("RESULT %s %s\n", status.Code(err), status.Convert(err).Message())
		return
	}
	fmt.Printf("RESULT OK %s\n", resp.GetLease().GetId())
}

// The socket admits the uids in allow_uids and refuses any other uid with
// PermissionDenied, judged by SO_PEERCRED: the helper processes really run
// as those uids. A uid outside socket.group cannot even connect (mode 0660,
// directory 0710).
func TestSocketPeerUID(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	dir := sharedTempDir(t)
	sock := join(dir, "run", "sidecar.sock")
	cfg := b.config(sidecar.EntitlementConfig{Name: "slow-token"})
	cfg.Socket = sidecar.SocketConfig{Path: sock, AllowUIDs: []int{peerAllowedUID, os.Getuid()}, Group: strconv.Itoa(peerGID)}
	sc := startSidecar(t, cfg)
	lease := sc.Credential("slow-token").Lease.ID

	if m := fileMode(t, sock); m != 0o660 {
		t.Errorf("socket mode %04o, want 0660 with a group", m)
	}
	if m := fileMode(t, join(dir, "run")); m != 0o710 {
		t.Errorf("socket directory mode %04o, want 0710 with a group", m)
	}
	for _, p := range []string{sock, join(dir, "run")} {
		fi, _ := os.Stat(p)
		if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != peerGID {
			t.Errorf("%s group %d, want %d", p, gid, peerGID)
		}
	}

	for _, tc := range []struct {
		name     string
		uid, gid uint32
		want     string
	}{
		{"allowed uid", peerAllowedUID, peerGID, "OK " + lease},
		{"other uid in the group", peerOtherUID, peerGID, "PermissionDenied sidecar: uid 64502 is not allowed to use this socket (socket.allow_uids)"},
		{"uid outside the group", peerOutsideUID, peerOutsideUID, "Unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := testenv.TestBinaryCommand(t, &syscall.Credential{Uid: tc.uid, Gid: tc.gid},
				"^TestSidecarPeerHelper$", "MAYFLY_SIDECAR_PEER_SOCKET="+sock)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper as uid %d: %v\n%s", tc.uid, err, out)
			}
			var got string
			for _, line := range strings.Split(string(out), "\n") {
				if r, ok := strings.CutPrefix(line, "RESULT "); ok {
					got = r
				}
			}
			if !strings.HasPrefix(got, tc.want) {
				t.Fatalf("uid %d got %q, want %q\n%s", tc.uid, got, tc.want, out)
			}
			if tc.want == "Unavailable" && !strings.Contains(got, "permission denied") {
				t.Errorf("uid %d was not kept out by the file system: %q", tc.uid, got)
			}
		})
	}
}

package sdk_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsStayLight keeps the SDK cheap to import: a workload that
// imports it must not pull in the broker, a backend client or a database
// driver. Only the standard library, grpc, protobuf, go-spiffe and the
// generated API may appear among its dependencies.
func TestImportsStayLight(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/mayflyhq/mayfly/sdk").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{
		"github.com/mayflyhq/mayfly/sdk",
		"github.com/mayflyhq/mayfly/proto/",
		"github.com/spiffe/go-spiffe/v2/",
		"google.golang.org/grpc",
		"google.golang.org/protobuf/",
		"google.golang.org/genproto/googleapis/rpc/",
		"golang.org/x/net/",
		"golang.org/x/sys/",
		"golang.org/x/text/",
		"github.com/go-jose/go-jose/v4", // go-spiffe's JWT-SVID parsing
		"github.com/Microsoft/go-winio", // go-spiffe's Workload API on Windows
	}
	for _, pkg := range strings.Fields(string(out)) {
		if !strings.Contains(strings.SplitN(pkg, "/", 2)[0], ".") {
			continue // standard library
		}
		ok := false
		for _, a := range allowed {
			if strings.HasPrefix(pkg, a) {
				ok = true
				break
			}
		}
		if !ok {
			t.Errorf("sdk depends on %s", pkg)
		}
	}
}

package devca_test

import (
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mayflyhq/mayfly/broker/devca"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "devca-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	td := spiffeid.RequireTrustDomainFromString("mayfly.dev")
	ca, err := devca.Open(dir+"/ca", td)
	if err != nil {
		panic(err)
	}
	svid, err := ca.MintX509SVID(spiffeid.RequireFromPath(td, "/demo"), time.Hour)
	if err != nil {
		panic(err)
	}
	id, _, err := x509svid.Verify(svid.Certificates, ca.X509Bundle())
	fmt.Println(id, err)
	// Output: spiffe://mayfly.dev/demo <nil>
}

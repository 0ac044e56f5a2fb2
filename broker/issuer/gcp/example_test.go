package gcp_test

import (
	"fmt"
	"log"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer/gcp"
)

func ExampleDecodeParams() {
	// The entitlement's gcp section, as the policy loader hands it over.
	var section yaml.Node
	err := yaml.Unmarshal([]byte(`
service_account: reports-reader@analytics-prod.iam.gserviceaccount.com
scopes: [https://www.googleapis.com/auth/bigquery.readonly]
`), &section)
	if err != nil {
		log.Fatal(err)
	}
	p, err := gcp.DecodeParams(section.Content[0])
	if err != nil {
		log.Fatal(err)
	}
	// The policy loader checks the entitlement's ttl and max_ttl against
	// these: DecodeParams cannot see them.
	min, max := p.TTLBounds()
	fmt.Println(p.Scopes, min, max)
	// Output:
	// [https://www.googleapis.com/auth/bigquery.readonly] 2m0s 1h0m0s
}

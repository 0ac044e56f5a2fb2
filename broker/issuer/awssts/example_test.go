package awssts_test

import (
	"fmt"
	"log"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer/awssts"
)

func ExampleSourceIdentity() {
	fmt.Println(awssts.SourceIdentity("spiffe://prod.example.org/ns/orders/sa/api"))
	fmt.Println(awssts.SourceIdentity("user:alice@example.org"))
	// Output:
	// prod.example.org+ns+orders+sa+api
	// user=alice@example.org
}

func ExampleDecodeParams() {
	// The entitlement's awssts section, as the policy loader hands it over.
	var section yaml.Node
	err := yaml.Unmarshal([]byte(`
role_arn: arn:aws:iam::123456789012:role/reports-read
max_session_duration: 4h
revoke_sessions_policy: true
`), &section)
	if err != nil {
		log.Fatal(err)
	}
	p, err := awssts.DecodeParams(section.Content[0])
	if err != nil {
		log.Fatal(err)
	}
	// The policy loader checks the entitlement's ttl and max_ttl against
	// these: DecodeParams cannot see them.
	min, max := p.TTLBounds()
	fmt.Println(p.Mode, min, max)
	// Output:
	// web_identity 16m0s 4h0m0s
}

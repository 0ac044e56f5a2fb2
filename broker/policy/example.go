package policy

import _ "embed" // for ExamplePolicy

// ExamplePolicy is the policy `mayflyd dev` loads: trust domain
// mayfly.test, entitlements minted by the jwt issuer only (params audience
// and scopes), with standing grants to the demo workload, CI runners and
// the CLI. It also serves as a commented template for a real policy.
//
//go:embed example.yaml
var ExamplePolicy []byte

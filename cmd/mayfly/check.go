package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer/awssts"
	"github.com/mayflyhq/mayfly/broker/issuer/gcp"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/issuer/vault"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// offlineDecoders check each issuer's section the way the broker does,
// without contacting any backend.
var offlineDecoders = map[string]func(*yaml.Node) (any, error){
	"jwt":    func(n *yaml.Node) (any, error) { return jwt.DecodeParams(n) },
	"awssts": func(n *yaml.Node) (any, error) { return awssts.DecodeParams(n) },
	"gcp":    func(n *yaml.Node) (any, error) { return gcp.DecodeParams(n) },
	"vault":  func(n *yaml.Node) (any, error) { return vault.DecodeParams(n) },
}

func newPolicyCheck(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check POLICY.yaml",
		Short: "Load a policy file offline with the broker's strict rules; errors name the line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := policy.LoadFile(args[0], policy.Options{Issuers: offlineDecoders})
			if err != nil {
				return err
			}
			grants := 0
			for _, e := range p.Entitlements {
				grants += len(e.Standing)
			}
			fmt.Fprintf(g.stdout, "%s: ok: %d entitlements, %d standing grants, %d groups, digest %s\n",
				args[0], len(p.Entitlements), grants, len(p.Groups), p.Digest[:12])
			return nil
		},
	}
}

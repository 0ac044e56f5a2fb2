package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

func (g *globals) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), g.timeout)
}

func newIssue(g *globals) *cobra.Command {
	var (
		ttl            time.Duration
		reason, ticket string
		requestID      string
		export         bool
	)
	cmd := &cobra.Command{
		Use:   "issue ENTITLEMENT",
		Short: "Get a short-lived credential for an entitlement you hold",
		Example: `  mayfly --dev issue demo-api-read
  mayfly --dev issue demo-api-read --ttl 10m -o json
  eval "$(mayfly --dev issue demo-api-read --export)"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			req := &mayflyv1.IssueCredentialRequest{Entitlement: args[0], Reason: reason, Ticket: ticket, RequestId: requestID}
			if ttl != 0 {
				req.Ttl = durationpb.New(ttl)
			}
			resp, err := mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ctx, req)
			if err != nil {
				return err
			}
			return printIssued(g, resp, export)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&ttl, "ttl", 0, "requested lifetime (default: the entitlement's ttl; clamped to policy)")
	f.StringVar(&reason, "reason", "", "why you need it (recorded)")
	f.StringVar(&ticket, "ticket", "", "ticket reference, e.g. INC-1234")
	f.StringVar(&requestID, "request-id", "", "idempotency key: a retry with the same key returns the same lease")
	f.BoolVar(&export, "export", false, "print shell export statements instead of a table")
	return cmd
}

func newLeases(g *globals) *cobra.Command {
	var states []string
	var entitlement, subject string
	var all bool
	cmd := &cobra.Command{
		Use:   "leases",
		Short: "List your leases (admins: --all, everyone's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			req := &mayflyv1.ListLeasesRequest{Entitlement: entitlement, PageSize: 500}
			for _, s := range states {
				v, ok := mayflyv1.LeaseState_value["LEASE_STATE_"+strings.ToUpper(s)]
				if !ok || v == 0 {
					return fmt.Errorf("--state %q: use pending, active, revoking, revoked or irrevocable", s)
				}
				req.States = append(req.States, mayflyv1.LeaseState(v))
			}
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			if subject != "" && !all {
				return fmt.Errorf("--subject needs --all (listing other principals' leases is for admins)")
			}
			var leases []*mayflyv1.Lease
			if all {
				admin := mayflyv1.NewAdminServiceClient(cc)
				areq := &mayflyv1.ListAllLeasesRequest{PageSize: req.PageSize, States: req.States, Entitlement: entitlement, Subject: subject}
				for {
					resp, err := admin.ListAllLeases(ctx, areq)
					if err != nil {
						return err
					}
					leases = append(leases, resp.GetLeases()...)
					if areq.PageToken = resp.GetNextPageToken(); areq.PageToken == "" {
						break
					}
				}
			} else {
				client := mayflyv1.NewCredentialServiceClient(cc)
				for {
					resp, err := client.ListLeases(ctx, req)
					if err != nil {
						return err
					}
					leases = append(leases, resp.GetLeases()...)
					if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
						break
					}
				}
			}
			if g.output == "json" {
				return printJSON(g, &mayflyv1.ListLeasesResponse{Leases: leases})
			}
			header := []string{"ID", "ENTITLEMENT", "STATE", "ISSUED", "EXPIRES", "ENDED"}
			if all {
				header = append(header, "SUBJECT", "LAST ERROR")
			}
			rows := [][]string{header}
			for _, l := range leases {
				ended := ""
				if l.GetRevokedAt() != nil {
					ended = l.GetRevokedAt().AsTime().Local().Format(time.DateTime)
					if l.GetRevokeReason() != "" {
						ended += " (" + l.GetRevokeReason() + ")"
					}
				}
				row := []string{l.GetId(), l.GetEntitlement(), stateName(l.GetState()),
					l.GetIssuedAt().AsTime().Local().Format(time.DateTime),
					l.GetExpiresAt().AsTime().Local().Format(time.DateTime), ended}
				if all {
					row = append(row, l.GetSubject(), l.GetLastError())
				}
				rows = append(rows, row)
			}
			printTable(g, rows)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&states, "state", nil, "only leases in these states (pending, active, revoking, revoked, irrevocable)")
	cmd.Flags().StringVar(&entitlement, "entitlement", "", "only leases of this entitlement")
	cmd.Flags().BoolVar(&all, "all", false, "every principal's leases (admins)")
	cmd.Flags().StringVar(&subject, "subject", "", "with --all: only this principal's leases")
	_ = cmd.RegisterFlagCompletionFunc("state", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"pending", "active", "revoking", "revoked", "irrevocable"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func newRevoke(g *globals) *cobra.Command {
	var subject, entitlement, grant, reason string
	cmd := &cobra.Command{
		Use:   "revoke [LEASE_ID | --subject S | --entitlement E | --grant G]",
		Short: "End one of your leases now, or (admins) every lease of a subject, entitlement or grant",
		Example: `  mayfly --dev revoke 01m8k14j7m5sy75306dz11vya2
  mayfly revoke --subject spiffe://prod.example.org/ns/orders/sa/api --reason "key leak INC-42"
  mayfly revoke --entitlement orders-db-admin`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			selectors := 0
			for _, v := range []string{subject, entitlement, grant} {
				if v != "" {
					selectors++
				}
			}
			switch {
			case len(args) == 1 && selectors > 0:
				return fmt.Errorf("give a lease id or one of --subject, --entitlement, --grant, not both")
			case len(args) == 0 && selectors != 1:
				return fmt.Errorf("give a lease id, or exactly one of --subject, --entitlement, --grant")
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			if len(args) == 0 {
				req := &mayflyv1.RevokeBySelectorRequest{Reason: reason}
				switch {
				case subject != "":
					req.Selector = &mayflyv1.RevokeBySelectorRequest_Subject{Subject: subject}
				case entitlement != "":
					req.Selector = &mayflyv1.RevokeBySelectorRequest_Entitlement{Entitlement: entitlement}
				default:
					req.Selector = &mayflyv1.RevokeBySelectorRequest_GrantId{GrantId: grant}
				}
				resp, err := mayflyv1.NewAdminServiceClient(cc).RevokeBySelector(ctx, req)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(g, resp)
				}
				printKV(g, [][2]string{{"REVOKED", fmt.Sprint(resp.GetRevoked())}})
				return nil
			}
			resp, err := mayflyv1.NewCredentialServiceClient(cc).RevokeLease(ctx, &mayflyv1.RevokeLeaseRequest{LeaseId: args[0]})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g, resp)
			}
			l := resp.GetLease()
			printKV(g, [][2]string{{"LEASE", l.GetId()}, {"STATE", stateName(l.GetState())}, {"REASON", l.GetRevokeReason()}})
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&subject, "subject", "", "kill switch: every lease of this principal (admins)")
	f.StringVar(&entitlement, "entitlement", "", "kill switch: every lease of this entitlement (admins)")
	f.StringVar(&grant, "grant", "", "kill switch: every lease minted under this grant (admins)")
	f.StringVar(&reason, "reason", "", "why (recorded)")
	return cmd
}

func newExplain(g *globals) *cobra.Command {
	var as string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "explain ENTITLEMENT",
		Short: "Show what the broker would decide for an entitlement, and why, without issuing",
		Example: `  mayfly --dev explain demo-api-read
  mayfly --dev explain demo-api-read --as spiffe://mayfly.test/workload/demo`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			req := &mayflyv1.ExplainRequest{Entitlement: args[0], Subject: as}
			if ttl != 0 {
				req.Ttl = durationpb.New(ttl)
			}
			resp, err := mayflyv1.NewPolicyServiceClient(cc).Explain(ctx, req)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g, resp)
			}
			d := resp.GetDecision()
			rows := [][2]string{
				{"DECISION", outcomeName(d.GetOutcome())},
				{"SUBJECT", d.GetSubject()},
				{"ENTITLEMENT", d.GetEntitlement()},
			}
			if d.GetOutcome() == mayflyv1.Decision_OUTCOME_ALLOW {
				rows = append(rows,
					[2]string{"GRANT", d.GetGrantId()},
					[2]string{"TTL", d.GetTtl().AsDuration().String() + clampedNote(d.GetTtlClamped())},
					[2]string{"HARD END", when(d.GetHardEnd().AsTime())})
			}
			for _, r := range d.GetReasons() {
				rows = append(rows, [2]string{"REASON", r.GetCode() + ": " + r.GetMessage()})
			}
			printKV(g, rows)
			return nil
		},
	}
	cmd.Flags().StringVar(&as, "as", "", "explain for another principal (spiffe://… or user:…); policy admins only")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "requested lifetime to evaluate")
	return cmd
}

func newEntitlements(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "entitlements",
		Short: "List the entitlements you may use now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			client := mayflyv1.NewPolicyServiceClient(cc)
			req := &mayflyv1.ListEntitlementsRequest{PageSize: 500}
			var all []*mayflyv1.Entitlement
			for {
				resp, err := client.ListEntitlements(ctx, req)
				if err != nil {
					return err
				}
				all = append(all, resp.GetEntitlements()...)
				if resp.GetNextPageToken() == "" {
					break
				}
				req.PageToken = resp.GetNextPageToken()
			}
			if g.output == "json" {
				return printJSON(g, &mayflyv1.ListEntitlementsResponse{Entitlements: all})
			}
			sort.Slice(all, func(i, j int) bool { return all[i].GetName() < all[j].GetName() })
			rows := [][]string{{"NAME", "ISSUER", "TTL", "MAX TTL", "GRANT", "DESCRIPTION"}}
			for _, e := range all {
				rows = append(rows, []string{e.GetName(), e.GetIssuer(), e.GetTtl().AsDuration().String(),
					e.GetMaxTtl().AsDuration().String(), e.GetGrantId(), e.GetDescription()})
			}
			printTable(g, rows)
			return nil
		},
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// accessCommands are the request-and-approve flow, break-glass, reviews
// and policy tools.
func accessCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newRequest(g), newReview(g, true), newReview(g, false), newRequests(g),
		newGrants(g), newBreakGlass(g), newReviews(g), newPolicy(g)}
}

func newRequest(g *globals) *cobra.Command {
	var (
		reason, ticket string
		dur            time.Duration
		wait, export   bool
		waitFor        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "request ENTITLEMENT",
		Short: "Ask for an entitlement you may request; with --wait, get the credential once approved",
		Example: `  mayfly request orders-db-admin --reason "add index" --ticket CHG-7 --for 1h
  mayfly request orders-db-admin --reason "add index" --ticket CHG-7 --for 1h --wait --export`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			req := &mayflyv1.CreateAccessRequestRequest{Entitlement: args[0], Reason: reason, Ticket: ticket}
			if dur != 0 {
				req.Duration = durationpb.New(dur)
			}
			created, err := mayflyv1.NewAccessServiceClient(cc).CreateAccessRequest(ctx, req)
			if err != nil {
				return err
			}
			r := created.GetRequest()
			if !wait {
				if g.output == "json" {
					return printJSON(g, r)
				}
				printRequest(g, r)
				return nil
			}
			wctx, wcancel := context.WithTimeout(cmd.Context(), waitFor)
			defer wcancel()
			if r, err = waitApproved(wctx, cc, r, g.stderr); err != nil {
				return err
			}
			ictx, icancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer icancel()
			resp, err := mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ictx, &mayflyv1.IssueCredentialRequest{
				Entitlement: r.GetEntitlement(), Reason: reason, Ticket: ticket, RequestId: "request-" + r.GetId()})
			if err != nil {
				return err
			}
			return printIssued(g, resp, export)
		},
	}
	f := cmd.Flags()
	f.StringVar(&reason, "reason", "", "why you need it (the policy may require it)")
	f.StringVar(&ticket, "ticket", "", "ticket reference (the policy may require a pattern)")
	f.DurationVar(&dur, "for", 0, "how long the grant should last (default: the policy's default)")
	f.BoolVar(&wait, "wait", false, "wait for the decision, showing approvals as they come, then issue the credential")
	f.DurationVar(&waitFor, "wait-timeout", 24*time.Hour, "with --wait: give up after this long")
	f.BoolVar(&export, "export", false, "with --wait: print the credential as shell export statements")
	return cmd
}

// waitApproved follows a request until it closes, keeping one status line
// up to date on w, and returns it if approved.
func waitApproved(ctx context.Context, cc grpc.ClientConnInterface, r *mayflyv1.AccessRequest, w io.Writer) (*mayflyv1.AccessRequest, error) {
	tty := isTerminal(w)
	show := func(r *mayflyv1.AccessRequest) {
		line := statusLine(r)
		if tty {
			fmt.Fprintf(w, "\r\033[K%s", line)
		} else {
			fmt.Fprintln(w, line)
		}
	}
	defer func() {
		if tty {
			fmt.Fprintln(w)
		}
	}()
	show(r)
	for r.GetState() == mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING {
		stream, err := mayflyv1.NewAccessServiceClient(cc).WatchAccessRequest(ctx, &mayflyv1.WatchAccessRequestRequest{Id: r.GetId()})
		if err != nil {
			return nil, err
		}
		for {
			ev, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("stopped waiting for request %s: %w", r.GetId(), ctx.Err())
				}
				return nil, err
			}
			r = ev.GetRequest()
			show(r)
		}
	}
	if r.GetState() != mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED {
		why := ""
		if d := r.GetDenial(); d != nil {
			why = fmt.Sprintf(" by %s: %s", d.GetApprover(), d.GetComment())
		}
		return nil, fmt.Errorf("request %s %s%s", r.GetId(), requestStateName(r.GetState()), why)
	}
	return r, nil
}

func statusLine(r *mayflyv1.AccessRequest) string {
	state := requestStateName(r.GetState())
	switch r.GetState() {
	case mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING:
		return fmt.Sprintf("request %s for %s: pending, %d of %d approvals (approvers: %s), expires %s",
			r.GetId(), r.GetEntitlement(), len(r.GetApprovals()), r.GetApprovalsNeeded(),
			strings.Join(r.GetApprovers(), ", "), r.GetExpiresAt().AsTime().Local().Format(time.Kitchen))
	case mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED:
		return fmt.Sprintf("request %s for %s: approved (grant %s)", r.GetId(), r.GetEntitlement(), r.GetGrantId())
	}
	return fmt.Sprintf("request %s for %s: %s", r.GetId(), r.GetEntitlement(), state)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func printRequest(g *globals, r *mayflyv1.AccessRequest) {
	rows := [][2]string{
		{"REQUEST", r.GetId()},
		{"STATE", requestStateName(r.GetState())},
		{"ENTITLEMENT", r.GetEntitlement()},
		{"REQUESTER", r.GetRequester()},
		{"DURATION", r.GetDuration().AsDuration().String()},
		{"REASON", r.GetReason()},
		{"TICKET", r.GetTicket()},
		{"APPROVALS", fmt.Sprintf("%d of %d", len(r.GetApprovals()), r.GetApprovalsNeeded())},
		{"APPROVERS", strings.Join(r.GetApprovers(), ", ")},
		{"EXPIRES", when(r.GetExpiresAt().AsTime())},
	}
	for _, a := range r.GetApprovals() {
		rows = append(rows, [2]string{"APPROVED BY", fmt.Sprintf("%s as %s: %s", a.GetApprover(), a.GetCountedAs(), a.GetComment())})
	}
	if d := r.GetDenial(); d != nil {
		rows = append(rows, [2]string{"DENIED BY", d.GetApprover() + ": " + d.GetComment()})
	}
	if r.GetGrantId() != "" {
		rows = append(rows, [2]string{"GRANT", r.GetGrantId()})
	}
	printKV(g, rows)
}

// printIssued prints an issued credential as a table, JSON or exports.
func printIssued(g *globals, resp *mayflyv1.IssueCredentialResponse, export bool) error {
	if export {
		return printExport(g, resp)
	}
	if g.output == "json" {
		return printJSON(g, resp)
	}
	l := resp.GetLease()
	rows := [][2]string{
		{"LEASE", l.GetId()},
		{"ENTITLEMENT", l.GetEntitlement()},
		{"SUBJECT", l.GetSubject()},
		{"GRANT", l.GetGrantId()},
		{"TTL", resp.GetEffectiveTtl().AsDuration().String() + clampedNote(resp.GetTtlClamped())},
		{"EXPIRES", when(l.GetExpiresAt().AsTime())},
		{"HARD END", when(l.GetHardEnd().AsTime())},
		{"REVOCABLE", yesNo(l.GetRevocable(), l.GetRevocableReason())},
	}
	printKV(g, append(rows, credentialRows(resp.GetCredential())...))
	return nil
}

// newReview is `mayfly approve` (approve true) and `mayfly deny`.
func newReview(g *globals, approve bool) *cobra.Command {
	var comment string
	verb, decision := "deny", mayflyv1.ReviewDecision_REVIEW_DECISION_DENY
	if approve {
		verb, decision = "approve", mayflyv1.ReviewDecision_REVIEW_DECISION_APPROVE
	}
	cmd := &cobra.Command{
		Use:   verb + " REQUEST_ID",
		Short: strings.ToUpper(verb[:1]) + verb[1:] + " an access request you may review",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			client := mayflyv1.NewAccessServiceClient(cc)
			// Review exactly what was read: the digest binds the decision
			// to this version of the request.
			got, err := client.GetAccessRequest(ctx, &mayflyv1.GetAccessRequestRequest{Id: args[0]})
			if err != nil {
				return err
			}
			resp, err := client.ReviewAccessRequest(ctx, &mayflyv1.ReviewAccessRequestRequest{
				Id: args[0], Decision: decision, Comment: comment, Digest: got.GetRequest().GetDigest()})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g, resp.GetRequest())
			}
			printRequest(g, resp.GetRequest())
			return nil
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "your comment, for the record")
	return cmd
}

func newRequests(g *globals) *cobra.Command {
	var toReview bool
	var states []string
	cmd := &cobra.Command{
		Use:   "requests",
		Short: "List access requests you made or may review",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			req := &mayflyv1.ListAccessRequestsRequest{ToReview: toReview, PageSize: 500}
			for _, s := range states {
				v, ok := mayflyv1.AccessRequestState_value["ACCESS_REQUEST_STATE_"+strings.ToUpper(s)]
				if !ok || v == 0 {
					return fmt.Errorf("--state %q: use pending, approved, denied, cancelled or expired", s)
				}
				req.States = append(req.States, mayflyv1.AccessRequestState(v))
			}
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			var all []*mayflyv1.AccessRequest
			for {
				resp, err := mayflyv1.NewAccessServiceClient(cc).ListAccessRequests(ctx, req)
				if err != nil {
					return err
				}
				all = append(all, resp.GetRequests()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			if g.output == "json" {
				return printJSON(g, &mayflyv1.ListAccessRequestsResponse{Requests: all})
			}
			rows := [][]string{{"ID", "ENTITLEMENT", "REQUESTER", "STATE", "APPROVALS", "DURATION", "CREATED"}}
			for _, r := range all {
				rows = append(rows, []string{r.GetId(), r.GetEntitlement(), r.GetRequester(), requestStateName(r.GetState()),
					fmt.Sprintf("%d/%d", len(r.GetApprovals()), r.GetApprovalsNeeded()), r.GetDuration().AsDuration().String(),
					r.GetCreatedAt().AsTime().Local().Format(time.DateTime)})
			}
			printTable(g, rows)
			return nil
		},
	}
	cmd.Flags().BoolVar(&toReview, "to-review", false, "only requests waiting for your approval")
	cmd.Flags().StringSliceVar(&states, "state", nil, "only requests in these states")
	return cmd
}

func newGrants(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "grants",
		Short: "List your grants (approved requests, break-glass); admins and owners: --all",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			req := &mayflyv1.ListGrantsRequest{All: all, PageSize: 500}
			var grants []*mayflyv1.Grant
			for {
				resp, err := mayflyv1.NewAccessServiceClient(cc).ListGrants(ctx, req)
				if err != nil {
					return err
				}
				grants = append(grants, resp.GetGrants()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			if g.output == "json" {
				return printJSON(g, &mayflyv1.ListGrantsResponse{Grants: grants})
			}
			rows := [][]string{{"ID", "KIND", "ENTITLEMENT", "SUBJECT", "STATE", "START", "END", "REVIEW"}}
			for _, gr := range grants {
				review := ""
				if gr.GetReviewDue() != nil {
					review = "due " + gr.GetReviewDue().AsTime().Local().Format(time.DateTime)
					if gr.GetReviewedBy() != "" {
						review = "done by " + gr.GetReviewedBy()
					}
				}
				rows = append(rows, []string{gr.GetId(), enumName(gr.GetKind().String(), "GRANT_KIND_"), gr.GetEntitlement(), gr.GetSubject(),
					enumName(gr.GetState().String(), "GRANT_STATE_"), gr.GetStart().AsTime().Local().Format(time.DateTime),
					gr.GetEnd().AsTime().Local().Format(time.DateTime), review})
			}
			printTable(g, rows)
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every subject's grants (admins, entitlement owners)")
	var reason string
	revoke := &cobra.Command{
		Use:   "revoke GRANT_ID",
		Short: "End a grant early; every lease minted under it is revoked",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			resp, err := mayflyv1.NewAccessServiceClient(cc).RevokeGrant(ctx, &mayflyv1.RevokeGrantRequest{Id: args[0], Reason: reason})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g, resp)
			}
			printKV(g, [][2]string{{"GRANT", resp.GetGrant().GetId()}, {"STATE", enumName(resp.GetGrant().GetState().String(), "GRANT_STATE_")},
				{"LEASES REVOKED", fmt.Sprint(resp.GetLeasesRevoked())}})
			return nil
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	cmd.AddCommand(revoke)
	return cmd
}

func newBreakGlass(g *globals) *cobra.Command {
	var reason, ticket string
	var ttl time.Duration
	var export bool
	cmd := &cobra.Command{
		Use:   "breakglass ENTITLEMENT --reason WHY",
		Short: "Emergency access, at once, for principals the policy lists; a review is due afterwards",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			req := &mayflyv1.BreakGlassRequest{Entitlement: args[0], Reason: reason, Ticket: ticket}
			if ttl != 0 {
				req.Ttl = durationpb.New(ttl)
			}
			bg, err := mayflyv1.NewAccessServiceClient(cc).BreakGlass(ctx, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "break-glass grant %s until %s; review due %s\n", bg.GetGrant().GetId(),
				bg.GetGrant().GetEnd().AsTime().Local().Format(time.DateTime), bg.GetGrant().GetReviewDue().AsTime().Local().Format(time.DateTime))
			resp, err := mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{
				Entitlement: args[0], Reason: reason, Ticket: ticket, RequestId: "breakglass-" + bg.GetGrant().GetId()})
			if err != nil {
				return err
			}
			return printIssued(g, resp, export)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required; approvers and security are notified)")
	cmd.Flags().StringVar(&ticket, "ticket", "", "incident reference")
	cmd.Flags().DurationVar(&ttl, "for", 0, "how long (capped to the policy's break-glass max_ttl)")
	cmd.Flags().BoolVar(&export, "export", false, "print the credential as shell export statements")
	return cmd
}

func newReviews(g *globals) *cobra.Command {
	var upcoming bool
	cmd := &cobra.Command{
		Use:   "reviews",
		Short: "Grants you must certify or review, with their use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			resp, err := mayflyv1.NewReviewServiceClient(cc).ListReviews(ctx, &mayflyv1.ListReviewsRequest{IncludeUpcoming: upcoming})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g, resp)
			}
			rows := [][]string{{"GRANT", "KIND", "ENTITLEMENT", "SUBJECT", "DUE", "LAST ISSUED", "LEASES 30D", "PURPOSE"}}
			for _, r := range resp.GetReviews() {
				due := r.GetDueAt().AsTime().Local().Format(time.DateTime)
				if r.GetOverdue() {
					due += " OVERDUE"
				}
				last := "never"
				if r.GetLastIssuedAt() != nil {
					last = r.GetLastIssuedAt().AsTime().Local().Format(time.DateTime)
				}
				rows = append(rows, []string{r.GetGrantId(), enumName(r.GetKind().String(), "GRANT_KIND_"), r.GetEntitlement(),
					r.GetSubject(), due, last, fmt.Sprint(r.GetRecentLeases()), r.GetPurpose()})
			}
			printTable(g, rows)
			return nil
		},
	}
	cmd.Flags().BoolVar(&upcoming, "upcoming", false, "also reviews not yet due")
	var comment string
	var revoke bool
	certify := &cobra.Command{
		Use:   "certify GRANT_ID",
		Short: "Certify a standing grant for another review period (or --revoke it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			d := mayflyv1.CertifyDecision_CERTIFY_DECISION_CERTIFY
			if revoke {
				d = mayflyv1.CertifyDecision_CERTIFY_DECISION_REVOKE
			}
			resp, err := mayflyv1.NewReviewServiceClient(cc).CertifyGrant(ctx, &mayflyv1.CertifyGrantRequest{GrantId: args[0], Decision: d, Comment: comment})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g, resp)
			}
			if revoke {
				printKV(g, [][2]string{{"REVOKED", args[0]}, {"LEASES REVOKED", fmt.Sprint(resp.GetLeasesRevoked())}})
			} else {
				printKV(g, [][2]string{{"CERTIFIED", args[0]}, {"NEXT DUE", when(resp.GetNextDueAt().AsTime())}})
			}
			return nil
		},
	}
	certify.Flags().StringVar(&comment, "comment", "", "your comment, for the record")
	certify.Flags().BoolVar(&revoke, "revoke", false, "the grant is no longer needed: revoke it and its leases")
	complete := &cobra.Command{
		Use:   "complete GRANT_ID",
		Short: "Complete the after-the-fact review of a break-glass grant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			resp, err := mayflyv1.NewReviewServiceClient(cc).CompleteBreakGlassReview(ctx, &mayflyv1.CompleteBreakGlassReviewRequest{GrantId: args[0], Comment: comment})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g, resp)
			}
			printKV(g, [][2]string{{"GRANT", resp.GetGrant().GetId()}, {"REVIEWED BY", resp.GetGrant().GetReviewedBy()}})
			return nil
		},
	}
	complete.Flags().StringVar(&comment, "comment", "", "your findings, for the record")
	cmd.AddCommand(certify, complete)
	return cmd
}

func newPolicy(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Check, explain and what-if the governance policy"}
	var window time.Duration
	whatif := &cobra.Command{
		Use:   "whatif NEW_POLICY.yaml",
		Short: "Replay recorded decisions against a changed policy and list every one that would change (admins)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cc, err := g.conn(ctx)
			if err != nil {
				return err
			}
			resp, err := mayflyv1.NewPolicyServiceClient(cc).WhatIf(ctx, &mayflyv1.WhatIfRequest{Policy: data, Window: durationpb.New(window)})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g, resp)
			}
			fmt.Fprintf(g.stdout, "replayed %d decisions from the last %s against %s: %d would change\n\n",
				resp.GetReplayed(), window, args[0], len(resp.GetChanges()))
			if len(resp.GetChanges()) == 0 {
				return nil
			}
			rows := [][]string{{"WHEN", "KIND", "SUBJECT", "ENTITLEMENT", "BEFORE", "AFTER", "WHY"}}
			for _, c := range resp.GetChanges() {
				var why []string
				for _, r := range c.GetAfter().GetReasons() {
					why = append(why, r.GetCode())
				}
				rows = append(rows, []string{c.GetAt().AsTime().Local().Format(time.DateTime), c.GetKind(), c.GetSubject(), c.GetEntitlement(),
					decisionSummary(c.GetBefore()), decisionSummary(c.GetAfter()), strings.Join(why, ", ")})
			}
			printTable(g, rows)
			return nil
		},
	}
	whatif.Flags().DurationVar(&window, "window", 7*24*time.Hour, "how far back to replay")
	explain := newExplain(g)
	cmd.AddCommand(whatif, explain, newPolicyCheck(g))
	return cmd
}

func decisionSummary(d *mayflyv1.Decision) string {
	s := outcomeName(d.GetOutcome())
	if d.GetTtl() != nil {
		s += " " + d.GetTtl().AsDuration().String()
	}
	return s
}

func requestStateName(s mayflyv1.AccessRequestState) string {
	return enumName(s.String(), "ACCESS_REQUEST_STATE_")
}

func enumName(s, prefix string) string { return strings.ToLower(strings.TrimPrefix(s, prefix)) }

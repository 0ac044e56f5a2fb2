package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

func printJSON(g *globals, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.stdout, string(b))
	return err
}

func printKV(g *globals, rows [][2]string) {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\n", r[0], r[1])
	}
	_ = w.Flush()
}

func printTable(g *globals, rows [][]string) {
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	_ = w.Flush()
}

func credentialRows(c *mayflyv1.Credential) [][2]string {
	switch k := c.GetKind().(type) {
	case *mayflyv1.Credential_Jwt:
		return [][2]string{{"SCOPES", strings.Join(k.Jwt.GetScopes(), " ")}, {"TOKEN", k.Jwt.GetToken()}}
	case *mayflyv1.Credential_UsernamePassword:
		return [][2]string{{"USERNAME", k.UsernamePassword.GetUsername()}, {"PASSWORD", k.UsernamePassword.GetPassword()}}
	case *mayflyv1.Credential_Certificate:
		return [][2]string{{"CERTIFICATE", k.Certificate.GetCertPem()}, {"KEY", k.Certificate.GetKeyPem()}, {"CHAIN", k.Certificate.GetChainPem()}}
	case *mayflyv1.Credential_Aws:
		return [][2]string{{"AWS_ACCESS_KEY_ID", k.Aws.GetAccessKeyId()}, {"AWS_SECRET_ACCESS_KEY", k.Aws.GetSecretAccessKey()}, {"AWS_SESSION_TOKEN", k.Aws.GetSessionToken()}}
	case *mayflyv1.Credential_OauthToken:
		return [][2]string{{"SCOPES", strings.Join(k.OauthToken.GetScopes(), " ")}, {"TOKEN", k.OauthToken.GetToken()}}
	case *mayflyv1.Credential_Raw:
		var rows [][2]string
		keys := make([]string, 0, len(k.Raw.GetFields()))
		for key := range k.Raw.GetFields() {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			rows = append(rows, [2]string{strings.ToUpper(key), k.Raw.GetFields()[key]})
		}
		return rows
	}
	return nil
}

// printExport prints the credential as POSIX shell export statements.
func printExport(g *globals, resp *mayflyv1.IssueCredentialResponse) error {
	vars := [][2]string{
		{"MAYFLY_LEASE_ID", resp.GetLease().GetId()},
		{"MAYFLY_EXPIRES_AT", resp.GetLease().GetExpiresAt().AsTime().UTC().Format(time.RFC3339)},
	}
	switch k := resp.GetCredential().GetKind().(type) {
	case *mayflyv1.Credential_Jwt:
		vars = append(vars, [2]string{"MAYFLY_TOKEN", k.Jwt.GetToken()})
	case *mayflyv1.Credential_OauthToken:
		vars = append(vars, [2]string{"MAYFLY_TOKEN", k.OauthToken.GetToken()})
	case *mayflyv1.Credential_UsernamePassword:
		vars = append(vars, [2]string{"MAYFLY_USERNAME", k.UsernamePassword.GetUsername()}, [2]string{"MAYFLY_PASSWORD", k.UsernamePassword.GetPassword()})
	case *mayflyv1.Credential_Aws:
		vars = append(vars, [2]string{"AWS_ACCESS_KEY_ID", k.Aws.GetAccessKeyId()}, [2]string{"AWS_SECRET_ACCESS_KEY", k.Aws.GetSecretAccessKey()}, [2]string{"AWS_SESSION_TOKEN", k.Aws.GetSessionToken()})
	default:
		for _, r := range credentialRows(resp.GetCredential()) {
			vars = append(vars, [2]string{"MAYFLY_" + r[0], r[1]})
		}
	}
	for _, v := range vars {
		if _, err := fmt.Fprintf(g.stdout, "export %s=%s\n", v[0], shellQuote(v[1])); err != nil {
			return err
		}
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func when(t time.Time) string {
	d := time.Until(t).Round(time.Second)
	rel := "in " + d.String()
	if d < 0 {
		rel = (-d).String() + " ago"
	}
	return t.Local().Format(time.RFC3339) + " (" + rel + ")"
}

func yesNo(b bool, why string) string {
	if b {
		return "yes"
	}
	if why != "" {
		return "no: " + why
	}
	return "no"
}

func clampedNote(clamped bool) string {
	if clamped {
		return " (clamped by policy)"
	}
	return ""
}

func stateName(s mayflyv1.LeaseState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "LEASE_STATE_"))
}

func outcomeName(o mayflyv1.Decision_Outcome) string {
	return strings.ToLower(strings.TrimPrefix(o.String(), "OUTCOME_"))
}

package sidecar

import (
	"context"
	"fmt"

	sidecarv1 "github.com/mayflyhq/mayfly/proto/mayfly/sidecar/v1"
	"github.com/mayflyhq/mayfly/sdk"
)

// Fetch asks the sidecar listening on socketPath for the current credential
// of entitlement. Errors keep the sidecar's gRPC status: PermissionDenied
// (this uid is not allowed), NotFound (not configured), Unavailable (no
// valid credential right now, or no sidecar).
func Fetch(ctx context.Context, socketPath, entitlement string) (*sdk.Credential, error) {
	cc, err := DialSocket(socketPath)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	resp, err := sidecarv1.NewSidecarServiceClient(cc).GetCredential(ctx, &sidecarv1.GetCredentialRequest{Entitlement: entitlement})
	if err != nil {
		return nil, fmt.Errorf("sidecar: get %q from %s: %w", entitlement, socketPath, err)
	}
	return credentialFromProto(resp.GetCredential(), resp.GetLease()), nil
}

// Render formats a credential as a file template does: TemplateEnv (with
// envPrefix), TemplateJSON, TemplateRaw, or a Go text/template.
func Render(template, envPrefix string, cred *sdk.Credential) ([]byte, error) {
	if cred == nil {
		return nil, fmt.Errorf("sidecar: render: no credential")
	}
	b, err := render(template, envPrefix, cred)
	if err != nil {
		return nil, fmt.Errorf("sidecar: render: %w", err)
	}
	return b, nil
}

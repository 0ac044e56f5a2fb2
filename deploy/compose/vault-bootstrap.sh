#!/bin/sh
# Configures the dev-mode Vault of the compose stack for Mayfly; run by
# the vault-bootstrap service after Vault is up (safe to repeat). Dev-mode
# Vault keeps everything in memory: after a restart of the vault service,
# run `docker compose up vault-bootstrap` again. NOT FOR PRODUCTION.
#
# It makes (see broker/issuer/vault/doc.go for what each is for):
#   - policy mayfly-broker: what the broker's own token needs;
#   - token role mayfly: per-lease tokens are orphans that may carry only
#     mayfly-pki-workload;
#   - a PKI engine at pki/ with role workload (generate_lease=true, so a
#     certificate has a lease to revoke) and policy mayfly-pki-workload;
#   - AppRole mayfly with role_id mayfly-broker (mayflyd.yaml names it) and
#     a fresh secret_id, written to $SECRET_ID_OUT for the broker (uid 65532).
# Environment: VAULT_ADDR, VAULT_CACERT, VAULT_TOKEN, SECRET_ID_OUT.
set -eu
: "${SECRET_ID_OUT:?}"

n=0
until vault status >/dev/null 2>&1; do
  n=$((n + 1))
  if [ "$n" -ge 120 ]; then
    echo "vault-bootstrap: Vault did not answer" >&2
    exit 1
  fi
  sleep 1
done

vault policy write mayfly-broker - <<'HCL'
path "auth/token/create/mayfly"   { capabilities = ["update"] }
path "auth/token/renew-accessor"  { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
path "sys/leases/renew"           { capabilities = ["update"] }
path "sys/leases/revoke"          { capabilities = ["update"] }
path "auth/token/lookup-self"     { capabilities = ["read"] }
path "auth/token/renew-self"      { capabilities = ["update"] }
HCL
vault policy write mayfly-pki-workload - <<'HCL'
path "pki/issue/workload" { capabilities = ["update"] }
HCL
vault write auth/token/roles/mayfly \
  allowed_policies=mayfly-pki-workload orphan=true renewable=true

if ! vault secrets list -format=json | grep -q '"pki/"'; then
  vault secrets enable pki
  vault secrets tune -max-lease-ttl=87600h pki
  vault write -field=serial_number pki/root/generate/internal \
    common_name="Mayfly example CA" ttl=87600h >/dev/null
fi
# Vault warns that generate_lease costs storage with many certificates;
# Mayfly needs the lease to revoke a certificate with its lease.
vault write pki/roles/workload \
  allow_any_name=true allowed_uri_sans="spiffe://example.org/*" \
  generate_lease=true max_ttl=2h >/dev/null

if ! vault auth list -format=json | grep -q '"approle/"'; then
  vault auth enable approle
fi
# A periodic token: the broker renews it for as long as it runs.
vault write auth/approle/role/mayfly token_policies=mayfly-broker token_no_default_policy=true token_period=1h secret_id_ttl=0
vault write auth/approle/role/mayfly/role-id role_id=mayfly-broker

umask 077
vault write -f -field=secret_id auth/approle/role/mayfly/secret-id >"$SECRET_ID_OUT.tmp"
chown 65532:65532 "$SECRET_ID_OUT.tmp"    # the broker's uid (distroless nonroot)
chmod 0400 "$SECRET_ID_OUT.tmp"
mv "$SECRET_ID_OUT.tmp" "$SECRET_ID_OUT"
echo "vault-bootstrap: done"

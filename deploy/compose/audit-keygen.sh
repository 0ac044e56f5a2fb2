#!/bin/sh
# Makes the Ed25519 key both broker replicas sign audit checkpoints with,
# once: the key stays in the mayfly-bootstrap volume, so the whole trail
# verifies with one public key. Run by the audit-keygen service.
#
# The broker mounts the volume read-only and, at start, checks that
# KEY.pub holds the public key (it writes the file otherwise), so the
# public key is written here too. Verify the trail with it:
#   docker compose run --rm audit-keygen cat /run/mayfly/bootstrap/audit-signing-key.pem.pub
set -eu
key=/run/mayfly/bootstrap/audit-signing-key.pem
umask 077
if [ ! -s "$key" ]; then
  openssl genpkey -algorithm ed25519 -out "$key.tmp"
  chown 65532:65532 "$key.tmp"            # the broker's uid (distroless nonroot)
  chmod 0400 "$key.tmp"
  mv "$key.tmp" "$key"
  echo "audit-keygen: wrote $key"
fi
openssl pkey -in "$key" -pubout -out "$key.pub.tmp"
chmod 0444 "$key.pub.tmp"
mv "$key.pub.tmp" "$key.pub"

#!/bin/sh
# Prepares SPIRE for the compose stack; run by the spire-bootstrap service
# at every `docker compose up` (safe to repeat):
#   - writes the trust bundle the agent starts from and a fresh join token
#     (used once; an attested agent keeps its SVID in its data volume) to
#     /run/spire/bootstrap, the volume the spire-agent service reads;
#   - registers the broker and the demo workload, selected by the Docker
#     labels compose.yaml puts on their containers.
set -eu

SOCKET=/tmp/spire-server/private/api.sock   # the server's admin socket (shared volume)
OUT=/run/spire/bootstrap
TD=example.org
AGENT_ID="spiffe://$TD/agent/compose"

srv() { spire-server "$@" -socketPath "$SOCKET"; }

n=0
until srv healthcheck >/dev/null 2>&1; do
  n=$((n + 1))
  if [ "$n" -ge 120 ]; then
    echo "spire-bootstrap: the SPIRE server did not become healthy" >&2
    exit 1
  fi
  sleep 1
done

srv bundle show -format pem >"$OUT/bundle.pem.tmp"
mv "$OUT/bundle.pem.tmp" "$OUT/bundle.pem"

srv token generate -spiffeID "$AGENT_ID" -ttl 3600 | sed -n 's/^Token: //p' >"$OUT/join-token.tmp"
if [ ! -s "$OUT/join-token.tmp" ]; then
  echo "spire-bootstrap: no join token" >&2
  exit 1
fi
mv "$OUT/join-token.tmp" "$OUT/join-token"

# entry SPIFFE_ID SELECTOR [FLAGS...]: registers a workload under the
# agent unless it has an entry for that SPIFFE ID.
entry() {
  id=$1 selector=$2
  shift 2
  if srv entry show -spiffeID "$id" -parentID "$AGENT_ID" | grep -q 'Entry ID'; then
    echo "spire-bootstrap: $id is registered"
    return
  fi
  srv entry create -parentID "$AGENT_ID" -spiffeID "$id" -selector "$selector" -x509SVIDTTL 3600 "$@"
}

# The broker's SVID is also its HTTPS certificate: the DNS names are the
# replicas' compose host names and localhost (published ports).
entry "spiffe://$TD/mayfly" docker:label:org.example.mayfly.workload:broker \
  -dns mayflyd-1 -dns mayflyd-2 -dns localhost
entry "spiffe://$TD/workload/demo" docker:label:org.example.mayfly.workload:demo

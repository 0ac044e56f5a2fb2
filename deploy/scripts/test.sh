#!/usr/bin/env bash
# The whole Mayfly test suite: static checks, the generated-code check, the
# real services the tests need (Redis, PostgreSQL, Vault, SPIRE, an OIDC
# provider), every Go test with the race detector, and each fuzz target for
# a bounded time. It installs what is missing, builds the tools once
# (cached in ${MAYFLY_TOOLS_CACHE:-~/.cache/mayfly-tools}), and every server
# it starts is stopped again by the tests that started it.
# Run from anywhere: bash deploy/scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CI="${CI:-}"

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "buf lint + generated code"
bash deploy/scripts/proto-check.sh

step "services"
bash deploy/scripts/install-services.sh

# Build Vault, SPIRE and the OIDC provider once, one after the other, before
# the test packages run in parallel and would all wait on the same build.
step "tools (Vault v1.21.0, SPIRE v1.13.3, zitadel OIDC example OP)"
go test -count=1 -timeout 60m -run '^(TestVault|TestSPIRE|TestOIDCOP|TestPostgres|TestRedis)$' ./deploy/testenv/

step "go test -race"
go test -race -count=1 -timeout 30m ./...

step "fuzz (${FUZZTIME:=15s} per target)"
FUZZTIME=$FUZZTIME bash deploy/scripts/fuzz.sh

step "build binaries"
go build -o "$(mktemp -d)" ./cmd/...

echo
echo "mayfly: all checks passed"

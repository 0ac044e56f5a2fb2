#!/usr/bin/env bash
# The whole Mayfly test suite: static checks, generated-code check, every
# Go test with the race detector, and each fuzz target for a bounded time.
# It installs and starts what the tests need and stops it again afterwards.
# Run from anywhere: bash deploy/scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n== %s\n' "$*"; }

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "buf lint + generated code"
bash deploy/scripts/proto-check.sh

step "go test -race"
go test -race -count=1 -timeout 20m ./...

step "fuzz (${FUZZTIME:=15s} per target)"
FUZZTIME=$FUZZTIME bash deploy/scripts/fuzz.sh

step "build binaries"
go build -o "$(mktemp -d)" ./cmd/...

echo
echo "mayfly: all checks passed"

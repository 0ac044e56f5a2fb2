#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZTIME, default 15s each).
set -euo pipefail
cd "$(dirname "$0")/../.."
t=${FUZZTIME:-15s}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "fuzz: $pkg $target ($t)"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" -fuzzminimizetime=5s "$pkg"
  done
done

#!/usr/bin/env bash
# Fails if `buf lint` fails or if regenerating the Go code from the protos
# changes anything (generated code is committed).
set -euo pipefail
cd "$(dirname "$0")/../.."
buf() { go tool -modfile=deploy/tools/buf/go.mod buf "$@"; }
buf lint
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r proto "$tmp/before"
buf generate
if ! diff -r "$tmp/before" proto >/dev/null; then
  echo "proto-check: regenerated code differs from the committed code:" >&2
  diff -r "$tmp/before" proto >&2 || true
  exit 1
fi
echo "proto-check: buf lint ok, generated code up to date"

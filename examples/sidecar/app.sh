#!/bin/sh
# A stand-in application for `mayfly-sidecar exec`: it gets the credential in
# its environment at start, and rereads the file when the sidecar sends
# SIGHUP after a rotation. It never prints the token itself.
dir=$(dirname "$0")
show() {
  echo "app: $1: lease $MAYFLY_LEASE_ID, token of ${#MAYFLY_TOKEN} bytes, expires $MAYFLY_EXPIRES_AT"
}
show "started"
trap '. "$dir/out/demo-api-read.env"; show "SIGHUP, reread the file"' HUP
trap 'echo "app: SIGTERM, exiting"; exit 0' TERM INT
while :; do sleep 1; done

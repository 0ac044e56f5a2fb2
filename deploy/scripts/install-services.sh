#!/usr/bin/env bash
# Installs the Debian packages the tests run for real (Redis, PostgreSQL,
# and iproute2 for the network namespaces of the chaos suite) when they are
# missing. The tests start their own servers on free loopback
# ports, so the packaged services are stopped again if installing started
# them.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then
  echo "install-services: redis-server, redis-cli, PostgreSQL and iproute2 are installed"
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
echo "install-services: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for svc in redis-server postgresql; do
  $sudo service "$svc" stop >/dev/null 2>&1 || true
done

#!/usr/bin/env bash
# skiff-healthcheck [HOST:PORT]: exits 0 when Skiff's HTTP listener answers GET /health with 200.
#
# The container's health probe (Dockerfile HEALTHCHECK, deploy/docker-compose.yml). The runtime
# image has no curl or wget, so this speaks HTTP/1.0 over bash's /dev/tcp. The address defaults
# to SKIFF_HTTP_LISTEN; a wildcard host (0.0.0.0, ::) is probed on loopback.
# Checked against a stub server and a real `skiff dev` by deploy/validate.sh.
set -euo pipefail

addr="${1:-${SKIFF_HTTP_LISTEN:-127.0.0.1:9644}}"
host="${addr%:*}"
port="${addr##*:}"
host="${host#[}"
host="${host%]}"
case "$host" in
  "" | 0.0.0.0 | "::") host=127.0.0.1 ;;
esac

# A closed port fails the redirection at once; a hung server is bounded by the read timeout
# (and by the probe's own timeout in Docker).
if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
  echo "skiff-healthcheck: cannot connect to $host:$port" >&2
  exit 1
fi
printf 'GET /health HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$host" "$port" >&3
status=""
IFS= read -r -t 2 status <&3 || true
exec 3<&-
status="${status%$'\r'}"
case "$status" in
  "HTTP/1."[01]" 200"*) exit 0 ;;
esac
echo "skiff-healthcheck: GET http://$host:$port/health answered '${status:-nothing}'" >&2
exit 1

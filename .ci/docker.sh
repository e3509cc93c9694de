#!/usr/bin/env bash
# Makes a Docker engine reachable: uses the running one, else installs Debian's docker.io and
# starts dockerd with no bridge and no iptables rules (sandboxes run with network none).
set -euo pipefail

if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "docker.sh: using the running engine $(docker version --format '{{.Server.Version}}')" >&2
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker.sh: installing Debian's docker.io" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2
fi
log=${DOCKERD_LOG:-/tmp/sandkeeper-dockerd.log}
echo "docker.sh: starting dockerd (log: $log)" >&2
nohup dockerd --bridge=none --iptables=false --ip-masq=false >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "docker.sh: engine up" >&2
    exit 0
  fi
  sleep 1
done
echo "docker.sh: dockerd did not answer within 60 s; its log:" >&2
tail -n 50 "$log" >&2
exit 1

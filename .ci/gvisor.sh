#!/usr/bin/env bash
# A second Docker engine with gVisor's `runsc` registered as a runtime, beside the first one:
# its own socket, data root and exec root, no bridge, no iptables rules (sandboxes run with
# network none, and runsc itself with --network=none).
#
#   .ci/gvisor.sh start DIR   installs Debian's runsc if missing, starts the engine, prints its
#                             DOCKER_HOST (unix://DIR/docker.sock)
#   .ci/gvisor.sh load DIR IMAGE...
#                             copies images from the first engine into it
#   .ci/gvisor.sh stop DIR    stops the engine and removes what it left in DIR
set -euo pipefail

command=${1:?usage: gvisor.sh start|load|stop DIR [IMAGE...]}
dir=${2:?usage: gvisor.sh start|load|stop DIR [IMAGE...]}
host="unix://$dir/docker.sock"

case "$command" in
  start)
    if ! command -v runsc >/dev/null 2>&1; then
      echo "gvisor.sh: installing Debian's runsc" >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >&2
    fi
    mkdir -p "$dir/data" "$dir/exec"
    cat >"$dir/daemon.json" <<JSON
{
  "runtimes": {
    "runsc": { "path": "$(command -v runsc)", "runtimeArgs": ["--network=none"] }
  }
}
JSON
    nohup dockerd --config-file "$dir/daemon.json" -H "$host" \
      --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
      --bridge=none --iptables=false --ip-masq=false \
      >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
      if DOCKER_HOST=$host docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        echo "gvisor.sh: engine up at $host (log: $dir/dockerd.log)" >&2
        echo "$host"
        exit 0
      fi
      sleep 1
    done
    echo "gvisor.sh: dockerd did not answer within 60 s; its log:" >&2
    tail -n 50 "$dir/dockerd.log" >&2
    exit 1
    ;;
  load)
    shift 2
    for image in "$@"; do
      docker save "$image" | DOCKER_HOST=$host docker load -q >&2
    done
    ;;
  stop)
    if [ -f "$dir/docker.pid" ]; then
      pid=$(cat "$dir/docker.pid")
      DOCKER_HOST=$host docker ps -aq | xargs -r env DOCKER_HOST="$host" docker rm -f >/dev/null 2>&1 || true
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    # Mounts the engine left behind would keep the data root busy.
    grep " $dir/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$dir"
    ;;
  *)
    echo "gvisor.sh: unknown command $command (start, load or stop)" >&2
    exit 2
    ;;
esac

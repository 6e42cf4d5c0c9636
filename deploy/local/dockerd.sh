#!/usr/bin/env bash
# dockerd from Debian's docker.io, private to the project: its own socket, data root and exec root,
# started with --bridge=none --iptables=false so no container ever gets a route over a docker bridge.
# Also installs bubblewrap (the daemonless sandbox provider) and debootstrap (test images).
# usage: dockerd.sh up|down|status
SERVICE=dockerd
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DIR="$AF_STATE_DIR/dockerd"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
DATA_ROOT="$AF_CACHE_DIR/docker"   # cached: imported test images survive a restart

ready() { DOCKER_HOST="unix://$SOCK" docker version --format '{{.Server.Version}}'; }

up() {
  apt_install docker.io bubblewrap debootstrap
  if pid_alive "$PIDFILE" && ready >/dev/null 2>&1; then log "already running at unix://$SOCK"; return 0; fi
  mkdir -p "$DIR" "$DATA_ROOT"
  log "starting dockerd (unix://$SOCK)"
  start_service "$PIDFILE" "$DIR/dockerd.log" 60 ready -- /usr/sbin/dockerd --host "unix://$SOCK" \
    --data-root "$DATA_ROOT" --exec-root "$DIR/exec" --pidfile "$PIDFILE.daemon" --bridge=none --iptables=false \
    --ip6tables=false --ip-masq=false --userland-proxy=false
  log "ready"
}

down() { stop_pid "$PIDFILE"; log "stopped"; }

status() {
  if pid_alive "$PIDFILE" && ready >/dev/null 2>&1; then
    echo "dockerd	unix://$SOCK	healthy"
  else
    echo "dockerd	unix://$SOCK	down"; return 1
  fi
}

"${1:-status}"

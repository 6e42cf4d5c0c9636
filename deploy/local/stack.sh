#!/usr/bin/env bash
# The whole local stack: Kafka, PostgreSQL, dockerd (+ bubblewrap) and the sandbox image. Idempotent.
# usage: stack.sh up|down|status
SERVICE=stack
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$(dirname "${BASH_SOURCE[0]}")"
SERVICES=(kafka postgres dockerd seaweedfs)

case "${1:-status}" in
  up) for s in "${SERVICES[@]}"; do "$HERE/$s.sh" up; done
      "$HERE/rootfs.sh" image ;;  # the sandbox image (bwrap root + docker image), cached
  down) for ((i=${#SERVICES[@]}-1; i>=0; i--)); do "$HERE/${SERVICES[i]}.sh" down; done
        unmount_under "$AF_STATE_DIR" ;;  # what sandboxes left mounted in the state dir
  status) rc=0; for s in "${SERVICES[@]}"; do "$HERE/$s.sh" status || rc=1; done; exit $rc ;;
  *) die "usage: stack.sh up|down|status" ;;
esac

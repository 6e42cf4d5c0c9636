#!/usr/bin/env bash
# The sandbox root filesystem for tests: debootstrap --variant=minbase bookworm + python3
# python-is-python3 git ca-certificates ripgrep, built once and cached. The same directory is
# bubblewrap's root; `docker import` turns it into the image astraforge/sandbox:bookworm.
# (Production images are built from deploy/docker/sandbox.Dockerfile instead.)
# usage: rootfs.sh build|image|path
SERVICE=rootfs
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOTFS="$AF_CACHE_DIR/rootfs-bookworm"
IMAGE="astraforge/sandbox:bookworm"
PACKAGES="python3,python-is-python3,git,ca-certificates,ripgrep"

build() {
  [ -f "$ROOTFS/.complete" ] && return 0
  apt_install debootstrap
  local mirror
  mirror="$("$(dirname "${BASH_SOURCE[0]}")/apt_mirror.sh")" || die "no Debian mirror found in the apt sources"
  log "debootstrap bookworm minbase from the configured apt mirror (about a minute, cached)"
  rm -rf "$ROOTFS.tmp"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS.tmp" "$mirror" >"$AF_CACHE_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed: $(tail -n 5 "$AF_CACHE_DIR/debootstrap.log")"
  # the sandbox user (uid 1000) and its mount points; nothing else in the root is writable
  chroot "$ROOTFS.tmp" /usr/sbin/useradd -u 1000 -m -d /home/sandbox -s /bin/bash sandbox
  mkdir -p "$ROOTFS.tmp/workspace" "$ROOTFS.tmp/run/astraforge" "$ROOTFS.tmp/opt/astraforge"
  rm -rf "$ROOTFS.tmp/var/cache/apt/archives"/*.deb "$ROOTFS.tmp/var/lib/apt/lists"/*
  touch "$ROOTFS.tmp/.complete"
  mv "$ROOTFS.tmp" "$ROOTFS"
}

image() {
  build
  local sock="$AF_STATE_DIR/dockerd/docker.sock"
  export DOCKER_HOST="${DOCKER_HOST:-unix://$sock}"
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then return 0; fi
  log "docker import $IMAGE"
  tar -C "$ROOTFS" -c . | docker import --change 'USER 1000:1000' --change 'WORKDIR /workspace' \
    --change 'ENV HOME=/home/sandbox' - "$IMAGE" >/dev/null || die "docker import failed"
}

path() { echo "$ROOTFS"; }

"${1:-build}"

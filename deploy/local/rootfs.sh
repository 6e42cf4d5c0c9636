#!/usr/bin/env bash
# The sandbox root filesystem for tests: debootstrap --variant=minbase bookworm + python3
# python-is-python3 git ca-certificates ripgrep, plus the Codex CLI (the one static binary of the
# npm package @openai/codex, at /usr/local/bin/codex), built once and cached. The same directory is
# bubblewrap's root; `docker import` turns it into the image astraforge/sandbox:bookworm.
# (Production images are built from deploy/docker/sandbox.Dockerfile instead.)
# usage: rootfs.sh build|image|path|codex_binary
SERVICE=rootfs
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOTFS="$AF_CACHE_DIR/rootfs-bookworm"
IMAGE="astraforge/sandbox:bookworm"
PACKAGES="python3,python-is-python3,git,ca-certificates,ripgrep"
# the Codex CLI release in the image (deploy/docker/sandbox.Dockerfile names the same one)
CODEX_VERSION="0.171.0"
CODEX_CACHE="$AF_CACHE_DIR/codex-$CODEX_VERSION"

# codex_binary — the Codex CLI binary, cached: `npm pack` of the platform package alone (its tarball is
# ~170 MB; `npm install` would also fetch the launcher and every other platform's build), of which
# only the static musl binary is kept (~300 MB; no node_modules, no node needed in the sandbox).
codex_binary() {
  [ -x "$CODEX_CACHE/codex" ] && return 0
  command -v npm >/dev/null || apt_install npm
  log "fetching the Codex CLI $CODEX_VERSION (npm pack @openai/codex@$CODEX_VERSION-linux-x64, cached)"
  rm -rf "$CODEX_CACHE.tmp" && mkdir -p "$CODEX_CACHE.tmp"
  (cd "$CODEX_CACHE.tmp" && npm pack --silent "@openai/codex@$CODEX_VERSION-linux-x64" >/dev/null) \
    || die "npm pack @openai/codex@$CODEX_VERSION-linux-x64 failed"
  tar -xzf "$CODEX_CACHE.tmp"/*.tgz -C "$CODEX_CACHE.tmp" --strip-components=4 \
    package/vendor/x86_64-unknown-linux-musl/bin/codex || die "no codex binary in the npm package"
  rm -f "$CODEX_CACHE.tmp"/*.tgz
  [ "$("$CODEX_CACHE.tmp/codex" --version)" = "codex-cli $CODEX_VERSION" ] || die "the codex binary is not $CODEX_VERSION"
  rm -rf "$CODEX_CACHE" && mv "$CODEX_CACHE.tmp" "$CODEX_CACHE"
}

# with_codex DIR — put the cached binary at DIR/usr/local/bin/codex (a hard link when the cache and
# DIR share a filesystem: no second copy), replacing another release's. A rootfs cached before the
# binary was part of it gets it here, without being built again.
with_codex() {
  local target="$1/usr/local/bin/codex"
  codex_binary
  [ -x "$target" ] && [ "$target" -ef "$CODEX_CACHE/codex" ] && return 0
  [ -x "$target" ] && [ "$("$target" --version 2>/dev/null)" = "codex-cli $CODEX_VERSION" ] && return 0
  ln -f "$CODEX_CACHE/codex" "$target.tmp" 2>/dev/null || cp "$CODEX_CACHE/codex" "$target.tmp"
  mv -f "$target.tmp" "$target"
}

build() {
  if [ -f "$ROOTFS/.complete" ]; then with_codex "$ROOTFS"; return 0; fi
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
  with_codex "$ROOTFS.tmp"
  touch "$ROOTFS.tmp/.complete"
  mv "$ROOTFS.tmp" "$ROOTFS"
}

image() {
  build
  local sock="$AF_STATE_DIR/dockerd/docker.sock"
  export DOCKER_HOST="${DOCKER_HOST:-unix://$sock}"
  # an image imported before the rootfs had the Codex CLI (or had another release) is imported again
  local codex
  codex="$(docker image inspect --format '{{ index .Config.Labels "astraforge.codex" }}' "$IMAGE" 2>/dev/null)" || codex=""
  [ "$codex" = "$CODEX_VERSION" ] && return 0
  log "docker import $IMAGE"
  tar -C "$ROOTFS" -c . | docker import --change 'USER 1000:1000' --change 'WORKDIR /workspace' \
    --change 'ENV HOME=/home/sandbox' --change "LABEL astraforge.codex=$CODEX_VERSION" - "$IMAGE" >/dev/null \
    || die "docker import failed"
}

path() { echo "$ROOTFS"; }

"${1:-build}"

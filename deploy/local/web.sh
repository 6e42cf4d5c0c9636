#!/usr/bin/env bash
# The web UI (web/): its npm dependencies are cached by the hash of web/package-lock.json and its build
# by the hash of its sources, both under $AF_CACHE_DIR/web, so a second run (or CI on the same
# machine) installs and builds nothing; Chromium from Debian for the end-to-end tests (no download).
# A server of a build holds a shared flock on its directory for as long as it runs (`make run` does:
# `flock -so <dir> astraforge serve`; the e2e tests too), and pruning old builds never removes a
# directory someone holds, nor one of the newest $KEEP (a cache hit counts as new: it is touched).
# usage: web.sh build   -> prints the built directory (serve it: ASTRAFORGE_WEB_DIST=<dir>)
#        web.sh prune   -> removes old builds no server holds (build does it after building)
#        web.sh unit    -> the vitest unit tests
#        web.sh browser -> installs Debian's chromium when missing, prints its path
SERVICE=web
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
WEB="$AF_ROOT/web"
CACHE="$AF_CACHE_DIR/web"
KEEP="${ASTRAFORGE_WEB_KEEP_BUILDS:-5}"
mkdir -p "$CACHE"
export npm_config_cache="$CACHE/npm" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

# one builder at a time per cache (helpers and CI may share it)
exec 9>"$CACHE/.lock"
flock 9

deps() {
  command -v npm >/dev/null || apt_install nodejs npm
  local hash dir
  hash="$(sha256sum "$WEB/package-lock.json" | cut -c1-16)"
  dir="$CACHE/deps-$hash"
  if [ ! -f "$dir/.done" ]; then
    log "installing the UI's npm dependencies (package-lock.json $hash)"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    cp "$WEB/package.json" "$WEB/package-lock.json" "$dir.tmp/"
    (cd "$dir.tmp" && npm ci --no-progress --loglevel=error >&2) || die "npm ci failed"
    rm -rf "$dir" && mv "$dir.tmp" "$dir" && touch "$dir/.done"
  fi
  # a checkout's node_modules is a link to the cached tree (a real directory, a developer's, is left as is)
  if [ -L "$WEB/node_modules" ] || [ ! -e "$WEB/node_modules" ]; then
    ln -sfn "$dir/node_modules" "$WEB/node_modules"
  fi
}

sources_hash() {
  (cd "$WEB" && find . \( -name node_modules -o -name dist -o -name test-results \) -prune -o -type f -print \
    | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum | cut -c1-16)
}

build() {
  deps
  local out
  out="$CACHE/dist-$(sources_hash)"
  if [ ! -f "$out/index.html" ]; then
    log "building the UI into $out"
    rm -rf "$out.tmp"
    (cd "$WEB" && ASTRAFORGE_WEB_OUT="$out.tmp" npm run --silent build >&2) || die "the UI's build failed"
    rm -rf "$out" && mv "$out.tmp" "$out"
    prune
  else
    touch "$out" # used again: the newest, so a prune by the next build keeps it
  fi
  echo "$out"
}

# Removes the builds past the $KEEP newest that no server holds (a held one answers flock -n with a failure).
prune() {
  local dir
  while IFS= read -r dir; do
    flock -xn "$dir" rm -rf "$dir" || log "kept $dir: a server holds it"
  done < <(ls -1dt "$CACHE"/dist-* 2>/dev/null | grep -v '\.tmp$' | tail -n +$((KEEP + 1)))
}

case "${1:-build}" in
  build) build ;;
  prune) prune ;;
  unit) deps; cd "$WEB" && npx vitest run ;;
  browser) command -v chromium >/dev/null || apt_install chromium; command -v chromium ;;
  *) die "usage: web.sh build|prune|unit|browser" ;;
esac

# Shared helpers for the local stack scripts. Sourced, not run.
# Every service keeps its data, log and pid under $AF_STATE_DIR/<service>; downloads are cached
# under $AF_CACHE_DIR so a second cold start of the stack does not fetch anything again.
set -Eeuo pipefail
# Any command that fails names itself: a stack script never stops without saying which step broke.
# (a function's deliberate `return 1`, e.g. `status` of a stopped service, is an answer, not a failure)
trap 'rc=$?; [[ $BASH_COMMAND == return* ]] || printf "\033[1;31m[%s] error:\033[0m step %s failed (exit %s) at %s:%s: %s\n" "${SERVICE:-stack}" "${FUNCNAME[0]:-main}" "$rc" "$(basename "${BASH_SOURCE[0]:-$0}")" "$LINENO" "$BASH_COMMAND" >&2' ERR

AF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
AF_STATE_DIR="${ASTRAFORGE_STATE_DIR:-$AF_ROOT/.local}"
# root (the normal case: the stack installs packages) caches in /var/cache so the sandbox rootfs is
# reachable by the unprivileged uid bubblewrap runs as; /root is private.
if [ "$(id -u)" -eq 0 ]; then AF_DEFAULT_CACHE=/var/cache/astraforge; else AF_DEFAULT_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/astraforge"; fi
AF_CACHE_DIR="${ASTRAFORGE_CACHE_DIR:-$AF_DEFAULT_CACHE}"
mkdir -p "$AF_STATE_DIR" "$AF_CACHE_DIR"
# the sandbox rootfs lives in the cache and unprivileged sandbox uids (bwrap) must reach it: a cache
# dir made by `mktemp -d` is 0700, so let others traverse it (they list and read nothing else there)
[ "$(id -u)" -eq 0 ] && chmod o+x "$AF_CACHE_DIR"

log() { printf '\033[1;34m[%s]\033[0m %s\n' "${SERVICE:-stack}" "$*" >&2; }
die() { printf '\033[1;31m[%s] error:\033[0m %s\n' "${SERVICE:-stack}" "$*" >&2; exit 1; }

# apt_install PKG... — installs Debian packages that are missing (updates the index once per run).
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install ${missing[*]}"
  log "installing ${missing[*]} (apt-get)"
  if [ ! -f "$AF_STATE_DIR/.apt-updated" ] || [ -n "$(find "$AF_STATE_DIR/.apt-updated" -mmin +720)" ]; then
    apt-get update -qq >&2 && touch "$AF_STATE_DIR/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
}

# proc_start PID — when PID started (clock ticks since boot: /proc/PID/stat field 22), empty if it is
# gone or has exited (a zombie).
proc_start() {
  [ -r "/proc/$1/stat" ] && sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '$1 != "Z" { print $20 }'
}

# write_pid FILE PID — remember PID with its start time: pids are reused (pid_max is 32768 here and a
# test run starts more processes than that), so a pid alone may name someone else's process later.
write_pid() { echo "$2 $(proc_start "$2")" > "$1"; }

# pid_alive FILE — true when FILE names a process that still runs: same pid *and* same start time.
pid_alive() {
  local pid started
  [ -f "$1" ] || return 1
  read -r pid started < "$1" || return 1
  [ -n "$pid" ] && [ -n "$started" ] && [ "$(proc_start "$pid")" = "$started" ]
}

# stop_pid FILE — TERM the process we started (by its pid, checked against its start time), then KILL
# after 20 s.
stop_pid() {
  local file="$1" pid
  pid_alive "$file" || { rm -f "$file"; return 0; }
  read -r pid _ < "$file"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do pid_alive "$file" || break; sleep 0.1; done
  pid_alive "$file" && kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

# unmount_under DIR — lazily unmount every mount below DIR, deepest first: the read-only tmpfs and
# overlay mounts made for bwrap sandboxes outlive the processes that used them, and a checkout holding
# them cannot be deleted ("Read-only file system", "Device or resource busy").
unmount_under() {
  local dir
  dir="$(cd "$1" 2>/dev/null && pwd -P)" || return 0
  findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

# wait_for SECONDS DESCRIPTION CMD... — polls CMD until it succeeds or the time is up.
wait_for() {
  local seconds="$1" what="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# start_service PIDFILE LOG SECONDS READY_FN -- CMD... — start CMD detached (its own session, output
# to LOG), then wait for READY_FN; on a timeout show the log's tail, stop it and fail.
start_service() {
  local pidfile="$1" logfile="$2" seconds="$3" ready_fn="$4"
  shift 5
  setsid "$@" >"$logfile" 2>&1 < /dev/null &
  write_pid "$pidfile" $!
  if ! wait_for "$seconds" "$SERVICE" "$ready_fn"; then
    tail -n 30 "$logfile" >&2
    stop_pid "$pidfile"
    die "$SERVICE did not become ready within $seconds s (log: $logfile)"
  fi
}

# secret NAME — prints the secret kept in $AF_SECRETS/NAME, generating it on first use (32 random
# bytes as hex: safe inside URLs, JAAS and SQL literals). The directory is 0700, the file 0600; the
# value is never logged (astraforge/config.py reads the same files, lazily, in development).
AF_SECRETS="$AF_STATE_DIR/secrets"
secret() {
  local file="$AF_SECRETS/$1"
  if [ ! -s "$file" ]; then
    (umask 077 && mkdir -p "$AF_SECRETS" && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$file.tmp" && mv "$file.tmp" "$file") \
      || die "could not write $file"
    log "generated $file"
  fi
  chmod 700 "$AF_SECRETS" && chmod 600 "$file"
  cat "$file"
}

# port_open HOST PORT — a TCP connect succeeds.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

#!/usr/bin/env bash
# PostgreSQL from Debian, one cluster in a project-local data directory, listening on 127.0.0.1
# and a unix socket beside the data. Creates the `astraforge` role and database (trust auth on
# loopback only: this is a developer/test cluster, never a production one).
# usage: postgres.sh up|down|status
SERVICE=postgres
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PG_PORT="${ASTRAFORGE_PG_PORT:-15432}"
PIDFILE_OWN="$AF_STATE_DIR/postgres.started"

pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$dir" ] || return 1
  echo "$dir"
}

# The server refuses to run as root, so it runs as the `postgres` user; that user must be able
# to reach the data directory. A checkout under a private home directory gets /var/tmp instead.
data_dir() {
  local dir="$AF_STATE_DIR/postgres"
  if ! runuser -u postgres -- test -x "$AF_STATE_DIR" 2>/dev/null; then
    dir="/var/tmp/astraforge-$(echo "$AF_STATE_DIR" | md5sum | cut -c1-8)/postgres"
  fi
  echo "$dir"
}

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

ready() { as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

up() {
  pg_bin >/dev/null || apt_install postgresql
  BIN="$(pg_bin)" || die "no PostgreSQL binaries after install"
  DATA="$(data_dir)"
  if [ -f "$DATA/postmaster.pid" ] && ready; then log "already running on 127.0.0.1:$PG_PORT"; return 0; fi
  port_open 127.0.0.1 "$PG_PORT" && die "port $PG_PORT is taken by another process"
  mkdir -p "$DATA"
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$(dirname "$DATA")"
  chmod 700 "$DATA"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initdb in $DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DATA/../initdb.log" 2>&1 \
      || die "initdb failed: $(tail -n 5 "$DATA/../initdb.log")"
  fi
  rm -f "$DATA/postmaster.pid"
  log "starting on 127.0.0.1:$PG_PORT"
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/../postgres.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$DATA -c max_connections=200 \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB" >/dev/null \
    || die "pg_ctl start failed: $(tail -n 5 "$DATA/../postgres.log")"
  wait_for 30 postgres ready || die "PostgreSQL not ready within 30 s"
  as_pg "$BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SELECT 'CREATE ROLE astraforge LOGIN SUPERUSER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname='astraforge')\gexec
SELECT 'CREATE DATABASE astraforge OWNER astraforge' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname='astraforge')\gexec
SQL
  echo "$DATA" > "$PIDFILE_OWN"
  log "ready"
}

down() {
  BIN="$(pg_bin)" || return 0
  DATA="$(data_dir)"
  [ -f "$DATA/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
  rm -f "$PIDFILE_OWN"
  log "stopped"
}

status() {
  BIN="$(pg_bin)" || { echo "postgres	127.0.0.1:$PG_PORT	not installed"; return 1; }
  if ready; then echo "postgres	127.0.0.1:$PG_PORT	healthy"; else echo "postgres	127.0.0.1:$PG_PORT	down"; return 1; fi
}

"${1:-status}"

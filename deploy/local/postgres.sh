#!/usr/bin/env bash
# PostgreSQL from Debian, one cluster in a project-local data directory, listening on 127.0.0.1
# and a unix socket inside the data directory.
#
# Authentication (rewritten on every `up`, so a cluster initialised with trust auth is upgraded in
# place and reloaded):
# - the application role `astraforge` is not a superuser (NOSUPERUSER NOCREATEROLE NOCREATEDB
#   NOREPLICATION NOBYPASSRLS); it owns its database, so it can create the per-session schemas
#   the projector and the tests use, and nothing else. It logs in with a SCRAM-SHA-256 password,
#   on the socket and on loopback alike, generated at first start into
#   $AF_STATE_DIR/secrets/postgres-app.password (0600);
# - the `postgres` superuser has no password and is refused over TCP: it is reachable only by
#   peer auth on the unix socket, whose directory (the data directory, 0700) only the server's OS
#   user can enter. Only this script administers the cluster, so a superuser password would be one
#   more secret to leak for no use, and something that reaches 127.0.0.1 (a sandbox, a tenant) has
#   no superuser to guess at;
# - any other role or database has no pg_hba entry and is refused.
# Not protected: root on the host (it can read the secrets and become `postgres`). This is a
# developer/test cluster: fsync is off.
# usage: postgres.sh up|down|status
SERVICE=postgres
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PG_PORT="${ASTRAFORGE_PG_PORT:-15432}"
PIDFILE_OWN="$AF_STATE_DIR/postgres.started"
APP_ROLE=astraforge

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
server_user() { if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi; }

ready() { as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

# psql as the superuser over the unix socket (peer auth; trust on a cluster not yet upgraded).
admin_psql() { as_pg "$BIN/psql" -q -X -h "$DATA" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# scram_verifier FILE — a SCRAM-SHA-256 verifier of the password in FILE, computed here so the
# server (and its log) only ever sees the verifier, never the password itself.
scram_verifier() {
  python3 - "$1" <<'PY'
import base64, hashlib, hmac, os, sys
password = open(sys.argv[1]).read().strip().encode()
salt, iterations = os.urandom(16), 4096
salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
server_key = hmac.new(salted, b"Server Key", "sha256").digest()
b64 = lambda b: base64.b64encode(b).decode()
print(f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}")
PY
}

write_hba() {
  local owner
  owner="$(server_user)"
  cat > "$DATA/pg_hba.conf" <<HBA
# Written by deploy/local/postgres.sh on every \`up\` (edits are overwritten). First match wins;
# a connection that matches no line is refused.
# TYPE  DATABASE     USER         ADDRESS        METHOD
local   all          postgres                    peer map=admin
local   $APP_ROLE   $APP_ROLE                 scram-sha-256
host    $APP_ROLE   $APP_ROLE    127.0.0.1/32   scram-sha-256
host    $APP_ROLE   $APP_ROLE    ::1/128        scram-sha-256
HBA
  printf '# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\nadmin  %s  postgres\n' "$owner" > "$DATA/pg_ident.conf"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DATA/pg_hba.conf" "$DATA/pg_ident.conf"
  chmod 600 "$DATA/pg_hba.conf" "$DATA/pg_ident.conf"
}

# Idempotent: passwords, role attributes, ownership, pg_hba; then a reload (no restart, so the
# sessions already open stay; they keep no superuser rights once the role is demoted).
secure() {
  local verifier
  secret postgres-app.password >/dev/null
  verifier="$(scram_verifier "$AF_SECRETS/postgres-app.password")" || die "could not compute the SCRAM verifier (python3)"
  write_hba
  admin_psql >/dev/null <<SQL || die "could not configure the roles (see $DATA/../postgres.log)"
ALTER SYSTEM SET password_encryption = 'scram-sha-256';
SELECT 'CREATE ROLE $APP_ROLE LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_ROLE')\\gexec
ALTER ROLE $APP_ROLE LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS PASSWORD '$verifier';
ALTER ROLE postgres PASSWORD NULL;
SELECT 'CREATE DATABASE $APP_ROLE OWNER $APP_ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$APP_ROLE')\\gexec
ALTER DATABASE $APP_ROLE OWNER TO $APP_ROLE;
REVOKE ALL ON DATABASE $APP_ROLE FROM PUBLIC;
SELECT pg_reload_conf();
SQL
}

up() {
  pg_bin >/dev/null || apt_install postgresql
  BIN="$(pg_bin)" || die "no PostgreSQL binaries after install"
  DATA="$(data_dir)"
  if [ -f "$DATA/postmaster.pid" ] && ready; then
    secure
    log "already running on 127.0.0.1:$PG_PORT (authentication checked)"
    return 0
  fi
  port_open 127.0.0.1 "$PG_PORT" && die "port $PG_PORT is taken by another process"
  mkdir -p "$DATA"
  touch "$DATA/../postgres.log"
  # the server's user gets its data directory and log, not the whole state dir (the secrets stay root's)
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$DATA" "$DATA/../postgres.log"
  chmod 700 "$DATA"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initdb in $DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
      >"$DATA/../initdb.log" 2>&1 || die "initdb failed: $(tail -n 5 "$DATA/../initdb.log")"
  fi
  write_hba  # before the first start: the server never runs with the old rules
  rm -f "$DATA/postmaster.pid"
  log "starting on 127.0.0.1:$PG_PORT"
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/../postgres.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$DATA -c max_connections=200 \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB" >/dev/null \
    || die "pg_ctl start failed: $(tail -n 5 "$DATA/../postgres.log")"
  wait_for 30 postgres ready || die "PostgreSQL not ready within 30 s"
  secure
  echo "$DATA" > "$PIDFILE_OWN"
  log "ready (role $APP_ROLE, password in $AF_SECRETS/postgres-app.password)"
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

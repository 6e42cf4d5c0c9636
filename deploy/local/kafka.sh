#!/usr/bin/env bash
# Apache Kafka 4.x, single-node KRaft (broker + controller in one JVM) on 127.0.0.1.
# Jars come from Maven Central through deploy/local/kafka/pom.xml and are cached.
#
# Authentication (no listener accepts an unauthenticated client):
# - the client listener speaks SASL: the platform's user `astraforge` logs in with SCRAM-SHA-512
#   (its password: $AF_STATE_DIR/secrets/kafka-app.password, 0600, generated at first start);
# - the broker's own identity `admin` (inter-broker and broker -> controller) uses SASL/PLAIN with
#   a password kept in server.properties (0600) and $AF_STATE_DIR/secrets/kafka-admin.password.
#   PLAIN users live in the broker's config, not in the cluster metadata, so they work on any
#   store; this script uses `admin` to add the SCRAM user after every start where it is missing
#   or its password changed. That one path serves a fresh store and an existing dev store alike
#   (no re-format, no data lost), and no password ever appears on a command line (StorageTool's
#   --add-scram would take it as an argument, readable by every local user in /proc);
# - the controller listener stays on loopback and also requires `admin` (PLAIN): unauthenticated,
#   it would let anyone on 127.0.0.1 rewrite broker configs (e.g. a listener's JAAS users).
# A changed server.properties (first start after this upgrade, new ports) restarts a running broker.
# Not protected: no ACLs (one application principal), no TLS (loopback only); root on the host.
# usage: kafka.sh up|down|status
SERVICE=kafka
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KAFKA_VERSION="4.1.1"
KAFKA_PORT="${ASTRAFORGE_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${ASTRAFORGE_KAFKA_CONTROLLER_PORT:-19093}"
LIBS="$AF_CACHE_DIR/kafka-$KAFKA_VERSION/libs"
DIR="$AF_STATE_DIR/kafka"
PIDFILE="$DIR/kafka.pid"

fetch_jars() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || apt_install maven
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  log "fetching Kafka $KAFKA_VERSION jars (mvn, cached in $LIBS)"
  rm -rf "$LIBS"
  mvn -q -B -f "$AF_ROOT/deploy/local/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$LIBS" -DincludeScope=runtime >&2 || die "mvn could not fetch the Kafka jars"
  touch "$LIBS/.complete"
}

APP_USER=astraforge
ADMIN_USER=admin
MECHANISM=SCRAM-SHA-512

# write_config FILE ADMIN_PASSWORD — the broker's configuration (0600: it holds the admin password).
write_config() {
  local file="$1" admin="$2"
  local plain="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$ADMIN_USER\" password=\"$admin\" user_$ADMIN_USER=\"$admin\";"
  mkdir -p "$DIR/data"
  chmod 700 "$DIR"  # the records of every tenant, the admin password: the broker's user only
  (umask 077 && cat > "$file") <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
listeners=CLIENT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=CLIENT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT
inter.broker.listener.name=CLIENT
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.client.sasl.enabled.mechanisms=$MECHANISM,PLAIN
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.client.plain.sasl.jaas.config=$plain
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=$plain
log.dirs=$DIR/data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
}

ready() { port_open 127.0.0.1 "$KAFKA_PORT" && grep -q "Kafka Server started" "$DIR/kafka.log"; }

# ensure_app_user ADMIN_PASSWORD — the SCRAM user the platform logs in as, with the password in
# the state dir. Skipped when this password was already set on this store (marker: its sha256).
ensure_app_user() {
  local admin="$1" marker="$DIR/scram-user.sha256" want
  secret kafka-app.password >/dev/null
  want="$(sha256sum < "$AF_SECRETS/kafka-app.password" | cut -d' ' -f1)"
  [ "$(cat "$marker" 2>/dev/null)" = "$want" ] && return 0
  log "setting the SCRAM credential of user $APP_USER"
  (umask 077
   printf 'security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="%s" password="%s";\nrequest.timeout.ms=10000\ndefault.api.timeout.ms=20000\n' \
     "$ADMIN_USER" "$admin" > "$DIR/admin.properties"
   printf '%s=password=%s\n' "$MECHANISM" "$(cat "$AF_SECRETS/kafka-app.password")" > "$DIR/scram-user.properties")
  local ok=""
  for _ in 1 2 3; do
    if java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$AF_ROOT/deploy/local/kafka/log4j2.yaml" \
      -cp "$LIBS/*" kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
      --command-config "$DIR/admin.properties" --alter --entity-type users --entity-name "$APP_USER" \
      --add-config-file "$DIR/scram-user.properties" >"$DIR/scram-user.log" 2>&1; then ok=1; break; fi
    sleep 2
  done
  rm -f "$DIR/scram-user.properties"
  [ -n "$ok" ] || die "could not set the SCRAM credential: $(tail -n 5 "$DIR/scram-user.log")"
  echo "$want" > "$marker"
}

up() {
  fetch_jars
  local admin
  admin="$(secret kafka-admin.password)"
  write_config "$DIR/server.properties.next" "$admin"
  if pid_alive "$PIDFILE"; then
    if cmp -s "$DIR/server.properties.next" "$DIR/server.properties"; then
      rm -f "$DIR/server.properties.next"
      ensure_app_user "$admin"
      log "already running on 127.0.0.1:$KAFKA_PORT"
      return 0
    fi
    log "the broker's configuration changed (SASL/SCRAM on the client listener, ports): restarting it"
    stop_pid "$PIDFILE"
  fi
  port_open 127.0.0.1 "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process"
  mv "$DIR/server.properties.next" "$DIR/server.properties"
  local cp="$LIBS/*"
  if [ ! -f "$DIR/data/meta.properties" ]; then
    rm -f "$DIR/scram-user.sha256"
    log "formatting KRaft storage"
    java -cp "$cp" -Dlog4j2.configurationFile="$AF_ROOT/deploy/local/kafka/log4j2.yaml" \
      kafka.tools.StorageTool format --standalone -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      -c "$DIR/server.properties" >"$DIR/format.log" 2>&1 || die "storage format failed: $(tail -n 5 "$DIR/format.log")"
  fi
  log "starting broker on 127.0.0.1:$KAFKA_PORT"
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
  # GC flags: KAFKA_GC_OPTS overrides them (e.g. a second broker on other ports for experiments;
  # add -Xlog:gc:file=... to see its pauses)
  KAFKA_GC_OPTS="${KAFKA_GC_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20}"
  # shellcheck disable=SC2086
  start_service "$PIDFILE" "$DIR/kafka.log" 90 ready -- java $KAFKA_HEAP_OPTS $KAFKA_GC_OPTS \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$AF_ROOT/deploy/local/kafka/log4j2.yaml" \
    -cp "$cp" kafka.Kafka "$DIR/server.properties"
  ensure_app_user "$admin"
  log "ready (SASL $MECHANISM user $APP_USER, password in $AF_SECRETS/kafka-app.password)"
}

down() { stop_pid "$PIDFILE"; log "stopped"; }

status() {
  if pid_alive "$PIDFILE" && port_open 127.0.0.1 "$KAFKA_PORT"; then
    echo "kafka	127.0.0.1:$KAFKA_PORT	healthy"
  else
    echo "kafka	127.0.0.1:$KAFKA_PORT	down"; return 1
  fi
}

"${1:-status}"

#!/usr/bin/env bash
# Apache Kafka 4.x, single-node KRaft (broker + controller in one JVM) on 127.0.0.1.
# Jars come from Maven Central through deploy/local/kafka/pom.xml and are cached.
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

write_config() {
  mkdir -p "$DIR/data"
  cat > "$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
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

up() {
  if pid_alive "$PIDFILE"; then log "already running on 127.0.0.1:$KAFKA_PORT"; return 0; fi
  port_open 127.0.0.1 "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process"
  fetch_jars
  write_config
  local cp="$LIBS/*"
  if [ ! -f "$DIR/data/meta.properties" ]; then
    log "formatting KRaft storage"
    java -cp "$cp" -Dlog4j2.configurationFile="$AF_ROOT/deploy/local/kafka/log4j2.yaml" \
      kafka.tools.StorageTool format --standalone -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      -c "$DIR/server.properties" >"$DIR/format.log" 2>&1 || die "storage format failed: $(tail -n 5 "$DIR/format.log")"
  fi
  log "starting broker on 127.0.0.1:$KAFKA_PORT"
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
  # shellcheck disable=SC2086
  start_service "$PIDFILE" "$DIR/kafka.log" 90 ready -- java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$AF_ROOT/deploy/local/kafka/log4j2.yaml" \
    -cp "$cp" kafka.Kafka "$DIR/server.properties"
  log "ready"
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

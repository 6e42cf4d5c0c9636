"""The local stack seen by an attacker who reached its ports: PostgreSQL and Kafka must refuse them.

Issue 6 item 4 was a sandbox reaching 127.0.0.1:15432 through the egress proxy and finding trust
auth and a superuser role (every tenant's API keys readable, a forged key row inserted); Kafka
answered any client on every topic. The proxy now refuses loopback; these tests prove the layer
behind it (item 5): whoever reaches the ports without the platform's credentials gets nothing,
and the platform's own role cannot take over the cluster or the host. They connect from the host,
as any local process could, with stock clients (libpq, librdkafka, Kafka's own admin tool); each
refusal is paired with the same request succeeding with the settings' credentials, so a refusal
cannot come from a wrong address.
"""

import logging
import os
import secrets
import subprocess
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import errors, sql

from astraforge.config import KAFKA_PASSWORD_FILE, POSTGRES_PASSWORD_FILE, Settings
from astraforge.db import connect
from astraforge.errors import DatabaseUnavailable, KafkaUnavailable
from astraforge.kafka import client_config
from astraforge.producers.kafka import EventProducer
from tests.conftest import make_settings
from tests.support import chat

KAFKA_VERSION = "4.1.1"  # deploy/local/kafka.sh
LOG = logging.getLogger("tests.intruder")


@pytest.fixture(autouse=True)
def _no_ambient_password(monkeypatch) -> None:
    """An attacker has no password: make sure libpq does not find ours in the environment."""
    for name in ("PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", "/dev/null")


def stolen(settings: Settings, name: str) -> str:
    """A password of the stack, as someone who stole it would try it elsewhere (random if there is none)."""
    path = settings.state_dir / name
    return path.read_text().strip() if path.exists() else secrets.token_hex(32)


def pg(settings: Settings, **params) -> psycopg.Connection:
    """A raw libpq connection to the stack's PostgreSQL (loopback unless ``host`` says otherwise)."""
    base = {"host": "127.0.0.1", "port": settings.pg_port, "dbname": "astraforge", "user": "astraforge"}
    return psycopg.connect(**{**base, **params}, connect_timeout=5)


# ---------------------------------------------------------------- PostgreSQL


def socket_dir(settings: Settings) -> Path:
    """Where deploy/local/postgres.sh puts the unix socket: the data directory (the role may not ask)."""
    candidates = [settings.state_dir / "postgres", *Path("/var/tmp").glob("astraforge-*/postgres")]
    return next(d for d in candidates if (d / f".s.PGSQL.{settings.pg_port}").exists())


def test_postgres_refuses_a_client_without_the_password_on_loopback_and_on_the_socket(settings) -> None:
    connect(settings).close()  # the platform's credentials work
    for host in ("127.0.0.1", str(socket_dir(settings))):
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            pg(settings, host=host)


def test_postgres_refuses_a_wrong_password(settings) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        pg(settings, password=secrets.token_hex(32))


def test_postgres_superuser_is_not_reachable_over_tcp(settings) -> None:
    app_password = stolen(settings, POSTGRES_PASSWORD_FILE)
    for password in (None, "postgres", app_password):
        for dbname in ("postgres", "astraforge"):
            with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
                pg(settings, user="postgres", dbname=dbname, password=password)
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):  # nor another database
        pg(settings, dbname="postgres", password=app_password)


ESCALATIONS = {
    "read password hashes": "SELECT rolname, rolpassword FROM pg_authid",
    "create a role": "CREATE ROLE {name} LOGIN SUPERUSER PASSWORD 'x'",
    "make itself superuser": "ALTER ROLE astraforge SUPERUSER",
    "create a database": "CREATE DATABASE {name}",
    "run a host program": "COPY (SELECT 1) TO PROGRAM 'id'",
    "read a host file": "SELECT pg_read_file('/etc/passwd')",
    "write a host file": "COPY (SELECT 'x') TO '/tmp/{name}'",
}


@pytest.mark.parametrize("statement", ESCALATIONS.values(), ids=ESCALATIONS.keys())
def test_the_application_role_cannot_escalate(settings, statement: str) -> None:
    name = f"evil_{secrets.token_hex(4)}"
    with connect(settings, autocommit=True) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert not any(role.values()), role
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement.format(name=name))


def test_the_application_role_creates_its_per_session_schemas(settings) -> None:
    schema = f"auth_probe_{secrets.token_hex(4)}"
    with connect(settings, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.t (x int)").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_without_the_password_file_the_error_names_what_is_missing(settings, tmp_path: Path) -> None:
    ports = {"pg_port": settings.pg_port, "kafka_bootstrap": settings.kafka_bootstrap}
    bare = make_settings(state_dir=tmp_path, kafka_timeout_s=2, **ports)
    with pytest.raises(DatabaseUnavailable, match=f"no PostgreSQL password.*{tmp_path / POSTGRES_PASSWORD_FILE}"):
        connect(bare)
    with pytest.raises(KafkaUnavailable, match=f"no Kafka credentials.*{tmp_path / KAFKA_PASSWORD_FILE}"):
        EventProducer(bare)


# ---------------------------------------------------------------- Kafka


def attacker(settings: Settings, **sasl) -> dict:
    """A librdkafka client config the way an intruder would write it: the address, maybe a guess."""
    return {"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 3000, "logger": LOG, **sasl}


def scram(password: str, username: str = "astraforge", mechanism: str = "SCRAM-SHA-512") -> dict:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": username,
        "sasl.password": password,
    }


def guesses(settings: Settings) -> dict[str, dict]:
    app_password = stolen(settings, KAFKA_PASSWORD_FILE)
    return {
        "no SASL": {},
        "wrong SCRAM password": scram(secrets.token_hex(32)),
        "the app password over PLAIN": scram(app_password, mechanism="PLAIN"),
        "the app password as the broker's admin": scram(app_password, username="admin", mechanism="PLAIN"),
    }


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(client_config(settings, **{"group.id": "auth-probe"}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        consumer.close()


def test_kafka_refuses_to_list_topics_without_the_credentials(settings) -> None:
    topics = AdminClient(client_config(settings)).list_topics(timeout=10).topics
    assert settings.events_topic in topics  # the settings' identity sees everything
    for name, guess in guesses(settings).items():
        seen = []
        admin = AdminClient({**attacker(settings, **guess), "error_cb": seen.append})
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=4)
        admin.poll(1)  # serves error_cb
        if guess:  # a SASL client is told why (not merely cut off)
            assert any(e.code() == KafkaError._AUTHENTICATION for e in seen), (name, seen)


def test_kafka_refuses_to_take_or_hand_out_records_without_the_credentials(fresh_settings) -> None:
    settings, topic = fresh_settings, fresh_settings.events_topic  # a quiet topic: nobody else writes to it
    producer = EventProducer(settings)
    producer.append(chat("stream-1", "tenant-a", "a record an intruder would like to read"))
    producer.close()
    before = high_watermarks(settings, topic)
    assert sum(before.values()) == 1
    for name, guess in guesses(settings).items():
        reports: list[KafkaError | None] = []
        intruder = Producer({**attacker(settings, **guess), "message.timeout.ms": 3000})
        intruder.produce(topic, key=b"forged", value=b"forged", on_delivery=lambda err, _, r=reports: r.append(err))
        intruder.flush(10)
        assert len(reports) == 1 and reports[0] is not None, (name, reports)

        reader = Consumer(
            {
                **attacker(settings, **guess),
                "group.id": f"intruder-{secrets.token_hex(4)}",
                "enable.partition.eof": True,
            }
        )
        reader.assign([TopicPartition(topic, p, 0) for p in before])
        try:
            messages = [m for m in (reader.poll(0.5) for _ in range(4)) if m is not None and m.error() is None]
        finally:
            reader.close()
        assert messages == [], name
    assert high_watermarks(settings, topic) == before  # nothing forged got in


def test_kafka_controller_listener_refuses_an_unauthenticated_admin(settings, tmp_path: Path) -> None:
    """Unauthenticated, the controller would let anyone on loopback rewrite broker configs (a listener's
    JAAS users included). Kafka's own admin tool is the attacker here; with the broker's admin identity
    the same request succeeds."""
    libs = settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
    controller = f"127.0.0.1:{os.environ.get('ASTRAFORGE_KAFKA_CONTROLLER_PORT', '19093')}"
    timeouts = "request.timeout.ms=3000\ndefault.api.timeout.ms=6000\n"

    def describe_brokers(client_properties: str) -> subprocess.CompletedProcess:
        config = tmp_path / "client.properties"
        config.write_text(timeouts + client_properties)
        return subprocess.run(
            [
                "java",
                "-Xmx128m",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                f"{libs}/*",
                "kafka.admin.ConfigCommand",
                "--bootstrap-controller",
                controller,
                "--command-config",
                str(config),
                "--describe",
                "--entity-type",
                "brokers",
                "--entity-name",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = describe_brokers("")
    assert refused.returncode != 0, refused.stdout
    admin_password = (settings.state_dir / "secrets" / "kafka-admin.password").read_text().strip()
    allowed = describe_brokers(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security"
        f'.plain.PlainLoginModule required username="admin" password="{admin_password}";\n'
    )
    assert allowed.returncode == 0 and "Dynamic configs for broker 1" in allowed.stdout, allowed.stderr[-2000:]


def test_the_generated_secrets_are_private(settings) -> None:
    secrets_dir = settings.state_dir / "secrets"
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    for name in ("postgres-app.password", "kafka-app.password", "kafka-admin.password"):
        path = secrets_dir / name
        assert path.stat().st_mode & 0o777 == 0o600, name
        assert len(path.read_text().strip()) == 64, name  # 256 random bits

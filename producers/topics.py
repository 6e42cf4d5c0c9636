"""Creates the platform's topics with the brief's configs; safe to call on every start."""

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from astraforge.config import Settings
from astraforge.errors import KafkaUnavailable
from astraforge.kafka import client_config, unavailable

FOREVER = "-1"


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Each topic and its configs. Events and dead letters are the audit log: kept forever."""
    audit = {"cleanup.policy": "delete", "retention.ms": FOREVER, "compression.type": "zstd"}
    return {
        settings.events_topic: audit,
        settings.deadletter_topic: audit,
        settings.commands_topic: {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)},
    }


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; returns the names created. Raises ``KafkaUnavailable`` quickly."""
    admin = admin_client(settings)
    try:
        existing = admin.list_topics(timeout=settings.kafka_timeout_s).topics
    except KafkaException as e:
        raise unavailable(settings, e) from e
    wanted = [
        NewTopic(name, num_partitions=settings.topic_partitions, replication_factor=1, config=config)
        for name, config in topic_configs(settings).items()
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=settings.kafka_timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as e:
            if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise KafkaUnavailable(f"could not create topic {name}: {e}") from e
    return created

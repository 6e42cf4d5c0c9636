"""Creates the platform's topics with the brief's configs; safe to call on every start."""

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from astraforge.config import Settings
from astraforge.errors import KafkaUnavailable
from astraforge.kafka import client_config, unavailable

FOREVER = "-1"
# The broker refuses an events record whose timestamp is older than this. Processors stamp their records
# with the end of their ownership lease minus this window, so a record from an instance that stalled
# past its lease is refused whenever it arrives (``processors/runtime.py``: fencing). Other writers stamp
# the current time: they have this long to deliver (their message timeout is far below it).
FENCE_WINDOW_MS = 60_000
MAX_FENCE_WINDOW_MS = 3_600_000  # a longer window means an unfenced topic (Kafka's default is unbounded)
FENCE = "message.timestamp.before.max.ms"


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Each topic and its configs. Events and dead letters are the audit log: kept forever."""
    audit = {"cleanup.policy": "delete", "retention.ms": FOREVER, "compression.type": "zstd"}
    return {
        settings.events_topic: {**audit, FENCE: str(FENCE_WINDOW_MS)},
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
    if settings.events_topic in existing:
        fence_events_topic(settings, admin)
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


def fence_events_topic(settings: Settings, admin: AdminClient) -> None:
    """Give an events topic created before fencing its fence window (only that config is changed)."""
    entry = ConfigEntry(FENCE, str(FENCE_WINDOW_MS), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.events_topic, incremental_configs=[entry])
    try:
        for future in admin.incremental_alter_configs([resource]).values():
            future.result()
    except KafkaException as e:
        raise KafkaUnavailable(f"could not set {FENCE} on {settings.events_topic}: {e}") from e

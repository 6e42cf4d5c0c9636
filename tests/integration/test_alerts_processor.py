"""The alerts processor's crash behaviour on real Kafka and PostgreSQL: a redelivered alert is not
decided again, and one decided again because its commit was lost (a crash after the records were
appended) decides the same: the same records (event ids) and the same run id, which the run
orchestrator accepts once."""

import secrets

from astraforge.db import connect
from astraforge.integrations import INSERT, Integration, ProjectRoute, new_integration_id, to_row
from astraforge.kafka import partition_for, read_range
from astraforge.processors.alerts.processor import AlertsProcessor
from astraforge.producers import webhooks
from astraforge.producers.alert_payloads import sentry
from astraforge.schemas import default_codec
from astraforge.secretbox import SecretBox
from tests.alert_payloads import event_alert


def test_an_alert_decided_again_after_a_lost_commit_decides_the_same(fresh_settings, tmp_path) -> None:
    settings = fresh_settings.model_copy(update={"repo_allowlist": {"*": [f"{tmp_path}/*.git"]}})
    box = SecretBox.from_settings(settings)
    integration_id = new_integration_id()
    integration = Integration(
        integration_id=integration_id,
        tenant_id=f"t-{secrets.token_hex(4)}",
        kind="sentry",
        name=None,
        api_base_url=None,
        organization=None,
        projects={"calc-service": ProjectRoute(f"{tmp_path}/calc.git")},
        agent="script",
        steps=[{"kind": "shell", "command": "true", "path": None, "content": None}],
        test_command=None,
        writable_paths=[],
        rate_limit_runs=5,
        rate_limit_window_s=3600,
        secret_sealed=box.seal("client-secret-0123456789", f"{integration_id}:secret"),
    )
    with connect(settings, autocommit=True) as conn:
        conn.execute(INSERT, to_row(integration, None))
    (command,) = webhooks.receive(integration, [sentry("event_alert", event_alert("31337"), None)])
    codec = default_codec()
    value = codec.encode(command)
    partition = partition_for(integration_id, settings.topic_partitions)

    processor = AlertsProcessor(settings)  # not started: its handler is driven directly
    try:
        processor.handle(partition, 0, value)
        processor.handle(partition, 0, value)  # redelivered: already decided, nothing written
        with connect(settings, autocommit=True) as conn:  # the crash: the decision's commit is lost
            conn.execute("UPDATE alert_offsets SET next_offset = 0 WHERE consumer = %s", (processor.consumer,))
            conn.execute("DELETE FROM alert_issues WHERE integration_id = %s", (integration_id,))
            conn.execute("DELETE FROM alert_run_starts WHERE integration_id = %s", (integration_id,))
        processor.handle(partition, 0, value)
    finally:
        processor.producer.close()
        processor.runtime.close()
        processor.db.close()

    events = [codec.decode(m.value()) for m in read_range(settings, settings.events_topic, partition, 0, None)]
    decided = [(e.type, e.event_id) for e in events if e.stream_id == integration_id]
    assert [t for t, _ in decided] == ["alert.received", "alert.run_started"] * 2
    assert decided[:2] == decided[2:]  # the same records again: readers can drop the copy by event id
    run_id = next(e for e in events if e.type == "alert.run_started").payload["run_id"]
    creates = [
        codec.decode(m.value())
        for p in range(settings.topic_partitions)
        for m in read_range(settings, settings.commands_topic, p, 0, None)
    ]
    creates = [(e.stream_id, e.event_id) for e in creates if e.type == "run.create"]
    assert len(creates) == 2 and creates[0] == creates[1] and creates[0][0] == run_id


def test_a_started_run_that_never_shows_up_stops_holding_its_issue(settings, projector) -> None:
    """An issue's run whose ``run.create`` never became a run (dead-lettered, say) is ``LOST`` once it
    is ten minutes old: later alerts start a new run instead of attaching to nothing for ever."""
    from astraforge.processors.alerts import store
    from astraforge.processors.alerts.state import LOST

    run_id, now = f"run-{secrets.token_hex(8)}", 1_900_000_000_000_000
    with connect(settings, autocommit=True) as conn:
        store.ensure_schema(conn)
        started = now - (store.UNPROJECTED_LIMIT_S - 1) * 1_000_000
        conn.execute(
            "INSERT INTO alert_run_starts (run_id, integration_id, project, started_at) VALUES (%s, 'i', 'p', %s)",
            (run_id, started),
        )
        assert store.run_state(conn, settings.projection_schema, run_id, now) is None  # may still show up
        assert store.run_state(conn, settings.projection_schema, run_id, now + 2_000_000) == LOST

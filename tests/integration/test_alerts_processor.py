"""The alerts processor's crash behaviour on real Kafka and PostgreSQL: a redelivered alert is not
decided again, and one decided again because its commit was lost (a crash after the records were
appended) decides the same: the same records (event ids) and the same run id, which the run
orchestrator accepts once."""

import secrets

from psycopg import sql

from astraforge.db import connect
from astraforge.integrations import INSERT, Integration, ProjectRoute, new_integration_id, to_row
from astraforge.kafka import partition_for, read_range
from astraforge.processors.alerts.processor import AlertsProcessor, comment_marker
from astraforge.producers import webhooks
from astraforge.producers.alert_payloads import sentry
from astraforge.projections.postgres import create_schema, drop_schema
from astraforge.schemas import default_codec
from astraforge.secretbox import SecretBox
from tests.alert_payloads import event_alert
from tests.issue_api import IssueApiStandIn, issue_api


def stored_integration(settings, tmp_path, api: IssueApiStandIn | None = None) -> Integration:
    """A Sentry integration in the database (its API the stand-in, if given)."""
    box = SecretBox.from_settings(settings)
    integration_id = new_integration_id()
    integration = Integration(
        integration_id=integration_id,
        tenant_id=f"t-{secrets.token_hex(4)}",
        kind="sentry",
        name=None,
        api_base_url=api.url if api else None,
        organization=None,
        projects={"calc-service": ProjectRoute(f"{tmp_path}/calc.git")},
        agent="script",
        steps=[{"kind": "shell", "command": "true", "path": None, "content": None}],
        test_command=None,
        writable_paths=[],
        rate_limit_runs=5,
        rate_limit_window_s=3600,
        secret_sealed=box.seal("client-secret-0123456789", f"{integration_id}:secret"),
        api_token_sealed=box.seal(api.token, f"{integration_id}:api_token") if api else None,
    )
    with connect(settings, autocommit=True) as conn:
        conn.execute(INSERT, to_row(integration, None))
    return integration


def test_an_alert_decided_again_after_a_lost_commit_decides_the_same(fresh_settings, tmp_path) -> None:
    settings = fresh_settings.model_copy(update={"repo_allowlist": {"*": [f"{tmp_path}/*.git"]}})
    integration = stored_integration(settings, tmp_path)
    integration_id = integration.integration_id
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
        processor.close()

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


def test_a_comment_posted_before_a_crash_is_not_posted_again(fresh_settings, tmp_path) -> None:
    """The outcome comment was posted at least once: a crash between the post and its record (the
    ``alert.commented`` record and ``commented_run``) posted it again on the next tick. The comment
    carries a marker unique to the run, and the processor looks for it (past the first page of
    comments) before it posts."""
    with issue_api("sentry", "api-token-0123") as api:
        api.page_size = 2
        settings = fresh_settings.model_copy(update={"alert_api_trusted_hosts": [api.url.removeprefix("http://")]})
        integration = stored_integration(settings, tmp_path, api)
        run_id, issue_id = f"run-{secrets.token_hex(8)}", "4242"
        with connect(settings, autocommit=True) as conn:
            create_schema(conn, settings.projection_schema)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.runs (run_id, tenant_id, state, attempt, reason, created_at, updated_at, "
                    "last_offset) VALUES (%s, %s, 'failed', 1, 'tests failed', now(), now(), 0)"
                ).format(sql.Identifier(settings.projection_schema)),
                (run_id, integration.tenant_id),
            )
        partition = partition_for(integration.integration_id, settings.topic_partitions)
        owned = {integration.integration_id: partition}
        processor = AlertsProcessor(settings)  # not started: its tick's answer step is driven directly
        try:
            processor.db.execute(
                "INSERT INTO alert_issues (integration_id, issue_id, run_id) VALUES (%s, %s, %s)",
                (integration.integration_id, issue_id, run_id),
            )
            processor._answer(owned)
            (posted,) = api.comments(issue_id)
            for i in range(3):  # others comment after it: the marker is on a later page now
                api.add_comment(issue_id, f"a human's note {i}")
            processor.db.execute(  # the crash: neither the record nor commented_run were kept
                "UPDATE alert_issues SET commented_run = NULL WHERE integration_id = %s", (integration.integration_id,)
            )
            processor._answer(owned)
            processor._answer(owned)  # and once recorded, nothing is asked at all
        finally:
            processor.close()
            with connect(settings, autocommit=True) as conn:
                drop_schema(conn, settings.projection_schema)
    assert comment_marker(run_id) in posted and "ended failed: tests failed" in posted
    assert api.comments(issue_id).count(posted) == 1  # posted once
    listed = [r for r in api.requests if r["method"] == "GET" and "/comments/" in r["path"]]
    assert len(listed) == 3  # first answer: one page; after the crash: two pages, the marker on the second
    events = [
        default_codec().decode(m.value()) for m in read_range(settings, settings.events_topic, partition, 0, None)
    ]
    statuses = [e.payload["status"] for e in events if e.type == "alert.commented"]
    assert statuses == [201, 200]  # posted, then found

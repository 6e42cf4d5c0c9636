"""The alerts processor's state in PostgreSQL: per issue its latest run and queued alert, per project
the runs it started (the rate window), per source partition the next offset to handle. A handler
changes them and its offset in one transaction, holding the partition's offset row locked, so two
instances (a rebalance in between) never decide the same partition at once, and an alert already
decided is not decided again.
"""

from typing import Any

from psycopg import Connection, sql
from psycopg.types.json import Jsonb

from astraforge.processors.alerts.state import LOST, IssueState

UNPROJECTED_LIMIT_S = 600  # a started run shows in the projection within seconds; past this it never will

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_issues (
    integration_id text   NOT NULL,
    issue_id       text   NOT NULL,
    run_id         text,               -- the latest remediation run
    generation     integer NOT NULL DEFAULT 0,
    queued_alert   jsonb,              -- an alert waiting for the project's rate window
    queued_at      bigint,
    commented_run  text,               -- the run whose outcome was posted back
    PRIMARY KEY (integration_id, issue_id)
);
CREATE TABLE IF NOT EXISTS alert_run_starts (
    run_id         text   PRIMARY KEY,
    integration_id text   NOT NULL,
    project        text   NOT NULL,
    started_at     bigint NOT NULL     -- micros: the rate window
);
CREATE INDEX IF NOT EXISTS alert_run_starts_window ON alert_run_starts (integration_id, project, started_at);
CREATE TABLE IF NOT EXISTS alert_offsets (
    consumer    text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (consumer, partition)
);
"""


def ensure_schema(conn: Connection) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(4243)")
    conn.execute(SCHEMA)


def lock_partition(conn: Connection, consumer: str, partition: int) -> int:
    """Lock the partition's offset row (created at 0 the first time); the next offset to handle."""
    select = "SELECT next_offset FROM alert_offsets WHERE consumer = %s AND partition = %s FOR UPDATE"
    row = conn.execute(select, (consumer, partition)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO alert_offsets (consumer, partition, next_offset) VALUES (%s, %s, 0) ON CONFLICT DO NOTHING",
            (consumer, partition),
        )
        row = conn.execute(select, (consumer, partition)).fetchone()
    return row["next_offset"]


def handled(conn: Connection, consumer: str, partition: int, offset: int) -> None:
    conn.execute(
        "UPDATE alert_offsets SET next_offset = %s WHERE consumer = %s AND partition = %s",
        (offset + 1, consumer, partition),
    )


def issue(conn: Connection, integration_id: str, issue_id: str) -> IssueState:
    row = conn.execute(
        "SELECT run_id, generation, queued_alert IS NOT NULL AS queued FROM alert_issues "
        "WHERE integration_id = %s AND issue_id = %s",
        (integration_id, issue_id),
    ).fetchone()
    return IssueState(row["run_id"], row["generation"], row["queued"]) if row else IssueState()


def run_state(conn: Connection, projection: str, run_id: str | None, at_us: int) -> str | None:
    """The run's projected state; None while it may still show up; ``LOST`` once it was started longer
    than ``UNPROJECTED_LIMIT_S`` ago and never did (its ``run.create`` never became a run: the issue
    must not wait on it for ever)."""
    if run_id is None:
        return None
    row = conn.execute(
        sql.SQL("SELECT state FROM {}.runs WHERE run_id = %s").format(sql.Identifier(projection)), (run_id,)
    ).fetchone()
    if row:
        return row["state"]
    started = conn.execute("SELECT started_at FROM alert_run_starts WHERE run_id = %s", (run_id,)).fetchone()
    if started and at_us - started["started_at"] > UNPROJECTED_LIMIT_S * 1_000_000:
        return LOST
    return None


def starts(conn: Connection, integration_id: str, project: str, since_us: int) -> list[int]:
    rows = conn.execute(
        "SELECT started_at FROM alert_run_starts WHERE integration_id = %s AND project = %s AND started_at > %s",
        (integration_id, project, since_us),
    ).fetchall()
    return [r["started_at"] for r in rows]


def started(conn: Connection, integration_id: str, issue_id: str, project: str, run_id: str, at_us: int) -> None:
    conn.execute(
        "INSERT INTO alert_issues (integration_id, issue_id, run_id, generation) VALUES (%s, %s, %s, 1) "
        "ON CONFLICT (integration_id, issue_id) DO UPDATE SET run_id = EXCLUDED.run_id, "
        "generation = alert_issues.generation + 1, queued_alert = NULL, queued_at = NULL",
        (integration_id, issue_id, run_id),
    )
    conn.execute(
        "INSERT INTO alert_run_starts (run_id, integration_id, project, started_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT DO NOTHING",
        (run_id, integration_id, project, at_us),
    )


def queue(conn: Connection, integration_id: str, issue_id: str, alert: dict[str, Any], at_us: int) -> None:
    conn.execute(
        "INSERT INTO alert_issues (integration_id, issue_id, queued_alert, queued_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (integration_id, issue_id) DO UPDATE SET queued_alert = EXCLUDED.queued_alert, "
        "queued_at = EXCLUDED.queued_at",
        (integration_id, issue_id, Jsonb(alert), at_us),
    )


def queued(conn: Connection, integration_ids: list[str]) -> list[dict]:
    """Alerts waiting in the queue, oldest first."""
    return conn.execute(
        "SELECT integration_id, issue_id, queued_alert FROM alert_issues "
        "WHERE integration_id = ANY(%s) AND queued_alert IS NOT NULL ORDER BY queued_at, issue_id",
        (integration_ids,),
    ).fetchall()


def ended_uncommented(conn: Connection, projection: str, ended: tuple[str, ...]) -> list[dict]:
    """Issues whose latest run ended and whose outcome was not posted back yet."""
    return conn.execute(
        sql.SQL(
            "SELECT i.integration_id, i.issue_id, i.run_id, r.state, r.reason FROM alert_issues i "
            "JOIN {}.runs r ON r.run_id = i.run_id "
            "WHERE i.commented_run IS DISTINCT FROM i.run_id AND r.state = ANY(%s)"
        ).format(sql.Identifier(projection)),
        (list(ended),),
    ).fetchall()


def commented(conn: Connection, integration_id: str, issue_id: str, run_id: str) -> None:
    conn.execute(
        "UPDATE alert_issues SET commented_run = %s WHERE integration_id = %s AND issue_id = %s",
        (run_id, integration_id, issue_id),
    )


def merge_request_url(conn: Connection, projection: str, run_id: str) -> str | None:
    row = conn.execute(
        sql.SQL(
            "SELECT payload->>'url' AS url FROM {}.events WHERE stream_id = %s AND type = 'merge_request.opened' "
            'ORDER BY "offset" DESC LIMIT 1'
        ).format(sql.Identifier(projection)),
        (run_id,),
    ).fetchone()
    return row["url"] if row else None


def queue_cleared(conn: Connection, integration_id: str, issue_id: str) -> None:
    conn.execute(
        "UPDATE alert_issues SET queued_alert = NULL, queued_at = NULL WHERE integration_id = %s AND issue_id = %s",
        (integration_id, issue_id),
    )

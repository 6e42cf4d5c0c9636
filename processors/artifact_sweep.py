"""The artifact sweep: the retention policy and the removal of deleted artifacts' bytes.

Deleting is two steps so that nothing is lost to a race: an ``artifact.deleted`` record (from the
tenant's DELETE, or from here when an artifact passes ``artifact_retention_days``) hides the
artifact at once; the bytes leave the store only when every artifact row sharing that
content-addressed key has been deleted for longer than ``GRACE`` *and* the store has seen no put
of that key for as long (a put of the same bytes whose row is not projected yet keeps them).
Keys whose last deletion is older than ``LOOKBACK`` were handled by earlier sweeps and are not
looked at again. Idempotent: a sweep may run on any instance, any number of times.

Also here, the quota check for bytes a processor stores on a tenant's behalf (exec output past the
records' share, a conversation's offloaded outputs and checkpoints), which the API cannot see coming.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import sql

from astraforge.artifacts import ArtifactStore
from astraforge.config import Settings
from astraforge.db import connect
from astraforge.errors import AstraForgeError
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope

LOG = logging.getLogger(__name__)
ACTOR = "processor:artifact-sweep"
GRACE = timedelta(minutes=10)
LOOKBACK = timedelta(days=7)  # ~168 hourly sweeps have seen a key deleted longer ago
BATCH = 10_000


@dataclass(frozen=True)
class SweepResult:
    expired: int
    removed_keys: int


def sweep(settings: Settings, store: ArtifactStore, producer: EventProducer, now: datetime) -> SweepResult:
    schema = sql.Identifier(settings.projection_schema)
    expired: list[dict] = []
    with connect(settings) as conn:
        if settings.artifact_retention_days:
            expired = conn.execute(
                sql.SQL(
                    "SELECT artifact_id, stream_id, tenant_id FROM {}.artifacts WHERE deleted_at IS NULL"
                    " AND created_at < %s ORDER BY created_at LIMIT %s"
                ).format(schema),
                (now - timedelta(days=settings.artifact_retention_days), BATCH),
            ).fetchall()
        keys = conn.execute(
            sql.SQL(
                "SELECT key FROM {}.artifacts WHERE deleted_at > %s OR deleted_at IS NULL GROUP BY key"
                " HAVING bool_and(deleted_at IS NOT NULL) AND max(deleted_at) < %s"
                " ORDER BY max(deleted_at) LIMIT %s"
            ).format(schema),
            (now - LOOKBACK, now - GRACE, BATCH),
        ).fetchall()
    producer.append_many(
        [
            Envelope(
                type="artifact.deleted",
                stream_id=r["stream_id"],
                tenant_id=r["tenant_id"],
                actor=ACTOR,
                payload={"artifact_id": r["artifact_id"], "reason": "retention"},
            )
            for r in expired
        ]
    )
    removed = 0
    for row in keys:
        put_at = store.modified_at(row["key"])
        if put_at is not None and put_at < (now - GRACE).timestamp():
            store.delete(row["key"])
            removed += 1
    return SweepResult(expired=len(expired), removed_keys=removed)


def artifact_bytes(settings: Settings, tenant_id: str) -> int:
    """Bytes of the tenant's live artifacts, as projected."""
    with connect(settings) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT coalesce(sum(size), 0)::bigint AS n FROM {}.artifacts"
                " WHERE tenant_id = %s AND deleted_at IS NULL"
            ).format(sql.Identifier(settings.projection_schema)),
            (tenant_id,),
        ).fetchone()
    return row["n"]


def within_artifact_quota(settings: Settings, tenant_id: str, size: int) -> bool:
    """Room for ``size`` more bytes of the tenant's artifacts (the check the artifacts API makes).
    An unreachable projection answers yes (logged): what a processor stores is bounded by its own
    limits (``max_output_bytes``), and refusing would lose the work it holds."""
    try:
        return artifact_bytes(settings, tenant_id) + size <= settings.quota_artifact_bytes
    except AstraForgeError:
        LOG.warning("artifact quota of %s unknown; storing %d bytes", tenant_id, size)
        return True

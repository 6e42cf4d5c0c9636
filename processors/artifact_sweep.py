"""The artifact sweep: the retention policy and the removal of deleted artifacts' bytes.

Deleting is two steps so that nothing is lost to a race: an ``artifact.deleted`` record (from the
tenant's DELETE, or from here when an artifact passes ``artifact_retention_days``) hides the
artifact at once; the bytes leave the store only when every artifact row sharing that
content-addressed key has been deleted for longer than ``GRACE``. A put of the same bytes inside
that window makes a live row again and keeps the key. Idempotent: a sweep may run on any instance,
any number of times (removing bytes that are already gone is not an error).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import sql

from astraforge.artifacts import ArtifactStore
from astraforge.config import Settings
from astraforge.db import connect
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope

ACTOR = "processor:artifact-sweep"
GRACE = timedelta(minutes=10)
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
                sql.SQL("SELECT artifact_id, stream_id, tenant_id FROM {}.artifacts WHERE deleted_at IS NULL"
                        " AND created_at < %s ORDER BY created_at LIMIT %s").format(schema),
                (now - timedelta(days=settings.artifact_retention_days), BATCH),
            ).fetchall()  # fmt: skip
        keys = conn.execute(
            sql.SQL("SELECT key FROM {}.artifacts GROUP BY key"
                    " HAVING bool_and(deleted_at IS NOT NULL) AND max(deleted_at) < %s LIMIT %s").format(schema),
            (now - GRACE, BATCH),
        ).fetchall()  # fmt: skip
    producer.append_many([
        Envelope(type="artifact.deleted", stream_id=r["stream_id"], tenant_id=r["tenant_id"], actor=ACTOR,
                 payload={"artifact_id": r["artifact_id"], "reason": "retention"})
        for r in expired
    ])  # fmt: skip
    for row in keys:
        store.delete(row["key"])
    return SweepResult(expired=len(expired), removed_keys=len(keys))

"""Pure folding of one record into read-model row changes: ``(record, position) -> [Upsert]``.

No I/O here, so the rules are tested with plain values; ``projections.postgres`` applies them.
"""

from dataclasses import dataclass
from typing import Any

from astraforge.sandbox.profile import SecurityProfile
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert a row, or update the listed columns of the row with the same key. With
    ``insert=False`` only an existing row of the same key and tenant is updated."""

    table: str
    key: str
    row: dict[str, Any]
    update: tuple[str, ...]
    insert: bool = True


def _artifact_row(envelope: Envelope, artifact: dict, offset: int) -> Upsert:
    row = {
        "artifact_id": artifact["artifact_id"],
        "stream_id": envelope.stream_id,
        "tenant_id": envelope.tenant_id,
        "key": artifact["key"],
        "sha256": artifact["sha256"],
        "size": artifact["size"],
        "content_type": artifact["content_type"],
        "name": artifact.get("name"),
        "created_at": envelope.occurred_at,
        "offset": offset,
    }
    return Upsert("artifacts", "artifact_id", row, ())


def _memory_mb(payload: dict) -> int:
    """All the memory the sandbox may hold (``SecurityProfile.ram_mb``: processes + tmpfs), from
    the limits it was requested with (validated before the record was written)."""
    try:
        return SecurityProfile.with_overrides(RequestedSandbox.read(payload).limits).ram_mb
    except ValueError:  # a record older than a bound (ValidationError), or a v6 one with text no number
        return SecurityProfile().ram_mb


_FOLDED_TYPES = frozenset(
    {"exec.started", "exec.finished", "artifact.stored", "snapshot.created", "artifact.deleted", "conversation.created"}
)
_REPLY_STATES = {
    "reply.started": "replying",
    "reply.completed": "idle",
    "reply.failed": "idle",
    "reply.cancelled": "idle",
}


def _conversation_rows(envelope: Envelope, offset: int) -> list[Upsert]:
    p, when = envelope.payload, envelope.occurred_at
    if envelope.type == "conversation.created":
        row = {
            "conversation_id": envelope.stream_id,
            "tenant_id": envelope.tenant_id,
            "sandbox_id": p["sandbox_id"],
            "model": p["model"],
            "title": p.get("title"),
            "state": "idle",
            "reply_id": None,
            "last_reply": None,
            "reason": None,
            "created_at": when,
            "updated_at": when,
            "last_offset": offset,
        }
        return [Upsert("conversations", "conversation_id", row, ())]
    if envelope.type not in _REPLY_STATES:
        return []
    ended = envelope.type != "reply.started"
    row = {
        "conversation_id": envelope.stream_id,
        "tenant_id": envelope.tenant_id,
        "state": _REPLY_STATES[envelope.type],
        "reply_id": p["reply_id"],
        "updated_at": when,
        "last_offset": offset,
    }
    update = ["state", "reply_id", "updated_at", "last_offset"]
    if ended:
        row |= {"last_reply": p["state"], "reason": p.get("reason")}
        update += ["last_reply", "reason"]
    return [Upsert("conversations", "conversation_id", row, tuple(update), insert=False)]


def folds(record_type: str) -> bool:
    """Whether a record of this type can change runs, sandboxes, execs, artifacts or conversations
    (``fold`` of any other type is ``[]``): the projector decodes only these into an ``Envelope``."""
    kind = record_type.partition(".")[0]
    return kind in ("run", "sandbox", "reply") or record_type in _FOLDED_TYPES


def fold(envelope: Envelope, offset: int) -> list[Upsert]:
    """Row changes this record makes to runs, sandboxes and artifacts (events/streams are generic).
    A new branch here needs its type in ``folds`` (tests/unit/projections/test_fold.py checks)."""
    kind, _, _ = envelope.type.partition(".")
    p = envelope.payload
    when = envelope.occurred_at
    if envelope.type.startswith("run.") and "state" in p and "attempt" in p:
        row = {
            "run_id": envelope.stream_id,
            "tenant_id": envelope.tenant_id,
            "state": p["state"],
            "attempt": p["attempt"],
            "title": p.get("title"),
            "agent": p.get("agent"),
            "sandbox_id": p.get("sandbox_id"),
            "reason": p.get("reason"),
            "repository": p.get("repository"),
            "spec": p.get("spec"),
            "created_at": when,
            "updated_at": when,
            "last_offset": offset,
        }
        update = ["state", "attempt", "reason", "updated_at", "last_offset"]
        update += [c for c in ("title", "agent", "sandbox_id", "repository", "spec") if row[c] is not None]
        return [Upsert("runs", "run_id", row, tuple(update))]
    if kind == "sandbox" and "state" in p and envelope.sandbox_id:
        if envelope.type == "sandbox.heartbeat.recorded":
            return []
        row = {
            "sandbox_id": envelope.sandbox_id,
            "stream_id": envelope.stream_id,
            "tenant_id": envelope.tenant_id,
            "state": p["state"],
            "provider": p.get("provider"),
            "image": p.get("image"),
            "reason": p.get("reason"),
            "created_at": when,
            "updated_at": when,
            "last_offset": offset,
            "memory_mb": _memory_mb(p) if envelope.type == "sandbox.requested" else None,
        }
        update = ["state", "reason", "updated_at", "last_offset"]
        update += [c for c in ("provider", "image", "memory_mb") if row[c] is not None]
        return [Upsert("sandboxes", "sandbox_id", row, tuple(update))]
    if envelope.type in ("exec.started", "exec.finished") and envelope.sandbox_id:
        finished = envelope.type == "exec.finished"
        row = {
            "command_id": p["command_id"],
            "sandbox_id": envelope.sandbox_id,
            "tenant_id": envelope.tenant_id,
            "state": "finished" if finished else "running",
            "exit_code": p.get("exit_code") if finished else None,
            "started_at": when,
            "updated_at": when,
            "last_offset": offset,
        }
        return [
            Upsert("execs", "command_id", row, ("state", "exit_code", "updated_at", "last_offset") if finished else ())
        ]
    if envelope.type in ("artifact.stored", "snapshot.created"):
        return [_artifact_row(envelope, p["artifact"], offset)]
    if envelope.type == "conversation.created" or envelope.type in _REPLY_STATES:
        return _conversation_rows(envelope, offset)
    if envelope.type == "artifact.deleted":
        row = {"artifact_id": p["artifact_id"], "tenant_id": envelope.tenant_id, "deleted_at": when}
        return [Upsert("artifacts", "artifact_id", row, ("deleted_at",), insert=False)]
    return []

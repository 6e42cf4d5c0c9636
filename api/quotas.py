"""Per-tenant quotas, checked when a create or an exec is admitted: one tenant cannot take the
engine's memory, process slots or the processor's workers from the others.

Usage is read from the projection, so requests admitted in the same few milliseconds (before their
records are projected) can overshoot a limit by that burst; the sandbox's own limits still hold.
"""

from astraforge.api.errors import ApiError
from astraforge.config import Settings
from astraforge.projections.queries import Executor, ProjectionQueries


def _refuse(what: str, limit: int, used: int, asking: int = 1) -> ApiError:
    return ApiError(429, f"quota exceeded: {what} (limit {limit}, in use {used}, asked {asking})",
                    code="quota_exceeded", details={"quota": what, "limit": limit, "used": used})  # fmt: skip


async def admit_sandboxes(conn: Executor, settings: Settings, tenant: str, count: int, memory_mb: int) -> None:
    """Room for ``count`` more sandboxes of ``memory_mb`` each, or a 429 naming the limit."""
    usage = await ProjectionQueries(settings.projection_schema).tenant_usage(conn, tenant)
    if usage["sandboxes"] + count > settings.quota_sandboxes:
        raise _refuse("sandboxes", settings.quota_sandboxes, usage["sandboxes"], count)
    if usage["memory_mb"] + count * memory_mb > settings.quota_memory_mb:
        raise _refuse("memory_mb", settings.quota_memory_mb, usage["memory_mb"], count * memory_mb)


async def admit_artifact_bytes(conn: Executor, settings: Settings, tenant: str, size: int) -> None:
    """Room for ``size`` more bytes of artifacts (uploads past the inline limit, snapshots, exports)."""
    usage = await ProjectionQueries(settings.projection_schema).tenant_usage(conn, tenant)
    if usage["artifact_bytes"] + size > settings.quota_artifact_bytes:
        raise _refuse("artifact_bytes", settings.quota_artifact_bytes, usage["artifact_bytes"], size)


async def admit_exec(conn: Executor, settings: Settings, tenant: str) -> None:
    usage = await ProjectionQueries(settings.projection_schema).tenant_usage(conn, tenant)
    if usage["execs"] + 1 > settings.quota_concurrent_execs:
        raise _refuse("concurrent_execs", settings.quota_concurrent_execs, usage["execs"])

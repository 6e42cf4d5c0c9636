"""Per-tenant quotas, checked when a create or an exec is admitted: one tenant cannot take the
engine's memory, process slots or the processor's workers from the others.

Usage is read from the projection, which shows an admitted sandbox or command only once its record
is projected (a command: once the processor started it). So each API process also holds what it
admitted until the projection shows it (``Reservations``), and checks one tenant's admissions one
at a time: a burst of creates or async execs cannot all see the quota free.

Not protected: several API processes each hold only their own admissions (a burst spread over N
of them can overshoot by N - 1); artifact bytes are checked against what is stored (a burst of
snapshots may overshoot by the snapshots in flight; ``max_snapshot_bytes`` bounds each).
"""

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from astraforge.api.errors import ApiError
from astraforge.config import Settings
from astraforge.projections.queries import Executor, queries_for

HOLD_S = 120.0  # an admission whose record never shows (its append failed) stops counting then


@dataclass(frozen=True)
class _Held:
    kind: str  # "sandbox" or "exec"
    memory_mb: int
    until: float
    appended: bool = False  # its create was appended (a sandbox's row is on its way to the projection)


class Reservations:
    """Admissions of this API process that the projection may not show yet, per tenant."""

    def __init__(self) -> None:
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.held: defaultdict[str, dict[str, _Held]] = defaultdict(dict)  # tenant -> sandbox/command id

    def current(self, tenant: str) -> dict[str, "_Held"]:
        """The tenant's holds, less the ones past ``HOLD_S``."""
        held, now = self.held[tenant], time.monotonic()
        for key in [k for k, h in held.items() if h.until < now]:
            del held[key]
        return held

    def projected(self, tenant: str, ids: list[str]) -> None:
        """These held ids are projected now: the projection counts them from here on."""
        held = self.held[tenant]
        for key in ids:
            held.pop(key, None)

    def counts(self, tenant: str) -> dict[str, int]:
        """What the tenant's holds add to the projection's usage."""
        held = self.held[tenant]
        sandboxes = [h for h in held.values() if h.kind == "sandbox"]
        return {
            "sandboxes": len(sandboxes),
            "memory_mb": sum(h.memory_mb for h in sandboxes),
            "execs": sum(h.kind == "exec" for h in held.values()),
        }

    def hold(self, tenant: str, ids: list[str], kind: str, memory_mb: int = 0) -> None:
        until = time.monotonic() + HOLD_S
        self.held[tenant].update(dict.fromkeys(ids, _Held(kind, memory_mb, until)))

    def appended(self, tenant: str, sandbox_ids: list[str]) -> None:
        """These held sandboxes' creates were appended: the projection will show them (``awaited``)."""
        held = self.held[tenant]
        for key in sandbox_ids:
            if key in held:
                held[key] = replace(held[key], appended=True)

    def awaited(self, tenant: str) -> list[str]:
        """Sandboxes this process created for the tenant that the projection may not show yet: a
        read may wait for them. Not every held sandbox: a run's is held from the run's request on
        but created (if ever: the run may be cancelled first) by the orchestrator, and a create
        whose append failed never shows; waiting for those made every list wait its limit."""
        return [key for key, h in self.current(tenant).items() if h.kind == "sandbox" and h.appended]


class UploadSlots:
    """Uploads each tenant has in flight in this API process. A body is spooled to the API host's
    disk (up to ``max_file_bytes``) before any quota can weigh it, so the number at once is what
    bounds one tenant's share of that disk."""

    def __init__(self) -> None:
        self.used: defaultdict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def take(self, tenant: str, limit: int) -> Iterator[None]:
        if self.used[tenant] >= limit:
            raise _refuse("concurrent_uploads", limit, self.used[tenant])
        self.used[tenant] += 1
        try:
            yield
        finally:
            self.used[tenant] -= 1


def _refuse(what: str, limit: int, used: int, asking: int = 1) -> ApiError:
    return ApiError(
        429,
        f"quota exceeded: {what} (limit {limit}, in use {used}, asked {asking})",
        code="quota_exceeded",
        details={"quota": what, "limit": limit, "used": used},
    )


async def _usage(conn: Executor, settings: Settings, tenant: str, held: Reservations, kind: str) -> dict:
    """The tenant's usage of ``kind`` ("sandbox" or "exec") as the projection shows it plus what this
    process admitted and the projection does not show yet: one statement (call under the tenant's
    lock; it reads the usage and which holds are projected in one snapshot)."""
    queries = queries_for(settings.projection_schema)
    read = queries.sandbox_usage if kind == "sandbox" else queries.exec_usage
    return _with_holds(await read(conn, tenant, list(held.current(tenant))), tenant, held)


def _with_holds(found: dict, tenant: str, held: Reservations) -> dict:
    """A usage statement's answer (with its ``projected`` ids) plus the holds it does not show yet."""
    held.projected(tenant, found.pop("projected"))
    pending = held.counts(tenant)
    return {k: v + pending[k] for k, v in found.items()}


async def admit_sandboxes(
    conn: Executor, settings: Settings, tenant: str, sandbox_ids: list[str], memory_mb: int, held: Reservations
) -> None:
    """Room for these sandboxes of ``memory_mb`` each (held until projected), or a 429 naming the limit."""
    count = len(sandbox_ids)
    async with held.locks[tenant]:
        usage = await _usage(conn, settings, tenant, held, "sandbox")
        if usage["sandboxes"] + count > settings.quota_sandboxes:
            raise _refuse("sandboxes", settings.quota_sandboxes, usage["sandboxes"], count)
        if usage["memory_mb"] + count * memory_mb > settings.quota_memory_mb:
            raise _refuse("memory_mb", settings.quota_memory_mb, usage["memory_mb"], count * memory_mb)
        held.hold(tenant, sandbox_ids, "sandbox", memory_mb)


async def admit_artifact_bytes(conn: Executor, settings: Settings, tenant: str, size: int) -> None:
    """Room for ``size`` more bytes of artifacts (uploads past the inline limit, snapshots, exports)."""
    usage = await queries_for(settings.projection_schema).tenant_usage(conn, tenant)
    if usage["artifact_bytes"] + size > settings.quota_artifact_bytes:
        raise _refuse("artifact_bytes", settings.quota_artifact_bytes, usage["artifact_bytes"], size)


async def admit_exec(conn: Executor, settings: Settings, tenant: str, command_id: str, held: Reservations) -> None:
    """Room for one more running command (held until projected), or a 429 naming the limit."""
    async with held.locks[tenant]:
        _hold_exec(settings, tenant, command_id, held, (await _usage(conn, settings, tenant, held, "exec"))["execs"])


async def admit_exec_in(
    conn: Executor,
    settings: Settings,
    tenant: str,
    sandbox_id: str,
    command_id: str,
    held: Reservations,
    check: Callable[[dict], object],
) -> bool:
    """``admit_exec`` for a command in the tenant's sandbox, reading the sandbox's state in the same
    statement (one round trip for ownership and quota): False, admitting nothing, if the projection
    does not show the sandbox; else ``check({"sandbox_id", "state"})`` (e.g. 409 if it has ended),
    then room for the command or a 429, in that order, as ``owned_sandbox`` + ``admit_exec``."""
    queries = queries_for(settings.projection_schema)
    async with held.locks[tenant]:
        found = await queries.exec_usage_in(conn, tenant, sandbox_id, list(held.current(tenant)))
        state = found.pop("sandbox_state")
        usage = _with_holds(found, tenant, held)
        if state is None:
            return False
        check({"sandbox_id": sandbox_id, "state": state})
        _hold_exec(settings, tenant, command_id, held, usage["execs"])
        return True


def _hold_exec(settings: Settings, tenant: str, command_id: str, held: Reservations, execs: int) -> None:
    if execs + 1 > settings.quota_concurrent_execs:
        raise _refuse("concurrent_execs", settings.quota_concurrent_execs, execs)
    held.hold(tenant, [command_id], "exec")

"""Append a command, await its fact: the one way routes talk to the processors.

A route builds nothing and awaits nothing itself: it asks this service to run a sandbox command
(create, exec, snapshot, file write/read, stop...). The service subscribes to the sandbox's live
tail *before* appending, so the processor's answer cannot slip past, then waits for the records
that answer this command (matched by its id) until the final one.

A command resumed from an ``Idempotency-Key`` whose first attempt appended it but never saw the
answer (the client timed out, the API instance died) is not appended again: its answer is read
from the projection, where every record lands even if it was published before anyone listened.
(A resumed attempt that cannot tell whether the command went out appends it again under the same
ids, which the processor drops if it has seen them, and reads the answer the same way.)

Not protected: a 504 here says the *answer* did not come in time; the command may still run
(the caller follows the stream, or retries with the same key to pick the answer up later).
"""

import asyncio
import base64
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from psycopg_pool import AsyncConnectionPool

from astraforge.api.errors import ApiError
from astraforge.api.live import LiveTail, Subscriber
from astraforge.api.models import ExecResult, SandboxPublic
from astraforge.config import Settings
from astraforge.ids import from_micros, iso, new_id
from astraforge.producers.kafka import EventProducer
from astraforge.projections.queries import ProjectionQueries
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox

FILE_WAIT_S = 60.0
SNAPSHOT_WAIT_S = 300.0
RUN_WAIT_S = 10.0  # a run command answers once the orchestrator took it (or says it is on its way)
RESUME_POLL_S = 0.2  # how often a resumed command looks for its answer in the projection
# a sandbox's error codes (``code: detail``) and the HTTP status each answers with
SANDBOX_ERRORS = {"not_found": 404, "forbidden_path": 403, "unavailable": 503, "too_large": 413, "quota_exceeded": 429}


class Progress(Protocol):
    """Told when the command is durably appended (an idempotency claim records it); ``taken_over``
    when an earlier attempt may have appended it without recording so."""

    appended: bool
    taken_over: bool

    async def mark_appended(self) -> None: ...


@dataclass(frozen=True)
class Answer:
    """Which records answer a command: records of ``types`` whose ``payload[key]`` is ``value``
    (any record of ``types`` when ``key`` is None); the first of ``final`` ends the wait."""

    types: tuple[str, ...]
    final: tuple[str, ...]
    key: str | None = None
    value: str | None = None

    def matches(self, e: Envelope) -> bool:
        return e.type in self.types and (self.key is None or e.payload.get(self.key) == self.value)


def command(tenant: str, sandbox_id: str, type_: str, payload: dict, actor: str | None = None) -> Envelope:
    """A record the tenant's API call appends to a sandbox's stream (as ``actor``: the tenant, or a
    lease holder it named, ``tenant:<id>/<holder>``)."""
    return Envelope(
        type=type_,
        stream_id=sandbox_id,
        tenant_id=tenant,
        actor=actor or f"tenant:{tenant}",
        sandbox_id=sandbox_id,
        payload=payload,
    )


def sandbox_error(error: str) -> ApiError:
    """The 4xx (or 503) a sandbox's ``code: detail`` error answers with."""
    return ApiError(SANDBOX_ERRORS.get(error.partition(":")[0], 422), error)


class CommandService:
    """Appends commands for the API and awaits the processor's facts about them."""

    def __init__(self, settings: Settings, producer: EventProducer, live: LiveTail, pool: AsyncConnectionPool) -> None:
        self.settings = settings
        self.producer = producer
        self.live = live
        self.pool = pool
        self.queries = ProjectionQueries(settings.projection_schema)

    async def append(self, records: Sequence[Envelope], progress: Progress | None = None) -> None:
        """Append and wait for the broker's acknowledgement of these records."""
        await self.producer.append_async(records)
        if progress is not None:
            await progress.mark_appended()

    async def call(
        self,
        tenant: str,
        records: Sequence[Envelope],
        answers: dict[str, Answer],
        timeout: float,
        progress: Progress | None = None,
    ) -> dict[str, list[Envelope]]:
        """Append ``records`` and return, per stream, the records that answer them (the final one
        last), or raise ``TimeoutError``. If ``progress`` says they were appended already, nothing
        is appended; for a retry that took over an earlier attempt, the answers are read from the
        projection (they may have been published before anyone listened)."""
        if progress is not None and progress.taken_over:
            if not progress.appended:  # maybe appended before: the processor drops an id it has seen
                await self.append(records, progress)
            async with asyncio.timeout(timeout):
                found = [self._recorded(tenant, stream_id, answer) for stream_id, answer in answers.items()]
                return dict(zip(answers, await _all(found), strict=True))
        subs = {stream_id: self.live.subscribe(stream_id, tenant) for stream_id in answers}
        try:
            await self.append(records, progress)
            async with asyncio.timeout(timeout):
                heard = [_heard(subs[stream_id], answer) for stream_id, answer in answers.items()]
                return dict(zip(answers, await _all(heard), strict=True))
        finally:
            for sub in subs.values():
                self.live.unsubscribe(sub)

    async def _recorded(self, tenant: str, stream_id: str, answer: Answer) -> list[Envelope]:
        """The answer as the projection holds it (records in offset order), once its final record
        is there: the answer may have been published before this call listened."""
        while True:
            async with self.pool.connection() as conn:
                rows = await self.queries.answers(conn, tenant, stream_id, list(answer.types), answer.key, answer.value)
            if any(r["type"] in answer.final for r in rows):
                return [_envelope(r) for r in rows]
            await asyncio.sleep(RESUME_POLL_S)

    # -- sandbox commands -----------------------------------------------------------------------
    async def create_sandboxes(
        self,
        tenant: str,
        spec: RequestedSandbox,
        sandbox_ids: list[str],
        wait_s: float | None,
        progress: Progress | None = None,
    ) -> list[SandboxPublic]:
        """Append each sandbox's create command (one append) and answer from the processor's facts:
        its ``sandbox.requested``, or with ``wait_s`` once each is ready or failed (one still on
        its way then says so)."""
        # the command only: the processor writes `sandbox.requested` from it (the one writer of the lifecycle)
        records = [command(tenant, sandbox_id, "sandbox.create", spec.create_payload()) for sandbox_id in sandbox_ids]
        if progress is not None and progress.taken_over and not progress.appended:
            async with self.pool.connection() as conn:  # a `sandbox.requested` the earlier attempt left
                if await self.queries.projected(conn, tenant, sandbox_ids):
                    await progress.mark_appended()
        at = iso(from_micros(records[0].occurred_at))
        answers: dict[str, list[Envelope]] = {}
        outcome = ("sandbox.ready", "sandbox.failed") if wait_s is not None else ("sandbox.requested",)
        wanted = {sandbox_id: Answer(types=outcome, final=outcome) for sandbox_id in sandbox_ids}
        try:
            answers = await self.call(
                tenant, records, wanted, wait_s if wait_s is not None else REQUESTED_WAIT_S, progress
            )
        except TimeoutError:  # still on its way: the caller follows the stream or polls GET
            answers = {}
        created = []
        for sandbox_id in sandbox_ids:
            done = answers.get(sandbox_id, [None])[-1]
            state = done.payload["state"] if done else ("provisioning" if wait_s is not None else "requested")
            created.append(
                SandboxPublic(
                    id=sandbox_id,
                    state=state,
                    image=spec.image,
                    provider=done.payload["provider"] if done else None,
                    reason=done.payload["reason"] if done else None,
                    created_at=at,
                    updated_at=at,
                )
            )
        return created

    async def exec(self, exec_command: Envelope, timeout: float, progress: Progress | None = None) -> ExecResult:
        """Run an exec command to its end and answer its whole output."""
        command_id = exec_command.payload["command_id"]
        answer = Answer(
            types=("exec.output", "exec.finished"), final=("exec.finished",), key="command_id", value=command_id
        )
        try:
            found = await self.call(
                exec_command.tenant_id, [exec_command], {exec_command.stream_id: answer}, timeout, progress
            )
        except TimeoutError:
            raise ApiError(
                504, f"command {command_id} did not finish in time; follow it on the stream", code="timeout"
            ) from None
        return exec_result(command_id, found[exec_command.stream_id])

    async def snapshot(self, snapshot_command: Envelope, progress: Progress | None = None) -> Envelope:
        """Take a snapshot: its ``snapshot.created`` record, or a 4xx naming why it failed."""
        outcome = ("snapshot.created", "snapshot.failed")
        answer = Answer(types=outcome, final=outcome, key="snapshot_id", value=snapshot_command.payload["snapshot_id"])
        try:
            found = await self.call(
                snapshot_command.tenant_id,
                [snapshot_command],
                {snapshot_command.stream_id: answer},
                SNAPSHOT_WAIT_S,
                progress,
            )
        except TimeoutError:
            raise ApiError(504, "the snapshot did not complete in time", code="timeout") from None
        done = found[snapshot_command.stream_id][-1]
        if done.type == "snapshot.failed":
            raise sandbox_error(done.payload["error"])
        await self._until_projected(snapshot_command.tenant_id, snapshot_command.payload["snapshot_id"])
        return done

    async def _until_projected(self, tenant: str, artifact_id: str, timeout: float = 10.0) -> None:
        """Read-your-writes for a snapshot: the caller restores or forks it next, and those check
        ownership in the projection (a create right after the answer met a 404). Past ``timeout``
        the answer goes out anyway; the snapshot exists, the projection is only slow."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    async with self.pool.connection() as conn:
                        if await self.queries.artifact(conn, tenant, artifact_id) is not None:
                            return
                    await asyncio.sleep(RESUME_POLL_S / 4)

    async def file_op(
        self, file_command: Envelope, answer_type: str, facts: Sequence[Envelope] = (), progress: Progress | None = None
    ) -> Envelope:
        """Append ``facts`` (records of what the API itself did) and a file command; its answer,
        or the 4xx its error names."""
        rid = file_command.payload["request_id"]
        answer = Answer(types=(answer_type,), final=(answer_type,), key="request_id", value=rid)
        try:
            found = await self.call(
                file_command.tenant_id, [*facts, file_command], {file_command.stream_id: answer}, FILE_WAIT_S, progress
            )
        except TimeoutError:
            raise ApiError(504, f"the sandbox did not answer {file_command.type} in time", code="timeout") from None
        done = found[file_command.stream_id][-1]
        if done.payload.get("error"):
            raise sandbox_error(done.payload["error"])
        return done

    # -- run commands ---------------------------------------------------------------------------
    async def run_command(
        self,
        tenant: str,
        run_id: str,
        type_: str,
        payload: dict,
        answer: tuple[str, ...],
        timeout: float = RUN_WAIT_S,
        progress: Progress | None = None,
    ) -> Envelope | None:
        """Append a run command; the orchestrator's first record of ``answer`` types, or None if it
        did not come within ``timeout`` (the command stands: the run's stream shows what follows)."""
        record = Envelope(type=type_, stream_id=run_id, tenant_id=tenant, actor=f"tenant:{tenant}", payload=payload)
        try:
            found = await self.call(tenant, [record], {run_id: Answer(types=answer, final=answer)}, timeout, progress)
        except TimeoutError:
            return None
        return found[run_id][-1]

    async def refuse(self, tenant: str, run_id: str, rule: str, detail: str, repository: str | None) -> None:
        """Record a request the API refused for a guardrail (the run never starts)."""
        payload = {"rule": rule, "detail": detail, "attempt": 1, "path": None, "repository": repository, "step": None}
        await self.append(
            [Envelope(type="guardrail.violated", stream_id=run_id, tenant_id=tenant, actor="api", payload=payload)]
        )


async def _all(waits: list) -> list:
    """Every wait's result, in order; the first failure cancels the others (``gather`` would leave
    them waiting on a queue nobody feeds any more)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def _heard(sub: Subscriber, answer: Answer) -> list[Envelope]:
    """The records on ``sub``'s live tail that answer, up to the final one."""
    found: list[Envelope] = []
    while True:
        item = await sub.next()
        if item is None:
            raise ApiError(503, "fell behind the live stream; retry")
        if answer.matches(item.envelope):
            found.append(item.envelope)
            if item.envelope.type in answer.final:
                return found


REQUESTED_WAIT_S = 10.0  # a create without `wait` answers once the processor took it (or says `requested`)


def new_sandbox_id() -> str:
    return f"sb-{new_id().replace('-', '')}"


def new_run_id() -> str:
    return f"run-{new_id().replace('-', '')}"


def exec_result(command_id: str, records: list[Envelope]) -> ExecResult:
    """A finished command's answer from its ``exec.output`` records and its ``exec.finished``."""
    *outputs, finished = records
    done = finished.payload
    chunks = [(e.payload["stream"], e.payload["data"]) for e in outputs]
    artifacts = [e.payload["artifact"]["artifact_id"] for e in outputs if e.payload.get("artifact")]

    def text(streams: tuple[str, ...]) -> str:
        return b"".join(d for s, d in chunks if s in streams).decode(errors="replace")

    return ExecResult(
        command_id=command_id,
        exit_code=done["exit_code"],
        stdout=text(("stdout",)),
        stderr=text(("stderr",)),
        output=text(("stdout", "stderr")),
        duration_ms=done["duration_ms"],
        timed_out=done["timed_out"],
        cancelled=done["cancelled"],
        truncated=done["truncated"],
        error=done["error"],
        output_artifact=artifacts[0] if artifacts else None,
    )


def _envelope(row: dict) -> Envelope:
    """A projected record back as an envelope (bytes the projection stored as text or base64 back
    as bytes, for the fields an answer reads)."""
    payload = dict(row["payload"])
    if "data" in payload:
        payload["data"] = _bytes(payload["data"])
    return Envelope(
        type=row["type"],
        stream_id=row["stream_id"],
        tenant_id=row["tenant_id"],
        actor=row["actor"],
        sandbox_id=row["sandbox_id"],
        payload=payload,
    )


def _bytes(value: object) -> bytes:
    if isinstance(value, dict) and "base64" in value:
        return base64.b64decode(value["base64"])
    return str(value or "").encode()

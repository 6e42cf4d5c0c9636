"""API shapes (kept apart from record payloads and projection tables)."""

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from astraforge.artifacts import MAX_INLINE_BYTES
from astraforge.ids import ID_PATTERN, from_micros
from astraforge.schemas import Envelope


def iso(when: datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z, identical for projection rows and Kafka records."""
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class EventPublic(BaseModel):
    """One record of a stream, as REST and SSE serve it."""

    offset: int = Field(description="Kafka offset: the record's sequence number in its stream.")
    partition: int
    event_id: str
    type: str
    stream_id: str
    sandbox_id: str | None
    occurred_at: str
    actor: str
    causation_id: str | None
    correlation_id: str | None
    payload: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict) -> "EventPublic":
        return cls(**{**row, "occurred_at": iso(row["occurred_at"])})

    @classmethod
    def from_envelope(cls, partition: int, offset: int, e: Envelope) -> "EventPublic":
        return cls(
            offset=offset, partition=partition, event_id=e.event_id, type=e.type, stream_id=e.stream_id,
            sandbox_id=e.sandbox_id, occurred_at=iso(from_micros(e.occurred_at)), actor=e.actor,
            causation_id=e.causation_id, correlation_id=e.correlation_id, payload=e.payload_json(),
        )  # fmt: skip


class EventsPublic(BaseModel):
    items: list[EventPublic]
    next_after: int | None = Field(description="Pass as `after` for the next page; null at the end.")


class StreamPublic(BaseModel):
    stream_id: str
    partition: int
    first_offset: int
    last_offset: int
    event_count: int
    created_at: str
    updated_at: str


class StreamsPublic(BaseModel):
    items: list[StreamPublic]
    next_after: str | None


class ServiceHealth(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: str
    kafka: ServiceHealth
    postgres: ServiceHealth
    projection: ServiceHealth = Field(description="Not ok while a partition is parked (needs a newer release).")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class SandboxCreate(BaseModel):
    """Ask for a sandbox. Limits may be lowered or raised within the platform's bounds."""

    model_config = {"extra": "forbid"}

    image: str | None = Field(default=None, max_length=200, pattern=r"^[a-z0-9][a-z0-9._/:-]*$")
    profile: dict[str, int | float] = Field(
        default_factory=dict, description="Overrides: memory_mb, cpus, pids, workspace_mb, tmp_mb, home_mb."
    )
    idle_timeout_s: int = Field(default=900, ge=5, le=86_400)
    ttl_s: int = Field(default=3600, ge=5, le=7 * 86_400)
    egress_allow: list[str] = Field(default_factory=list, max_length=100)
    restore_snapshot: str | None = Field(default=None, pattern=ID_PATTERN)


class SandboxPublic(BaseModel):
    id: str
    state: str
    image: str | None
    provider: str | None
    reason: str | None
    created_at: str
    updated_at: str


class SandboxesPublic(BaseModel):
    items: list[SandboxPublic]
    next_after: str | None


NO_NUL = r"^[^\x00]*$"
Arg = Annotated[str, Field(max_length=128 * 1024, pattern=NO_NUL)]
EnvName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^=\x00]+$")]


class ExecRequest(BaseModel):
    """A command. Arguments and environment go to execve(2): a NUL byte would cut them short and a
    ``=`` in a name would set another variable, so both are refused (422) instead of mangled. The
    command travels as one record: all its strings together stay within ``MAX_INLINE_BYTES`` (past
    it the broker refused the record and the API answered 500)."""

    model_config = {"extra": "forbid", "populate_by_name": True}

    command: (
        Annotated[str, Field(min_length=1, max_length=128 * 1024, pattern=NO_NUL)]
        | Annotated[list[Arg], Field(min_length=1, max_length=4096)]
    ) = Field(description="A shell string (run by /bin/sh -c) or an argv list.")
    cwd: str | None = Field(default=None, max_length=4096, pattern=NO_NUL)
    env: dict[EnvName, Arg] = Field(default_factory=dict, max_length=512)
    timeout_sec: float = Field(default=600, gt=0, le=86_400, alias="timeout_sec")
    run_async: bool = Field(default=False, alias="async", description="Return a command id at once.")

    @model_validator(mode="after")
    def _program_is_not_an_assignment(self) -> "ExecRequest":
        """The supervisor starts argv through ``env``, which would take ``A=B`` as a variable."""
        if isinstance(self.command, list) and "=" in self.command[0]:
            raise ValueError("command[0] (the program) must not contain '='")
        return self

    @model_validator(mode="after")
    def _fits_one_record(self) -> "ExecRequest":
        strings = [self.command] if isinstance(self.command, str) else list(self.command)
        strings += [self.cwd or "", *self.env, *self.env.values()]
        size = sum(len(text.encode()) for text in strings)
        if size > MAX_INLINE_BYTES:
            raise ValueError(f"command, cwd and env together are {size} bytes; the limit is {MAX_INLINE_BYTES}")
        return self


class ExecAccepted(BaseModel):
    command_id: str
    stream_id: str


class ExecResult(BaseModel):
    command_id: str
    exit_code: int | None
    stdout: str
    stderr: str
    output: str = Field(description="stdout and stderr interleaved in the order produced.")
    duration_ms: float
    timed_out: bool
    cancelled: bool
    truncated: bool
    error: str | None
    output_artifact: str | None = Field(
        default=None, description="Output past the inline limit: fetch it at /v1/artifacts/{id}."
    )


class FileResult(BaseModel):
    path: str
    size: int
    sha256: str


class SnapshotPublic(BaseModel):
    id: str
    sandbox_id: str | None
    size: int
    sha256: str


class ForkRequest(BaseModel):
    model_config = {"extra": "forbid"}

    count: int = Field(default=1, ge=1, le=20)
    profile: dict[str, int | float] = Field(default_factory=dict)
    idle_timeout_s: int = Field(default=900, ge=5, le=86_400)
    ttl_s: int = Field(default=3600, ge=5, le=7 * 86_400)

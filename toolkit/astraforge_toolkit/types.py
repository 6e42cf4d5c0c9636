"""Typed results of the API: plain frozen dataclasses (no pydantic, so the toolkit stays light).

Each ``from_json`` takes the API's JSON object; unknown fields are ignored, so a newer API with
more fields still reads. ``raw`` keeps the whole object for anything not modelled here.
"""

from dataclasses import dataclass, field, fields
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")


class _FromJson:
    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names}, raw=data)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Sandbox(_FromJson):
    """A sandbox session: ``state`` is one of requested, provisioning, ready, busy, stopping,
    terminated, failed (``reason`` says why it ended)."""

    id: str
    state: str
    image: str | None = None
    provider: str | None = None
    reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ExecResult(_FromJson):
    """A finished command. ``output`` interleaves stdout and stderr in the order produced; output
    past the inline limit is in the artifact ``output_artifact`` (``AstraForgeClient.artifact``)."""

    command_id: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    output: str = ""
    duration_ms: float = 0.0
    timed_out: bool = False
    cancelled: bool = False
    truncated: bool = False
    error: str | None = None
    output_artifact: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ExecAccepted(_FromJson):
    """An async command: its output follows on the stream ``stream_id``."""

    command_id: str
    stream_id: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class FileWritten(_FromJson):
    path: str
    size: int
    sha256: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ArtifactRef(_FromJson):
    """Bytes in the artifact store (an exported file): read them with ``artifact(artifact_id)``."""

    artifact_id: str
    size: int
    sha256: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Snapshot(_FromJson):
    """A gzip'd tar of a sandbox's /workspace; ``fork`` starts sandboxes restored from it."""

    id: str
    sandbox_id: str | None
    size: int
    sha256: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Run(_FromJson):
    """An agent run (``state``: requested ... awaiting_review, approved, merged, or rejected,
    failed, cancelled). ``raw`` of ``get_run`` holds its attempts and artifacts."""

    id: str
    state: str
    attempt: int = 1
    title: str | None = None
    agent: str | None = None
    repository: str | None = None
    sandbox_id: str | None = None
    reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Conversation(_FromJson):
    """A hosted DeepAgent conversation bound to a sandbox (``state``: requested, idle, replying);
    ``raw`` of ``get_conversation`` holds its messages, tool calls and results as recorded."""

    id: str
    sandbox_id: str
    model: str
    state: str
    title: str | None = None
    reply_id: str | None = None
    last_reply: str | None = None
    reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class MessageAccepted(_FromJson):
    """A user message on the record; its reply ``reply_id`` streams on the conversation's stream."""

    conversation_id: str
    message_id: str
    reply_id: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Event(_FromJson):
    """One record of a stream; ``offset`` is its sequence number (the SSE ``id``)."""

    offset: int
    type: str
    stream_id: str
    payload: dict[str, Any]
    partition: int = 0
    event_id: str = ""
    sandbox_id: str | None = None
    occurred_at: str = ""
    actor: str = ""
    causation_id: str | None = None
    correlation_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; pass ``next_after`` as ``after`` for the next (None at the end)."""

    items: list[T]
    next_after: Any

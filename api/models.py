"""API shapes (kept apart from record payloads and projection tables)."""

import base64
import binascii
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, model_validator

from astraforge.artifacts import MAX_INLINE_BYTES
from astraforge.audit import record_json
from astraforge.ids import ID_PATTERN, iso
from astraforge.schemas import Envelope


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
        return cls(**record_json(partition, offset, e))


class EventsPublic(BaseModel):
    items: list[EventPublic]
    next_after: int | None = Field(description="Pass as `after` for the next page; null at the end.")


class StreamDifference(BaseModel):
    offset: int
    problem: str


class StreamVerification(BaseModel):
    """``astraforge replay --verify``'s result: the stream in Kafka compared with the projection."""

    stream_id: str
    checked: int = Field(description="Records read from Kafka (up to the projection's stored position).")
    ok: bool
    differences: list[StreamDifference]


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


# -- runs ------------------------------------------------------------------------------------
MAX_REQUEST_BYTES = 512 * 1024


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class ScriptStepIn(BaseModel):
    """One step of the script agent: ``run`` a shell command in /workspace, or ``write`` a file."""

    model_config = {"extra": "forbid"}
    run: str | None = Field(default=None, min_length=1, max_length=16 * 1024)
    write: str | None = Field(default=None, min_length=1, max_length=4096, description="Repository-relative path.")
    content: str | None = Field(default=None, max_length=MAX_INLINE_BYTES)

    @model_validator(mode="after")
    def _one_action(self) -> "ScriptStepIn":
        if (self.run is None) == (self.write is None):
            raise ValueError("a step has exactly one of `run` or `write`")
        if self.run is not None and self.content is not None:
            raise ValueError("`content` goes with `write`")
        return self

    def record(self) -> dict:
        """The ``astraforge.ScriptStep`` record."""
        if self.run is not None:
            return {"kind": "shell", "command": self.run, "path": None, "content": None}
        return {"kind": "write", "command": None, "path": self.write, "content": self.content or ""}


class AttachmentIn(BaseModel):
    """A file handed to the agent with the spec (a log, a stack trace, a screenshot): the agent finds it
    at ``~/attachments/<name>`` in its sandbox, outside the repository (it never enters the diff)."""

    model_config = {"extra": "forbid"}
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="A file name (no directories).")
    content: str = Field(max_length=MAX_REQUEST_BYTES, description="The text, or base64 with `encoding: base64`.")
    encoding: Literal["text", "base64"] = "text"

    @model_validator(mode="after")
    def _decodes(self) -> "AttachmentIn":
        if self.encoding == "base64":
            try:
                base64.b64decode(self.content, validate=True)
            except binascii.Error as e:
                raise ValueError(f"attachment {self.name}: not base64 ({e})") from None
        return self


class RequestCreate(BaseModel):
    """A request for work: it starts a run (``POST /v1/requests``)."""

    model_config = {"extra": "forbid"}
    spec: str = Field(min_length=1, max_length=256 * 1024, description="What to do (the prompt).")
    repository: str = Field(min_length=1, max_length=2048, description="URL or local path, on the allowlist.")
    base_branch: str = Field(default="main", min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._/-]+$")
    title: str | None = Field(default=None, max_length=200)
    agent: Literal["codex", "cli", "script"] = "script"
    steps: list[ScriptStepIn] = Field(default_factory=list, max_length=200, description="The script agent's steps.")
    test_command: str | None = Field(default=None, min_length=1, max_length=16 * 1024)
    writable_paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=200, description="Paths the agent may change (`dir/` for a tree); empty: all."
    )
    egress_allow: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(default_factory=list, max_length=64)
    model: str | None = Field(default=None, max_length=200, description="Model settings of a model-driven agent.")
    command: str | None = Field(
        default=None,
        min_length=1,
        max_length=16 * 1024,
        description="The cli agent's command template, run with /bin/sh in /workspace: `{spec_file}` is "
        "replaced by the path of a file holding the spec; without it the spec comes on stdin.",
    )
    attachments: list[AttachmentIn] = Field(
        default_factory=list, max_length=20, description="Files for the agent, at `~/attachments/<name>`."
    )

    @model_validator(mode="after")
    def _agent_fits(self) -> "RequestCreate":
        if _has_nul(self.model_dump()):  # PostgreSQL's jsonb refuses NUL: the run's records could not be read
            raise ValueError("text may not contain NUL characters")
        if len(self.model_dump_json()) > MAX_REQUEST_BYTES:  # it travels as one record (Kafka takes ~1 MiB)
            raise ValueError(f"the request is larger than {MAX_REQUEST_BYTES} bytes (spec, steps and all)")
        if self.agent == "script" and not self.steps:
            raise ValueError("the script agent needs `steps`")
        if self.agent != "script" and self.steps:
            raise ValueError("`steps` are for the script agent")
        if (self.agent == "cli") != (self.command is not None):
            raise ValueError("`command` goes with (and only with) the cli agent")
        if self.model is not None and (not self.model.strip() or not self.model.isprintable()):
            raise ValueError("`model` is empty or holds a control character")
        if self.repository.startswith("-") or any(c in self.repository for c in "\n\r\0"):
            raise ValueError("not a repository")
        names = [a.name for a in self.attachments]
        if len(set(names)) != len(names):
            raise ValueError("attachment names must be unique")
        return self


class RunPublic(BaseModel):
    id: str
    state: str
    attempt: int
    title: str | None
    agent: str | None
    repository: str | None
    sandbox_id: str | None
    reason: str | None
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: dict) -> "RunPublic":
        return cls(
            id=row["run_id"],
            state=row["state"],
            attempt=row["attempt"],
            title=row["title"],
            agent=row["agent"],
            repository=row["repository"],
            sandbox_id=row["sandbox_id"],
            reason=row["reason"],
            created_at=iso(row["created_at"]),
            updated_at=iso(row["updated_at"]),
        )


class RunsPublic(BaseModel):
    items: list[RunPublic]
    next_after: str | None


class AttemptPublic(BaseModel):
    """One attempt of a run: its records by kind (payloads as recorded)."""

    attempt: int
    guidance: str | None = None
    diffs: list[dict[str, Any]] = Field(default_factory=list)
    test_results: list[dict[str, Any]] = Field(default_factory=list)
    patch: dict[str, Any] | None = None
    violations: list[dict[str, Any]] = Field(default_factory=list)
    review: dict[str, Any] | None = None
    merge_request: dict[str, Any] | None = None


class RunDetail(RunPublic):
    spec: str | None
    attempts: list[AttemptPublic]
    artifacts: list[dict[str, Any]]


class ReviewCreate(BaseModel):
    """A reviewer's verdict on the attempt awaiting review; ``rerun`` starts a new attempt with ``guidance``."""

    model_config = {"extra": "forbid"}
    decision: Literal["approve", "reject", "rerun"]
    comment: str | None = Field(default=None, max_length=16 * 1024)
    guidance: str | None = Field(default=None, max_length=64 * 1024)

    @model_validator(mode="after")
    def _guidance_for_rerun(self) -> "ReviewCreate":
        if _has_nul(self.model_dump()):
            raise ValueError("text may not contain NUL characters")
        if (self.decision == "rerun") != (self.guidance is not None):
            raise ValueError("`guidance` goes with (and only with) `rerun`")
        return self


class RunCancel(BaseModel):
    model_config = {"extra": "forbid"}
    reason: str | None = Field(default=None, max_length=2000)


AgentTool = Literal["ls", "read_file", "write_file", "edit_file", "glob", "grep", "execute", "write_todos", "task"]
"""The deepagents tools a conversation may allow (a name outside them would silently allow nothing)."""


class ConversationCreate(BaseModel):
    """A hosted DeepAgent conversation, bound to one of the tenant's sandboxes (``sandbox_id``) or to a
    new one made with ``sandbox``'s settings. The model is asked through the platform's model gateway."""

    model_config = {"extra": "forbid"}

    sandbox_id: str | None = Field(default=None, pattern=ID_PATTERN, description="An existing sandbox of the tenant.")
    sandbox: SandboxCreate | None = Field(default=None, description="A new sandbox (when no sandbox_id is given).")
    model: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    system_prompt: str | None = Field(default=None, max_length=64 * 1024, pattern=NO_NUL)
    tools: list[AgentTool] = Field(
        default_factory=list,
        max_length=64,
        description="The deepagents tools the agent may use (ls, read_file, write_file, edit_file, glob, grep, "
        "execute, write_todos, task); empty: all of them.",
    )
    title: str | None = Field(default=None, max_length=200, pattern=NO_NUL)

    @model_validator(mode="after")
    def _one_sandbox(self) -> "ConversationCreate":
        if self.sandbox_id is not None and self.sandbox is not None:
            raise ValueError("give sandbox_id (an existing sandbox) or sandbox (a new one), not both")
        return self


class ConversationPublic(BaseModel):
    id: str
    sandbox_id: str
    model: str
    title: str | None
    state: str = Field(description="requested (the processor has not answered yet) | idle | replying")
    reply_id: str | None = Field(description="The reply under way, or the last one.")
    last_reply: str | None = Field(description="How the last reply ended: completed | failed | cancelled.")
    reason: str | None
    created_at: str
    updated_at: str
    stream: str = Field(description="Where its records stream (SSE): chat.delta, chat.message, tool.called, ...")

    @classmethod
    def from_row(cls, row: dict) -> "ConversationPublic":
        return cls(
            id=row["conversation_id"],
            sandbox_id=row["sandbox_id"],
            model=row["model"],
            title=row["title"],
            state=row["state"],
            reply_id=row["reply_id"],
            last_reply=row["last_reply"],
            reason=row["reason"],
            created_at=iso(row["created_at"]),
            updated_at=iso(row["updated_at"]),
            stream=f"/v1/streams/{row['conversation_id']}/events/sse",
        )


class ConversationsPublic(BaseModel):
    items: list[ConversationPublic]
    next_after: str | None


class ConversationMessage(BaseModel):
    model_config = {"extra": "forbid"}

    text: str = Field(min_length=1, max_length=256 * 1024, pattern=NO_NUL)


class MessageAccepted(BaseModel):
    """The message is on the record; the reply streams on the conversation's stream."""

    conversation_id: str
    message_id: str
    reply_id: str
    stream: str


class ConversationDetail(ConversationPublic):
    """The conversation with its messages, tool calls and results, and replies, as recorded."""

    messages: list[dict[str, Any]]


class ReplyCancel(BaseModel):
    model_config = {"extra": "forbid"}

    reason: str | None = Field(default=None, max_length=1000, pattern=NO_NUL)


class LeaseCreate(BaseModel):
    """Take a file's lease in a shared sandbox (or extend your own)."""

    model_config = {"extra": "forbid"}

    path: str = Field(min_length=1, max_length=4096, pattern=r"^/[^\x00]*$")
    ttl_s: float = Field(default=60.0, gt=0, le=3600)
    holder: str | None = Field(
        default=None, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$", description="A name for the agent holding it."
    )


class LeasePublic(BaseModel):
    sandbox_id: str
    path: str
    holder: str
    acquired_at: str
    expires_at: str


class LeasesPublic(BaseModel):
    items: list[LeasePublic]


class ProjectRouteIn(BaseModel):
    """Where one Sentry/GlitchTip project's alerts go."""

    model_config = {"extra": "forbid"}
    repository: str = Field(min_length=1, max_length=2048, description="URL or local path, on the allowlist.")
    base_branch: str = Field(default="main", min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._/-]+$")

    @model_validator(mode="after")
    def _a_repository(self) -> "ProjectRouteIn":
        if self.repository.startswith("-") or any(c in self.repository for c in "\n\r\0"):
            raise ValueError("not a repository")
        return self


def _usable_url(url: str) -> bool:
    """Whether httpx and the address check can use ``url``: ``http://[::1`` and ``http://h:99999``
    passed the pattern and then raised ValueError in the alerts processor at every call."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError:
        return False
    return bool(parts.hostname) and parts.username is None and parts.password is None


class IntegrationCreate(BaseModel):
    """A Sentry or GlitchTip integration: alerts of its projects become remediation runs."""

    model_config = {"extra": "forbid"}
    kind: Literal["sentry", "glitchtip"]
    name: str | None = Field(default=None, max_length=200)
    client_secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=512,
        description="Sentry only: the integration's Client Secret (signs every webhook). Never returned.",
    )
    api_base_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="For enrichment and comments, e.g. https://sentry.io or https://app.glitchtip.com.",
    )
    api_token: str | None = Field(
        default=None, min_length=1, max_length=1024, description="Bearer token (scopes event:read, event:write)."
    )
    organization: str | None = Field(
        default=None, max_length=255, pattern=r"^[A-Za-z0-9._-]+$", description="Sentry organization slug."
    )
    projects: dict[Annotated[str, Field(min_length=1, max_length=255)], ProjectRouteIn] = Field(
        min_length=1,
        max_length=500,
        description="Project slug, numeric id or (GlitchTip) name -> the repository its runs work on.",
    )
    agent: Literal["codex", "cli", "script"] = "script"
    steps: list[ScriptStepIn] = Field(default_factory=list, max_length=200, description="The script agent's steps.")
    test_command: str | None = Field(default=None, min_length=1, max_length=16 * 1024)
    writable_paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=200
    )
    rate_limit_runs: int = Field(default=10, ge=1, le=10_000, description="New runs per project per window.")
    rate_limit_window_s: int = Field(default=3600, ge=1, le=7 * 86400)

    @model_validator(mode="after")
    def _consistent(self) -> "IntegrationCreate":
        if _has_nul(self.model_dump()):
            raise ValueError("text may not contain NUL characters")
        if len(self.model_dump_json()) > MAX_REQUEST_BYTES:
            raise ValueError(f"the integration is larger than {MAX_REQUEST_BYTES} bytes")
        if self.kind == "sentry" and not self.client_secret:
            raise ValueError("a Sentry integration needs its `client_secret`")
        if self.kind == "glitchtip" and self.client_secret:
            raise ValueError("GlitchTip signs nothing: its webhook URL carries a generated secret instead")
        if self.api_base_url and not _usable_url(self.api_base_url):
            raise ValueError("`api_base_url` needs a host, a port in range and no user:password@")
        if self.api_token and not self.api_base_url:
            raise ValueError("`api_token` goes with `api_base_url`")
        if self.agent == "script" and not self.steps:
            raise ValueError("the script agent needs `steps`")
        if self.agent != "script" and self.steps:
            raise ValueError("`steps` are for the script agent")
        return self


class IntegrationPublic(BaseModel):
    """An integration as it is shown: no secret, ever (``has_api_token`` says whether one is set)."""

    id: str
    kind: str
    name: str | None
    webhook_path: str | None = Field(description="Sentry: where to point the webhook; GlitchTip: shown once only.")
    api_base_url: str | None
    has_api_token: bool
    organization: str | None
    projects: dict[str, ProjectRouteIn]
    agent: str
    test_command: str | None
    writable_paths: list[str]
    rate_limit_runs: int
    rate_limit_window_s: int
    created_at: str


class IntegrationsPublic(BaseModel):
    items: list[IntegrationPublic]
    next_after: str | None

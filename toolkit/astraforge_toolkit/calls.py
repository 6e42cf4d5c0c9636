"""The API's calls, described once and sent by either client.

``ApiCalls`` builds a ``Call`` (method, path, body, how to read the answer) for each endpoint and
hands it to ``self._send``: the sync client's ``_send`` returns the result, the async client's
returns an awaitable of it, so both flavours share every method below. Calls that create or run
something carry an ``Idempotency-Key``; the clients send the same key again when they retry after
a dropped connection, so the platform answers the first attempt instead of running it twice.
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from astraforge_toolkit.types import (
    ArtifactRef,
    Conversation,
    Event,
    ExecAccepted,
    ExecResult,
    FileWritten,
    MessageAccepted,
    Page,
    Run,
    Sandbox,
    Snapshot,
)

EXEC_ANSWER_MARGIN_S = 60.0  # the API answers a command's timeout within 30 s of it
# an artifact or a run is readable once its record is projected, milliseconds after the answer
# that names it: a 404 from a call on one is retried for this long (a 404 appended nothing)
PROJECTION_GRACE_S = 5.0


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    read: Callable[[httpx.Response], Any]
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    timeout: float | None = None  # None: the client's default
    idempotency_key: str | None = field(default=None)
    # a 404 is retried for this long: the resource is named by a record the projection may not
    # have written yet (an artifact is readable "milliseconds after the result that names it")
    not_found_grace_s: float = 0.0

    @property
    def retryable(self) -> bool:
        """Safe to send again after a dropped connection: a read, or a write under a key."""
        return self.method == "GET" or self.idempotency_key is not None


def _key() -> str:
    return str(uuid.uuid4())


def _none(_: httpx.Response) -> None:
    return None


def _bytes(r: httpx.Response) -> bytes:
    return r.content


def _page(cls: Any) -> Callable[[httpx.Response], Page[Any]]:
    def read(r: httpx.Response) -> Page[Any]:
        body = r.json()
        return Page([cls.from_json(i) for i in body["items"]], body.get("next_after"))

    return read


def _one(cls: Any) -> Callable[[httpx.Response], Any]:
    return lambda r: cls.from_json(r.json())


def _exec_answer(r: httpx.Response) -> ExecResult | ExecAccepted:
    body = r.json()
    return ExecAccepted.from_json(body) if "exit_code" not in body else ExecResult.from_json(body)


def file_url(sandbox_id: str, path: str) -> str:
    """The file route of ``path`` (absolute, or relative to /workspace), percent-encoded."""
    return f"/v1/sandboxes/{sandbox_id}/files/{quote(path, safe='/')}"


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class ApiCalls:
    """Every endpoint of the API as a method; ``_send`` (sync or async) runs the ``Call``."""

    def _send(self, call: Call) -> Any:
        raise NotImplementedError

    # -- sandboxes -------------------------------------------------------------------------
    def create_sandbox(
        self,
        *,
        image: str | None = None,
        profile: dict[str, int | float] | None = None,
        idle_timeout_s: int | None = None,
        ttl_s: int | None = None,
        egress_allow: Sequence[str] | None = None,
        restore_snapshot: str | None = None,
        wait: bool = True,
    ) -> Sandbox:
        """A new sandbox session; with ``wait`` the answer comes once it is ready (or failed)."""
        body = _drop_none(
            image=image,
            profile=profile,
            idle_timeout_s=idle_timeout_s,
            ttl_s=ttl_s,
            egress_allow=list(egress_allow) if egress_allow is not None else None,
            restore_snapshot=restore_snapshot,
        )
        return self._send(
            Call("POST", "/v1/sandboxes", _one(Sandbox), {"wait": wait}, body, timeout=120, idempotency_key=_key())
        )

    def list_sandboxes(self, *, after: str | None = None, limit: int = 100) -> Page[Sandbox]:
        return self._send(Call("GET", "/v1/sandboxes", _page(Sandbox), _drop_none(after=after, limit=limit)))

    def get_sandbox(self, sandbox_id: str) -> Sandbox:
        return self._send(Call("GET", f"/v1/sandboxes/{sandbox_id}", _one(Sandbox)))

    def heartbeat(self, sandbox_id: str) -> None:
        """Push the sandbox's idle deadline out."""
        return self._send(Call("POST", f"/v1/sandboxes/{sandbox_id}/heartbeat", _none, idempotency_key=_key()))

    def stop_sandbox(self, sandbox_id: str) -> None:
        return self._send(Call("POST", f"/v1/sandboxes/{sandbox_id}/stop", _none, idempotency_key=_key()))

    def delete_sandbox(self, sandbox_id: str) -> None:
        return self._send(Call("DELETE", f"/v1/sandboxes/{sandbox_id}", _none, idempotency_key=_key()))

    # -- exec ------------------------------------------------------------------------------
    def _exec_call(
        self,
        sandbox_id: str,
        command: str | Sequence[str],
        cwd: str | None,
        env: dict[str, str] | None,
        timeout: float | None,
        run_async: bool,
    ) -> Call:
        body = _drop_none(
            command=command if isinstance(command, str) else list(command), cwd=cwd, env=env, timeout_sec=timeout
        )
        body["async"] = run_async
        wait = (timeout or 600) + EXEC_ANSWER_MARGIN_S
        return Call(
            "POST",
            f"/v1/sandboxes/{sandbox_id}/exec",
            _exec_answer,
            json=body,
            timeout=wait,
            idempotency_key=_key(),
        )

    def exec(
        self,
        sandbox_id: str,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``command`` (a shell string, or an argv list) and answer when it has finished."""
        return self._send(self._exec_call(sandbox_id, command, cwd, env, timeout, False))

    def exec_async(
        self,
        sandbox_id: str,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> ExecAccepted:
        """Start ``command``; its ``exec.output`` / ``exec.finished`` records follow on the stream."""
        return self._send(self._exec_call(sandbox_id, command, cwd, env, timeout, True))

    def cancel_exec(self, sandbox_id: str, command_id: str) -> None:
        """Kill a running command's process tree (its ``exec.finished`` says cancelled)."""
        path = f"/v1/sandboxes/{sandbox_id}/exec/{command_id}/cancel"
        return self._send(Call("POST", path, _none, idempotency_key=_key()))

    # -- files -----------------------------------------------------------------------------
    def upload(self, sandbox_id: str, path: str, data: bytes) -> FileWritten:
        """Write ``data`` to ``path`` (parents are created; an existing file is replaced)."""
        call = Call("PUT", file_url(sandbox_id, path), _one(FileWritten), content=data, idempotency_key=_key())
        return self._send(call)

    def download(self, sandbox_id: str, path: str) -> bytes:
        return self._send(Call("GET", file_url(sandbox_id, path), _bytes, timeout=120))

    def export(self, sandbox_id: str, path: str) -> ArtifactRef:
        """Store a file of the sandbox as an artifact (it outlives the sandbox)."""
        return self._send(Call("GET", file_url(sandbox_id, path), _one(ArtifactRef), {"export": True}, timeout=120))

    def artifact(self, artifact_id: str) -> bytes:
        """An artifact's bytes (a snapshot, an export, output past the inline limit)."""
        return self._send(
            Call("GET", f"/v1/artifacts/{artifact_id}", _bytes, timeout=120, not_found_grace_s=PROJECTION_GRACE_S)
        )

    def delete_artifact(self, artifact_id: str) -> None:
        return self._send(Call("DELETE", f"/v1/artifacts/{artifact_id}", _none))

    # -- snapshots -------------------------------------------------------------------------
    def snapshot(self, sandbox_id: str) -> Snapshot:
        """A gzip'd tar of the sandbox's /workspace in the artifact store."""
        call = Call(
            "POST", f"/v1/sandboxes/{sandbox_id}/snapshots", _one(Snapshot), timeout=330, idempotency_key=_key()
        )
        return self._send(call)

    def fork(
        self,
        snapshot_id: str,
        count: int = 1,
        *,
        profile: dict[str, int | float] | None = None,
        idle_timeout_s: int | None = None,
        ttl_s: int | None = None,
    ) -> list[Sandbox]:
        """``count`` new sandboxes restored from the snapshot, answered once all are ready."""
        body = _drop_none(count=count, profile=profile, idle_timeout_s=idle_timeout_s, ttl_s=ttl_s)

        def read(r: httpx.Response) -> list[Sandbox]:
            return [Sandbox.from_json(s) for s in r.json()]

        path = f"/v1/snapshots/{snapshot_id}/fork"
        return self._send(Call("POST", path, read, json=body, timeout=120, idempotency_key=_key()))

    # -- runs ------------------------------------------------------------------------------
    def create_run(self, spec: str, repository: str, **fields: Any) -> Run:
        """Start a run (``POST /v1/requests``): ``fields`` are the request's other members
        (``agent``, ``steps``, ``test_command``, ``writable_paths``, ``base_branch``, ...)."""
        body = {"spec": spec, "repository": repository, **fields}
        return self._send(Call("POST", "/v1/requests", _one(Run), json=body, idempotency_key=_key()))

    def get_run(self, run_id: str) -> Run:
        """The run; ``raw`` holds its attempts (diffs, tests, patch, review) and artifacts."""
        return self._send(Call("GET", f"/v1/runs/{run_id}", _one(Run), not_found_grace_s=PROJECTION_GRACE_S))

    def list_runs(
        self, *, state: str | None = None, text: str | None = None, after: str | None = None, limit: int = 100
    ) -> Page[Run]:
        params = _drop_none(state=state, text=text, after=after, limit=limit)
        return self._send(Call("GET", "/v1/runs", _page(Run), params))

    def review_run(self, run_id: str, decision: str, *, comment: str | None = None, guidance: str | None = None) -> Run:
        """``decision``: approve, reject, or rerun (with ``guidance``) a run awaiting review."""
        body = _drop_none(decision=decision, comment=comment, guidance=guidance)
        path = f"/v1/runs/{run_id}/review"
        call = Call("POST", path, _one(Run), json=body, idempotency_key=_key(), not_found_grace_s=PROJECTION_GRACE_S)
        return self._send(call)

    def approve_run(self, run_id: str, *, comment: str | None = None) -> Run:
        return self.review_run(run_id, "approve", comment=comment)

    def cancel_run(self, run_id: str, *, reason: str | None = None) -> Run:
        body = _drop_none(reason=reason)
        path = f"/v1/runs/{run_id}/cancel"  # a 404 appended nothing: safe to send again
        return self._send(Call("POST", path, _one(Run), json=body, not_found_grace_s=PROJECTION_GRACE_S))

    # -- conversations (hosted DeepAgents) ----------------------------------------------------
    def create_conversation(
        self,
        model: str,
        *,
        sandbox_id: str | None = None,
        sandbox: dict[str, Any] | None = None,
        system_prompt: str | None = None,
        tools: Sequence[str] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        title: str | None = None,
    ) -> Conversation:
        """A conversation bound to ``sandbox_id`` (or to a new sandbox made with ``sandbox``'s
        create settings); ``tools`` limits the deepagents tools (empty: all)."""
        body = _drop_none(
            model=model,
            sandbox_id=sandbox_id,
            sandbox=sandbox,
            system_prompt=system_prompt,
            tools=list(tools) if tools is not None else None,
            temperature=temperature,
            max_tokens=max_tokens,
            title=title,
        )
        return self._send(
            Call("POST", "/v1/conversations", _one(Conversation), json=body, timeout=120, idempotency_key=_key())
        )

    def get_conversation(self, conversation_id: str) -> Conversation:
        path = f"/v1/conversations/{conversation_id}"
        return self._send(Call("GET", path, _one(Conversation), not_found_grace_s=PROJECTION_GRACE_S))

    def list_conversations(
        self, *, sandbox_id: str | None = None, after: str | None = None, limit: int = 100
    ) -> Page[Conversation]:
        params = _drop_none(sandbox_id=sandbox_id, after=after, limit=limit)
        return self._send(Call("GET", "/v1/conversations", _page(Conversation), params))

    def send_message(self, conversation_id: str, text: str) -> MessageAccepted:
        """Post a user message; the reply streams on the conversation's stream (``converse``
        sends and follows it)."""
        path = f"/v1/conversations/{conversation_id}/messages"
        call = Call(
            "POST",
            path,
            _one(MessageAccepted),
            json={"text": text},
            idempotency_key=_key(),
            not_found_grace_s=PROJECTION_GRACE_S,
        )
        return self._send(call)

    def cancel_reply(self, conversation_id: str, *, reason: str | None = None) -> Conversation:
        """Stop the reply under way, mid-stream (it ends ``reply.cancelled``); 409 ``Conflict``
        when none is."""
        path = f"/v1/conversations/{conversation_id}/cancel"
        return self._send(Call("POST", path, _one(Conversation), json=_drop_none(reason=reason)))

    # -- streams ---------------------------------------------------------------------------
    def events(self, stream_id: str, *, after: int = -1, limit: int = 100) -> Page[Event]:
        """One page of a stream's records with offset > ``after`` (REST; ``stream`` follows live)."""
        return self._send(
            Call("GET", f"/v1/streams/{stream_id}/events", _page(Event), {"after": after, "limit": limit})
        )

"""The coding track: the real Codex CLI (``codex exec --json``) in a run's sandbox, and a pure
translation of the JSONL it prints into our records.

Invocation (``codex_invocation``): the binary the sandbox image carries (``/usr/local/bin/codex``,
deploy/local/rootfs.sh and deploy/docker/sandbox.Dockerfile) runs as the sandbox's agent uid with
``--dangerously-bypass-approvals-and-sandbox``: the sandbox is the isolation, Codex's own sandbox
(bubblewrap, landlock) would need privileges the sandbox rightly lacks. ``CODEX_HOME`` is on the
writable ``$HOME`` tmpfs (Codex refuses to make its helper links under /tmp). The model provider is
the platform's model gateway, reached as ``http://<upstream>/v1`` through the sandbox's egress
proxy (``HTTP_PROXY``, set by the supervisor for every exec of a sandbox with egress): the sandbox
must be granted that platform upstream, which only the platform does. Codex sends
``Authorization: Bearer <placeholder>``; the proxy replaces the header with the operator's real
key (``Settings.egress_credentials[<upstream>]``), so the key never enters the sandbox. The prompt
travels in a file (``PROMPT_PATH``, written before the exec) read on stdin: a spec can be longer
than one argument may be, and it stays out of the command line.

Translation (``CodexTranslator``): each JSONL event Codex prints becomes zero or more
``AgentRecord`` (a record type and its payload, as ``schemas/avro`` declares them); the run's
driver appends them to the run's stream. The exec's own output records stay the ground truth
(what the supervisor observed); these are a reading of it, so an unknown or malformed line is
skipped, never fatal:

- ``agent_message`` / ``reasoning`` → ``chat.message`` (role ``agent`` / ``reasoning``)
- ``command_execution`` → ``tool.called`` (name ``command``, ``{"command": ...}``) when it starts
  and ``tool.result`` (its output, ``is_error`` when the exit code is not 0) when it ends
- ``file_change`` → ``diff.produced`` (the files Codex says it changed, relative to the workspace;
  the content of a change is what the platform's own ``diff.captured`` holds)
- ``mcp_tool_call`` / ``web_search`` / other tool items → ``tool.called`` / ``tool.result``
- ``error`` items, ``turn.failed`` and ``error`` events → ``chat.message`` (role ``error``)
- ``turn.completed`` → ``agent.usage`` (tokens of that turn)

Ids in the records are the exec's command id and Codex's item id (``<command id>:item_3``):
Codex numbers items from 0 in every session, so they are unique only within one invocation.

Not protected here: what Codex reports about its own commands is Codex's word (a command it ran is
in the sandbox's process tree, not in a record of the supervisor's); a tool output longer than
``MAX_TEXT`` is cut (the whole of it is in the exec's output records).
"""

import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from astraforge import jsontext
from astraforge.sandbox.profile import HOME
from astraforge.schemas import Envelope

CODEX_BINARY = "/usr/local/bin/codex"
CODEX_HOME = f"{HOME}/.codex"  # on the $HOME tmpfs; Codex will not make its helper links under /tmp
PROMPT_PATH = f"{CODEX_HOME}/prompt.md"
WORKSPACE = "/workspace"
TOKEN_ENV = "ASTRAFORGE_MODEL_TOKEN"  # holds the per-run placeholder; the egress proxy swaps it
PROVIDER = "astraforge"
DEFAULT_MODEL = "gpt-5.5"  # a model Codex knows (its tools, apply_patch included, follow the model)
DEFAULT_UPSTREAM = "model-gateway"
REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
# a host name, and a port only a direct connection has (bench/codex.py's raw baseline): it goes into a
# TOML string and a URL
UPSTREAM_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?")
MAX_TEXT = 60 * 1024  # a record's text stays under the 64 KiB a record may carry inline
AGENT = "agent:codex"  # the actor of the records a Codex session yields


@dataclass(frozen=True)
class CodexInvocation:
    """How to run one Codex session in a sandbox: write ``files`` (path -> bytes), then exec
    ``argv`` with ``env`` in ``cwd``; its stdout is the JSONL ``CodexTranslator`` reads."""

    argv: list[str]
    env: dict[str, str]
    files: dict[str, bytes]
    cwd: str = WORKSPACE

    def commands(self, command_id: str, timeout_s: float) -> list[tuple[str, dict[str, Any]]]:
        """The sandbox commands (type, payload) that run it, in order: a ``sandbox.file.write`` per
        file (request ids ``<command id>-f<n>``), then the ``sandbox.exec`` (``command_id``)."""
        writes = [
            (
                "sandbox.file.write",
                {"request_id": f"{command_id}-f{i}", "path": path, "content": content, "artifact": None, "mode": 0o600},
            )
            for i, (path, content) in enumerate(self.files.items())
        ]
        run = {
            "command_id": command_id,
            "argv": self.argv,
            "shell": None,
            "cwd": self.cwd,
            "env": self.env,
            "timeout_s": timeout_s,
            "async_": False,
        }
        return [*writes, ("sandbox.exec", run)]


def placeholder_token(run_id: str) -> str:
    """What the sandbox holds instead of the model key: it names the run and opens nothing (the
    egress proxy drops whatever ``Authorization`` a request to the gateway carries)."""
    return f"astraforge-placeholder-{run_id}"


def codex_invocation(
    prompt: str,
    run_id: str,
    model: str = DEFAULT_MODEL,
    upstream: str = DEFAULT_UPSTREAM,
    reasoning_effort: str | None = None,
) -> CodexInvocation:
    """The invocation of ``codex exec`` on ``prompt`` against the platform upstream ``upstream``;
    ``ValueError`` for a model, upstream or reasoning effort that cannot be passed on as it is."""
    if not UPSTREAM_NAME.fullmatch(upstream):
        raise ValueError(f"platform upstream name {upstream!r} is not a host name")
    if not model or not model.isprintable():
        raise ValueError(f"model name {model!r} is empty or holds a control character")
    provider = (
        f'{{name = "AstraForge model gateway", base_url = "http://{upstream}/v1", '
        f'env_key = "{TOKEN_ENV}", wire_api = "responses"}}'
    )
    config = [
        f"model_provider={PROVIDER}",
        f"model_providers.{PROVIDER}={provider}",
        # nothing but the model: no plugin marketplace (github.com, chatgpt.com), no analytics, no
        # update check; each would only be an egress.denied per run
        "features.plugins=false",
        "analytics.enabled=false",
        "check_for_update_on_startup=false",
    ]
    if reasoning_effort is not None:
        if reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(f"reasoning effort {reasoning_effort!r} is not one of {', '.join(REASONING_EFFORTS)}")
        config.append(f"model_reasoning_effort={reasoning_effort}")
    codex = [
        CODEX_BINARY,
        "exec",
        "--json",
        "--color",
        "never",
        "--skip-git-repo-check",
        "--ephemeral",
        "--dangerously-bypass-approvals-and-sandbox",
        "-C",
        WORKSPACE,
        "-m",
        model,
        *(arg for c in config for arg in ("-c", c)),
        "-",
    ]
    # CODEX_HOME must exist before Codex starts; the prompt arrives on stdin
    script = f'mkdir -p "$CODEX_HOME" && exec {shlex.join(codex)} < {shlex.quote(PROMPT_PATH)}'
    env = {"HOME": HOME, "CODEX_HOME": CODEX_HOME, TOKEN_ENV: placeholder_token(run_id), "NO_PROXY": "", "no_proxy": ""}
    return CodexInvocation(["/bin/sh", "-c", script], env, {PROMPT_PATH: prompt.encode()})


# -- translation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AgentRecord:
    """A record the agent's output says happened: its type and its payload (the Avro record)."""

    type: str
    payload: dict[str, Any]


@dataclass
class CodexTranslator:
    """Reads one Codex session's stdout, in pieces as they arrive (``feed``), into records.

    ``prefix`` (the exec's command id) makes Codex's per-session item ids unique in the run's stream.
    """

    prefix: str
    workspace: str = WORKSPACE
    _buffer: bytes = b""
    _called: set[str] = field(default_factory=set)
    _events: int = 0  # JSON events read: names the records of events that carry no id
    skipped: int = 0  # lines that were not a JSON object

    def feed(self, data: bytes) -> list[AgentRecord]:
        """Records of every line ``data`` completes."""
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return [r for line in lines for r in self._line(line)]

    def close(self) -> list[AgentRecord]:
        """Records of a last line without its newline (the stream ended)."""
        rest, self._buffer = self._buffer, b""
        return self._line(rest)

    def _line(self, line: bytes) -> list[AgentRecord]:
        if not line.strip():
            return []
        try:  # as text: what the agent prints reaches here, and a lone surrogate escaped could be in no record
            event = jsontext.loads(line)
        except (ValueError, RecursionError):  # not JSON, or nested past what json's parser takes
            self.skipped += 1
            return []
        if not isinstance(event, dict):
            self.skipped += 1
            return []
        return self.translate(event)

    def translate(self, event: dict[str, Any]) -> list[AgentRecord]:
        """Records of one JSONL event."""
        self._events += 1
        kind = event.get("type")
        if kind in ("item.started", "item.updated", "item.completed") and isinstance(event.get("item"), dict):
            return self._item(event["item"], done=kind == "item.completed")
        if kind == "turn.completed" and isinstance(event.get("usage"), dict):
            return [AgentRecord("agent.usage", usage_payload(self.prefix, event["usage"]))]
        if kind == "turn.failed":
            error = event.get("error")
            text = _text(error.get("message") if isinstance(error, dict) else error)
            return [self._chat(f"event-{self._events}", "error", text)]
        if kind == "error":
            return [self._chat(f"event-{self._events}", "error", _text(event.get("message")))]
        return []  # thread.started, turn.started, and kinds a later Codex adds

    def _item(self, item: dict[str, Any], done: bool) -> list[AgentRecord]:
        item_id, kind = str(item.get("id", "")), item.get("type")
        if kind == "agent_message":
            return [self._chat(item_id, "agent", _text(item.get("text")))] if done else []
        if kind == "reasoning":
            return [self._chat(item_id, "reasoning", _text(item.get("text")))] if done else []
        if kind == "error":
            return [self._chat(item_id, "error", _text(item.get("message")))] if done else []
        if kind == "file_change":
            return [AgentRecord("diff.produced", self._diff(item_id, item))] if done else []
        if kind == "todo_list":
            return []  # the plan is Codex's own bookkeeping; its messages say what it does
        name, arguments = _tool(item)
        records = []
        call_id = f"{self.prefix}:{item_id}"
        if call_id not in self._called and item.get("type") is not None:
            self._called.add(call_id)
            records.append(
                AgentRecord("tool.called", {"call_id": call_id, "name": name, "arguments_json": json.dumps(arguments)})
            )
        if done:
            output, truncated = _cut(_tool_output(item))
            records.append(
                AgentRecord(
                    "tool.result",
                    {
                        "call_id": call_id,
                        "output": output,
                        "is_error": _failed(item),
                        "truncated": truncated,
                        "artifact": None,  # v10 fields (offloaded outputs), at their defaults
                        "path": None,
                        "size": 0,
                    },
                )
            )
        return records

    def _chat(self, item_id: str, role: str, text: str) -> AgentRecord:
        return AgentRecord(
            "chat.message", {"message_id": f"{self.prefix}:{item_id}", "role": role, "text": _cut(text)[0]}
        )

    def _diff(self, item_id: str, item: dict[str, Any]) -> dict[str, Any]:
        changes = [c for c in item.get("changes") or [] if isinstance(c, dict) and isinstance(c.get("path"), str)]
        files = [_relative(c["path"], self.workspace) for c in changes]
        return {
            "diff_id": f"{self.prefix}:{item_id}",
            "files": files,
            "patch": None,
            "artifact": None,
            "additions": 0,
            "deletions": 0,
            "attempt": 1,  # DiffProduced's defaults (schema v9): the driver knows the attempt, not the translator
            "step": 0,
            "binary_files": [],
        }


def translate_output(command_id: str, outputs: Iterable[Envelope]) -> list[AgentRecord]:
    """The records of a finished Codex exec, from its ``exec.output`` records as the stream holds
    them (stdout only: Codex logs to stderr; another command's output is ignored). Output past what
    a command may keep in records (``max_output_bytes``, then an artifact) is not read."""
    translator = CodexTranslator(command_id)
    records = []
    for e in outputs:
        if e.type == "exec.output" and e.payload["command_id"] == command_id and e.payload["stream"] == "stdout":
            records += translator.feed(e.payload["data"])
    return records + translator.close()


def usage_payload(prefix: str, usage: dict[str, Any]) -> dict[str, Any]:
    """The ``agent.usage`` payload of a ``turn.completed`` event's usage."""

    def count(name: str) -> int:  # what the agent printed: a count no Avro long holds is no count
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 else 0

    return {
        "session_id": prefix,
        "input_tokens": count("input_tokens"),
        "cached_input_tokens": count("cached_input_tokens"),
        "output_tokens": count("output_tokens"),
        "reasoning_output_tokens": count("reasoning_output_tokens"),
    }


def _tool(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A tool item's name and arguments, as a ``tool.called`` records them."""
    kind = item.get("type")
    if kind == "command_execution":
        return "command", {"command": _text(item.get("command"))}
    if kind == "mcp_tool_call":
        return f"mcp:{item.get('server', '')}/{item.get('tool', '')}", {"arguments": item.get("arguments")}
    if kind == "web_search":
        return "web_search", {"query": _text(item.get("query"))}
    return str(kind), {k: v for k, v in item.items() if k not in ("id", "type", "status")}


def _tool_output(item: dict[str, Any]) -> str:
    if item.get("type") == "command_execution":
        return _text(item.get("aggregated_output"))
    if item.get("type") == "mcp_tool_call":
        return json.dumps(item.get("error") or item.get("result"))
    return ""


def _failed(item: dict[str, Any]) -> bool:
    if item.get("status") in ("failed", "declined"):
        return True
    exit_code = item.get("exit_code")
    return isinstance(exit_code, int) and exit_code != 0


def _relative(path: str, workspace: str) -> str:
    root = workspace.rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else path


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


def _cut(text: str) -> tuple[str, bool]:
    """``text`` within ``MAX_TEXT`` bytes of UTF-8, and whether it was cut."""
    data = text.encode()
    if len(data) <= MAX_TEXT:
        return text, False
    return data[:MAX_TEXT].decode(errors="ignore"), True

"""One reply of a hosted DeepAgent: deepagents' ``create_deep_agent`` over the recorded sandbox,
streamed into records.

The agent starts from the conversation's history as its records hold it (``ConversationState``), so
a reply resumed by another processor continues where the records end. What the graph streams
becomes records through ``Recorder`` (the processor writes them under the conversation's partition
lock, and refuses them once the reply is no longer current: cancelled, or the partition moved):

- each whole model turn -> ``chat.message`` (role assistant),
  then ``tool.called`` per tool call (``subagent.called`` too for deepagents' ``task``), before any
  of the calls runs;
- each tool's result -> ``tool.result`` (output above ``RECORD_OUTPUT_BYTES`` goes to the artifact
  store: the record carries its reference and a preview; an ``execute`` output the backend
  offloaded carries the sandbox path the agent was given); a ``write_todos`` -> ``todo.updated``;
- each model token -> into a ``chat.delta`` batch (``DeltaBatcher``: ~20 ms or 32 tokens per record);
- after each round of tools, and before the reply completes -> ``agent.checkpoint`` (the history,
  incrementally in the artifact store: ``checkpoints``).

Each artifact stored is also an ``artifact.stored`` record first, as the sandbox processor writes for
its own: the tenant can then read (``GET /v1/artifacts/{id}``), list and delete what the records
reference, and the bytes count against its quota.
"""

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from deepagents import create_deep_agent
from deepagents.backends.composite import CompositeBackend
from deepagents.middleware.subagents import GENERAL_PURPOSE_SUBAGENT
from langchain.agents.middleware import AgentMiddleware, TodoListMiddleware
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from astraforge import jsontext
from astraforge.artifacts import ArtifactStore
from astraforge.errors import AstraForgeError
from astraforge.processors.conversations.backend import RecordedSandbox, stored
from astraforge.processors.conversations.state import ConversationState, tool_result, turn_message_id

LOG = logging.getLogger(__name__)
RECORD_OUTPUT_BYTES = 32 * 1024  # a tool result's output kept in its record; the whole of a larger one is an artifact
PREVIEW_BYTES = 4 * 1024
# where deepagents' middleware offloads the history it summarises and oversized tool results: its default
# root (/conversation_history, /large_tool_results) is read-only in the sandbox, which failed the reply
AGENT_FILES = "/tmp/astraforge-agent"
RECURSION_LIMIT = 200  # graph steps in one reply (each model turn and each round of tools is one or two)
# tokens go out in batches: one acknowledged append per DELTA_TOKENS tokens, or DELTA_WAIT_S after a
# batch's first token, whichever comes first (an append per token cost a broker round trip each)
DELTA_TOKENS = 32
DELTA_WAIT_S = 0.02


class ReplyStopped(AstraForgeError, RuntimeError):
    """The reply is no longer this writer's: cancelled, ended, or its partition moved."""


class Recorder(Protocol):
    def __call__(self, type_: str, payload: dict[str, Any]) -> None:
        """Write one record of the reply (raises ``ReplyStopped`` if the reply is no longer current)."""


def history(messages: Sequence[dict[str, Any]]) -> list[BaseMessage]:
    """The conversation's history (``state.History.messages``) as the messages the model sees."""
    out: list[BaseMessage] = []
    for m in messages:
        if m["role"] == "user":
            out.append(HumanMessage(content=m["content"], id=m["id"]))
        elif m["role"] == "assistant":
            calls = [{"id": c["id"], "name": c["name"], "args": _args(c["arguments_json"])} for c in m["tool_calls"]]
            out.append(AIMessage(content=m["content"], tool_calls=calls, id=m["id"]))
        else:
            out.append(ToolMessage(content=m["content"], tool_call_id=m["tool_call_id"]))
    return out


def _args(arguments_json: str) -> dict:
    """A recorded tool call's arguments, as text (``jsontext``): the model may escape a lone surrogate,
    which ``tool.called`` keeps as it came; given back raw in the history, the request to the model
    could not be encoded and every later reply of the conversation failed."""
    try:
        value = jsontext.loads(arguments_json)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def chat_model(settings: dict[str, Any], base_url: str, api_key: str) -> ChatOpenAI:
    """The conversation's model, asked through the platform's model gateway."""
    options: dict[str, Any] = {}
    if settings.get("temperature") is not None:
        options["temperature"] = settings["temperature"]
    if settings.get("max_tokens") is not None:
        options["max_tokens"] = settings["max_tokens"]
    return ChatOpenAI(
        model=settings["model"], base_url=base_url, api_key=api_key, streaming=True, max_retries=1, **options
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)


class ReplyRun:
    """Runs one reply to its end, writing its records through ``record``."""

    def __init__(
        self,
        st: ConversationState,
        messages: Sequence[dict[str, Any]],
        model: ChatOpenAI,
        backend: RecordedSandbox,
        artifacts: ArtifactStore,
        record: Recorder,
        current: Callable[[], ConversationState | None],
        checkpoint: Callable[[], None],
    ) -> None:
        assert st.reply is not None
        self.st = st
        self.messages = messages
        self.reply_id = st.reply.reply_id
        self.model = model
        self.backend = backend
        self.artifacts = artifacts
        self.record = record
        self.current = current
        self.checkpoint = checkpoint
        self.turn = st.reply.turns
        self.message_id = turn_message_id(st.reply)  # a new id if this turn was cut off mid-stream
        self.tool_names: dict[str, str] = {}
        self.final_text = ""
        self.deltas = DeltaBatcher(self.record)

    def graph(self):
        allowed = set(self.st.settings.get("tools") or [])
        middleware: list[AgentMiddleware] = [TodoListMiddleware()]  # write_todos: the plan, as todo.updated records
        subagents = None
        if allowed:
            middleware.append(_ToolFilter(allowed))
            # deepagents' default sub-agent does not inherit our middleware: the same limit, spelled out
            subagents = [{**GENERAL_PURPOSE_SUBAGENT, "middleware": [_ToolFilter(allowed)]}]
        return create_deep_agent(
            model=self.model,
            backend=CompositeBackend(default=self.backend, routes={}, artifacts_root=AGENT_FILES),
            system_prompt=self.st.settings.get("system_prompt") or None,
            middleware=middleware,
            subagents=subagents,
        )

    def run(self) -> str:
        """Stream the agent from the history; the final assistant text."""
        graph = self.graph()
        state = {"messages": history(self.messages), "todos": [dict(t) for t in self.st.todos]}
        config = {"recursion_limit": RECURSION_LIMIT}
        try:
            for mode, data in graph.stream(state, config=config, stream_mode=["messages", "updates"]):
                if self._gone():
                    raise ReplyStopped("the reply was cancelled")
                if mode == "messages":
                    self._token(*data)
                else:
                    for node, update in (data or {}).items():
                        self._update(node, update)
            self.deltas.flush()
        finally:
            self.deltas.close()
        return self.final_text

    def _gone(self) -> bool:
        now = self.current()
        return now is None or now.reply is None or now.reply.reply_id != self.reply_id

    def _token(self, chunk: Any, metadata: dict) -> None:
        if not isinstance(chunk, AIMessageChunk) or metadata.get("langgraph_node") != "model":
            return
        if "|" in str(metadata.get("langgraph_checkpoint_ns", "")):  # a sub-agent's own model turn
            return
        text = _text(chunk.content)
        if text:
            self.deltas.add(self.message_id, text)

    def _update(self, node: str, update: Any) -> None:
        if isinstance(update, list | tuple):  # parallel tool calls: one update per call (a Command's)
            for part in update:
                self._update(node, part)
            return
        if not isinstance(update, dict):
            return
        messages = update.get("messages") or []
        if not isinstance(messages, list):
            messages = [messages]
        results = False
        for m in messages:  # only the model's and the tools' own (middleware may rewrite the history)
            if node == "model" and isinstance(m, AIMessage):
                self._turn(m)
            elif node == "tools" and isinstance(m, ToolMessage):
                self._result(m)
                results = True
        if update.get("todos") is not None and node == "tools":
            todos = [{"content": t["content"], "status": t["status"]} for t in update["todos"]]
            call = next(
                (m.tool_call_id for m in messages if isinstance(m, ToolMessage) and m.name == "write_todos"), ""
            )
            self.record("todo.updated", {"reply_id": self.reply_id, "call_id": call, "todos": todos})
        if results:
            self._checkpoint()

    def _turn(self, m: AIMessage) -> None:
        text = _text(m.content)
        self.deltas.flush()  # every delta of the turn before its whole message
        self.record("chat.message", {"message_id": self.message_id, "role": "assistant", "text": text})
        self.turn += 1
        self.message_id = f"{self.reply_id}:t{self.turn}"
        self.final_text = text
        for call in m.tool_calls:
            self.tool_names[call["id"]] = call["name"]
            args = json.dumps(call.get("args") or {})
            self.record("tool.called", {"call_id": call["id"], "name": call["name"], "arguments_json": args})
            if call["name"] == "task":
                a = call.get("args") or {}
                self.record(
                    "subagent.called",
                    {
                        "reply_id": self.reply_id,
                        "call_id": call["id"],
                        "subagent_type": str(a.get("subagent_type") or "general-purpose"),
                        "description": str(a.get("description") or ""),
                    },
                )

    def _result(self, m: ToolMessage) -> None:
        output = _text(m.content)
        is_error = getattr(m, "status", "success") == "error"
        offload = self.backend.take_offload(output)
        data = output.encode()
        if offload is not None:
            payload = tool_result(m.tool_call_id, output[:RECORD_OUTPUT_BYTES], is_error, False, offload.artifact,
                                  offload.path, offload.size)  # fmt: skip
        elif len(data) > RECORD_OUTPUT_BYTES and not self.backend.has_room(len(data)):
            preview = data[:PREVIEW_BYTES].decode(errors="ignore")
            text = f"{preview}\n[... {len(data)} bytes in all: not kept, the tenant's artifact storage is full]"
            payload = tool_result(m.tool_call_id, text, is_error, True, None, None, len(data))
        elif len(data) > RECORD_OUTPUT_BYTES:
            ref = self.artifacts.put(self.st.tenant_id, data, "text/plain", f"{m.tool_call_id}.txt")
            self.record("artifact.stored", stored(ref))
            preview = data[:PREVIEW_BYTES].decode(errors="ignore")
            text = f"{preview}\n[... {len(data)} bytes in all: artifact {ref['artifact_id']}]"
            payload = tool_result(m.tool_call_id, text, is_error, True, ref, None, len(data))
        else:
            payload = tool_result(m.tool_call_id, output, is_error)
        self.record("tool.result", payload)

    def _checkpoint(self) -> None:
        self.checkpoint()


class DeltaBatcher:
    """A turn's tokens as ``chat.delta`` records: each record joins the tokens that came within
    ``DELTA_WAIT_S`` of its first (at most ``DELTA_TOKENS``); indexes count records per message id
    from 0, and joined in index order they are the text. A record that fails on the timer's thread
    (the reply was cancelled) is raised by the next ``add`` or ``flush``."""

    def __init__(self, record: Recorder, tokens: int = DELTA_TOKENS, wait_s: float = DELTA_WAIT_S) -> None:
        self.record = record
        self.tokens, self.wait_s = tokens, wait_s
        self.lock = threading.Lock()
        self.message_id = ""
        self.index = 0
        self.pieces: list[str] = []
        self.timer: threading.Timer | None = None
        self.failed: BaseException | None = None

    def add(self, message_id: str, text: str) -> None:
        with self.lock:
            self._raise()
            if message_id != self.message_id:
                self._flush()
                self.message_id, self.index = message_id, 0
            self.pieces.append(text)
            if len(self.pieces) >= self.tokens:
                self._flush()
            elif self.timer is None:
                self.timer = threading.Timer(self.wait_s, self._due)
                self.timer.daemon = True
                self.timer.start()

    def flush(self) -> None:
        with self.lock:
            self._raise()
            self._flush()

    def close(self) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.pieces = []

    def _due(self) -> None:
        with self.lock:
            self.timer = None
            try:
                self._flush()
            except BaseException as e:  # raised on the reply's thread at its next write
                self.failed = e

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.pieces:
            return
        text, self.pieces = "".join(self.pieces), []
        self.record("chat.delta", {"message_id": self.message_id, "index": self.index, "delta": text})
        self.index += 1

    def _raise(self) -> None:
        if self.failed is not None:
            failed, self.failed = self.failed, None
            raise failed


class _ToolFilter(AgentMiddleware):
    """Limits the agent to the conversation's allowed tools (``tools`` of its settings): only they are
    offered to the model, and a call to any other (a model may name a tool it was not offered) is
    answered with an error instead of running."""

    def __init__(self, allowed: set[str]) -> None:
        super().__init__()
        self.allowed = allowed

    def wrap_model_call(self, request, handler):
        return handler(request.override(tools=[t for t in request.tools if _tool_name(t) in self.allowed]))

    def wrap_tool_call(self, request, handler):
        refused = self._refusal(request.tool_call)
        return refused if refused is not None else handler(request)

    async def awrap_tool_call(self, request, handler):
        refused = self._refusal(request.tool_call)
        return refused if refused is not None else await handler(request)

    def _refusal(self, call: dict[str, Any]) -> ToolMessage | None:
        name = str(call.get("name", ""))
        if name in self.allowed:
            return None
        allowed = ", ".join(sorted(self.allowed))
        text = f"error: the tool {name} is not allowed in this conversation (allowed: {allowed})"
        return ToolMessage(content=text, tool_call_id=call["id"], name=name, status="error")


def _tool_name(tool: Any) -> str:
    return tool.get("name", "") if isinstance(tool, dict) else getattr(tool, "name", "")

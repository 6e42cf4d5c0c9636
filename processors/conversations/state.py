"""The conversation state machine as pure functions: what a conversation command does, and how its
records fold into the history an agent resumes from.

A conversation's stream (key = conversation id) holds, in order::

    conversation.created                               (from conversation.create)
    chat.message role=user                             (from chat.post: the message, accepted)
    reply.started                                      (the processor took the oldest pending message)
      chat.delta* · chat.message role=assistant        (one model turn: its tokens, then the whole text)
      tool.called* · subagent.called*                  (the turn's tool calls, before they run)
      tool.result* · todo.updated*                     (each call's result; large ones offloaded)
      agent.checkpoint                                 (the history so far, in the artifact store)
      ... more turns ...
    reply.completed | reply.failed | reply.cancelled   (with the reason)

``evolve`` folds these into ``ConversationState`` (the messages a model sees next, the todo list,
the reply under way and the messages waiting); ``decide`` turns a command into records; ``step``
lets a reply's writer append only while its reply is still the current one (a cancelled reply's
late tokens are dropped). No I/O here: ``processors.conversations.processor`` runs the effects.
"""

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from astraforge.schemas import Envelope

REPLY_ENDS = {"reply.completed": "completed", "reply.failed": "failed", "reply.cancelled": "cancelled"}
INTERRUPTED = (
    "interrupted: the platform restarted while this tool call ran, so its result was lost; it may or may not "
    "have taken effect (check before repeating it)"
)


@dataclass(frozen=True)
class Reply:
    """The reply under way: to which user message, and how many model turns it has recorded."""

    reply_id: str
    in_reply_to: str
    turns: int = 0


@dataclass(frozen=True)
class ConversationState:
    conversation_id: str
    tenant_id: str
    settings: dict[str, Any]  # the conversation.created payload (ConversationCreate)
    messages: tuple[dict[str, Any], ...] = ()  # role user | assistant (with tool_calls) | tool
    todos: tuple[dict[str, str], ...] = ()
    pending: tuple[str, ...] = ()  # user message ids without a reply yet, oldest first
    reply: Reply | None = None
    replies: int = 0  # replies ended so far
    last_reply: str | None = None  # how the last reply ended: completed | failed | cancelled
    checkpoint: dict[str, Any] | None = None  # the newest agent.checkpoint's artifact
    created_at: int = 0
    updated_at: int = 0

    @property
    def sandbox_id(self) -> str:
        return self.settings["sandbox_id"]

    @property
    def actor(self) -> str:
        """Who a conversation's sandbox commands and leases are attributed to."""
        return f"conversation:{self.conversation_id}"

    def dangling_calls(self) -> list[dict[str, Any]]:
        """Tool calls of the last assistant turn that have no result recorded (a crash mid-tool)."""
        answered = {m["tool_call_id"] for m in self.messages if m["role"] == "tool"}
        for m in reversed(self.messages):
            if m["role"] == "assistant":
                return [c for c in m.get("tool_calls", []) if c["id"] not in answered]
        return []

    def answered(self) -> bool:
        """The reply under way has its final message (a model turn without tool calls) on the record."""
        last = self.messages[-1] if self.messages else {}
        return bool(self.reply and self.reply.turns and last.get("role") == "assistant" and not last.get("tool_calls"))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["messages"], data["todos"], data["pending"] = list(self.messages), list(self.todos), list(self.pending)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ConversationState":
        reply = Reply(**data["reply"]) if data.get("reply") else None
        return cls(
            **{
                **data,
                "messages": tuple(data["messages"]),
                "todos": tuple(data["todos"]),
                "pending": tuple(data["pending"]),
                "reply": reply,
            }
        )


@dataclass(frozen=True)
class ConversationDecision:
    events: list[Envelope] = field(default_factory=list)
    start_reply: bool = False  # a reply may start now (the processor starts one if none runs)


def event(st: ConversationState, type_: str, payload: dict, actor: str, cause: Envelope | None = None) -> Envelope:
    return Envelope(
        type=type_,
        stream_id=st.conversation_id,
        tenant_id=st.tenant_id,
        actor=actor,
        sandbox_id=st.sandbox_id,
        causation_id=cause.event_id if cause else None,
        correlation_id=cause.correlation_id if cause else None,
        payload=payload,
    )


def reply_record(st: ConversationState, reply: Reply, end: str, actor: str, reason: str | None = None) -> Envelope:
    """``reply.<end>`` (started | completed | failed | cancelled)."""
    payload = {"reply_id": reply.reply_id, "in_reply_to": reply.in_reply_to, "state": end, "reason": reason}
    return event(st, f"reply.{end}", payload, actor)


def reply_id_for(message_id: str) -> str:
    """Deterministic: a resumed processor continues the same reply, never starts a second one."""
    return f"{message_id}-reply"


def created_state(e: Envelope) -> ConversationState:
    return ConversationState(
        conversation_id=e.stream_id,
        tenant_id=e.tenant_id,
        settings=dict(e.payload),
        created_at=e.occurred_at,
        updated_at=e.occurred_at,
    )


def evolve(st: ConversationState | None, e: Envelope) -> ConversationState | None:
    """Fold one record of the conversation's stream into its state."""
    p = e.payload
    if e.type == "conversation.created":
        return st if st is not None else created_state(e)
    if st is None:
        return None
    st = replace(st, updated_at=e.occurred_at)
    if e.type == "chat.message" and p["role"] == "user":
        if any(m.get("id") == p["message_id"] for m in st.messages):
            return st
        user = {"role": "user", "id": p["message_id"], "content": p["text"]}
        return replace(st, messages=(*st.messages, user), pending=(*st.pending, p["message_id"]))
    if e.type == "reply.started":
        reply = Reply(p["reply_id"], p["in_reply_to"])
        return replace(st, reply=reply, pending=tuple(m for m in st.pending if m != p["in_reply_to"]))
    if st.reply is None:
        return st  # a late record of an ended reply changes nothing
    if e.type == "chat.message" and p["role"] == "assistant":
        turn = {"role": "assistant", "id": p["message_id"], "content": p["text"], "tool_calls": []}
        return replace(st, messages=(*st.messages, turn), reply=replace(st.reply, turns=st.reply.turns + 1))
    if e.type == "tool.called":
        messages = list(st.messages)
        last = next(i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "assistant")
        call = {"id": p["call_id"], "name": p["name"], "arguments_json": p["arguments_json"]}
        messages[last] = {**messages[last], "tool_calls": [*messages[last]["tool_calls"], call]}
        return replace(st, messages=tuple(messages))
    if e.type == "tool.result":
        result = {"role": "tool", "tool_call_id": p["call_id"], "content": p["output"], "is_error": p["is_error"]}
        return replace(st, messages=(*st.messages, result))
    if e.type == "todo.updated":
        return replace(st, todos=tuple({"content": t["content"], "status": t["status"]} for t in p["todos"]))
    if e.type == "agent.checkpoint":
        return replace(st, checkpoint=dict(p["artifact"]))
    if e.type in REPLY_ENDS and p["reply_id"] == st.reply.reply_id:
        return replace(st, reply=None, replies=st.replies + 1, last_reply=REPLY_ENDS[e.type])
    return st


def decide(st: ConversationState | None, command: Envelope, actor: str) -> ConversationDecision:
    """What a conversation command does in this state (a redelivered command finds it done already)."""
    p = command.payload
    if command.type == "conversation.create":
        if st is not None:
            return ConversationDecision()
        new = created_state(command)
        return ConversationDecision([event(new, "conversation.created", dict(p), actor, command)])
    if st is None:
        return ConversationDecision()
    if command.type == "chat.post":
        if any(m.get("id") == p["message_id"] for m in st.messages):
            return ConversationDecision()  # redelivered
        message = {"message_id": p["message_id"], "role": "user", "text": p["text"]}
        return ConversationDecision([event(st, "chat.message", message, command.actor, command)], start_reply=True)
    if command.type == "reply.cancel":
        if st.reply is None or p["reply_id"] not in (st.reply.reply_id, "*"):
            return ConversationDecision()  # nothing under way (or another reply): nothing to cancel
        reason = p.get("reason") or f"cancelled by {command.actor}"
        return ConversationDecision([reply_record(st, st.reply, "cancelled", actor, reason)], start_reply=True)
    return ConversationDecision()


def next_reply(st: ConversationState, actor: str) -> list[Envelope]:
    """``reply.started`` for the oldest waiting message, if no reply is under way."""
    if st.reply is not None or not st.pending:
        return []
    message_id = st.pending[0]
    return [reply_record(st, Reply(reply_id_for(message_id), message_id), "started", actor)]


def interrupted(st: ConversationState, actor: str) -> list[Envelope]:
    """A ``tool.result`` for each call a crash left without one: the call is never run again."""
    return [
        event(st, "tool.result", tool_result(c["id"], INTERRUPTED, is_error=True), actor) for c in st.dangling_calls()
    ]


def tool_result(
    call_id: str,
    output: str,
    is_error: bool = False,
    truncated: bool = False,
    artifact: dict | None = None,
    path: str | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "output": output,
        "is_error": is_error,
        "truncated": truncated,
        "artifact": artifact,
        "path": path,
        "size": len(output.encode()) if size is None else size,
    }

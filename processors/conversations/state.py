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

``evolve`` folds these into ``ConversationState`` (compact: the todo list, the reply under way, the
messages waiting, the newest checkpoint and the offsets of the history's records after it); ``fold``
also folds them into ``History`` (the messages a model sees next) when it is in memory; ``decide``
turns a command into records. No I/O here: ``processors.conversations.processor`` runs the effects.
"""

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from astraforge.schemas import Envelope

RECENT_USER_MESSAGES = 32  # user message ids a state remembers to recognise a redelivered chat.post (the
# commands a crash can redeliver are the few past the committed offset)
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
    streamed: str | None = None  # the message id of deltas recorded since the last whole turn (a turn cut off)


@dataclass(frozen=True)
class ConversationState:
    """What a conversation's processor keeps per conversation, compact whatever the history's length:
    the history itself (``History``) is not here but in the newest checkpoint plus the records at
    ``tail``, so one table value (one Kafka record) never grows with the conversation."""

    conversation_id: str
    tenant_id: str
    settings: dict[str, Any]  # the conversation.created payload (ConversationCreate)
    todos: tuple[dict[str, str], ...] = ()
    pending: tuple[str, ...] = ()  # user message ids without a reply yet, oldest first
    reply: Reply | None = None
    replies: int = 0  # replies ended so far
    last_reply: str | None = None  # how the last reply ended: completed | failed | cancelled
    checkpoint: dict[str, Any] | None = None  # the newest agent.checkpoint's artifact
    created_at: int = 0
    updated_at: int = 0
    recent: tuple[str, ...] = ()  # the newest user message ids (a redelivered chat.post is recognised)
    posted: dict[str, int] = field(default_factory=dict)  # pending message id -> its record's offset
    open_calls: tuple[str, ...] = ()  # the last assistant turn's tool calls without a result yet
    last: str = ""  # the history's last message: user | assistant | calls (an assistant turn with calls) | tool
    size: int = 0  # messages in the history
    tail: tuple[int, ...] = ()  # offsets of the history's records past the newest checkpoint

    @property
    def sandbox_id(self) -> str:
        return self.settings["sandbox_id"]

    @property
    def actor(self) -> str:
        """Who a conversation's sandbox commands and leases are attributed to."""
        return f"conversation:{self.conversation_id}"

    def dangling_calls(self) -> list[str]:
        """Tool calls of the last assistant turn that have no result recorded (a crash mid-tool)."""
        return list(self.open_calls)

    def answered(self) -> bool:
        """The reply under way has its final message (a model turn without tool calls) on the record."""
        return bool(self.reply and self.reply.turns and self.last == "assistant")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("todos", "pending", "recent", "open_calls", "tail"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ConversationState":
        reply = Reply(**data["reply"]) if data.get("reply") else None
        tuples = {name: tuple(data.get(name) or ()) for name in ("todos", "pending", "recent", "open_calls", "tail")}
        return cls(**{**data, **tuples, "reply": reply, "posted": dict(data.get("posted") or {})})


@dataclass(frozen=True)
class History:
    """The messages a model sees next (role user | assistant with tool_calls | tool), and the user
    messages recorded whose reply has not started: a message joins the history when its reply starts,
    so a message posted while a reply runs never lands between a tool call and its result."""

    messages: tuple[dict[str, Any], ...] = ()
    waiting: tuple[dict[str, Any], ...] = ()

    def apply(self, e: Envelope) -> "History":
        """One record the state accepted into its ``tail`` (``fold`` says which)."""
        p = e.payload
        if e.type == "chat.message" and p["role"] == "user":
            user = {"role": "user", "id": p["message_id"], "content": p["text"]}
            return replace(self, waiting=(*self.waiting, user))
        if e.type == "reply.started":
            joined = [m for m in self.waiting if m["id"] == p["in_reply_to"]]
            waiting = tuple(m for m in self.waiting if m["id"] != p["in_reply_to"])
            return History((*self.messages, *joined), waiting)
        if e.type == "chat.message":
            turn = {"role": "assistant", "id": p["message_id"], "content": p["text"], "tool_calls": []}
            return replace(self, messages=(*self.messages, turn))
        if e.type == "tool.called":
            messages = list(self.messages)
            last = next(i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "assistant")
            call = {"id": p["call_id"], "name": p["name"], "arguments_json": p["arguments_json"]}
            messages[last] = {**messages[last], "tool_calls": [*messages[last]["tool_calls"], call]}
            return replace(self, messages=tuple(messages))
        if e.type == "tool.result":
            result = {"role": "tool", "tool_call_id": p["call_id"], "content": p["output"], "is_error": p["is_error"]}
            return replace(self, messages=(*self.messages, result))
        return self


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


def evolve(st: ConversationState | None, e: Envelope, offset: int | None = None) -> ConversationState | None:
    """Fold one record of the conversation's stream (at ``offset`` of its partition) into its state."""
    return fold(st, None, e, offset)[0]


def fold(
    st: ConversationState | None, history: History | None, e: Envelope, offset: int | None = None
) -> tuple[ConversationState | None, History | None]:
    """Fold one record into the state and, if the record joins the history, the history (``None``
    stays ``None``: a history not in memory is rebuilt from the checkpoint and the state's ``tail``)."""
    new, joins = _evolve(st, e, offset)
    if history is not None and joins:
        history = history.apply(e)
    return new, history


def _at(st: ConversationState, offset: int | None) -> tuple[int, ...]:
    return st.tail if offset is None else (*st.tail, offset)


def _evolve(st: ConversationState | None, e: Envelope, offset: int | None) -> tuple[ConversationState | None, bool]:
    """The new state, and whether the record joins the history (its offset is then in ``tail``)."""
    p = e.payload
    if e.type == "conversation.created":
        return (st if st is not None else created_state(e)), False
    if st is None:
        return None, False
    st = replace(st, updated_at=e.occurred_at)
    if e.type == "chat.message" and p["role"] == "user":
        message_id = p["message_id"]
        if message_id in st.recent or message_id in st.pending:
            return st, False
        posted = {**st.posted, message_id: offset if offset is not None else -1}
        recent = (*st.recent, message_id)[-RECENT_USER_MESSAGES:]
        return replace(st, pending=(*st.pending, message_id), recent=recent, posted=posted, tail=_at(st, offset)), True
    if e.type == "reply.started":
        reply = Reply(p["reply_id"], p["in_reply_to"])
        if p["in_reply_to"] not in st.pending:
            return replace(st, reply=reply), False
        posted = {k: v for k, v in st.posted.items() if k != p["in_reply_to"]}
        pending = tuple(m for m in st.pending if m != p["in_reply_to"])
        changed = {"pending": pending, "posted": posted, "last": "user", "size": st.size + 1, "tail": _at(st, offset)}
        return replace(st, reply=reply, **changed), True
    if st.reply is None:
        return st, False  # a late record of an ended reply changes nothing
    if e.type == "chat.delta":
        return replace(st, reply=replace(st.reply, streamed=p["message_id"])), False
    if e.type == "chat.message" and p["role"] == "assistant":
        reply = replace(st.reply, turns=st.reply.turns + 1, streamed=None)
        return replace(st, reply=reply, open_calls=(), last="assistant", size=st.size + 1, tail=_at(st, offset)), True
    if e.type == "tool.called":
        if st.last not in ("assistant", "calls"):
            return st, False  # a call belongs to the turn just recorded
        return replace(st, open_calls=(*st.open_calls, p["call_id"]), last="calls", tail=_at(st, offset)), True
    if e.type == "tool.result":
        calls = tuple(c for c in st.open_calls if c != p["call_id"])
        return replace(st, open_calls=calls, last="tool", size=st.size + 1, tail=_at(st, offset)), True
    if e.type == "todo.updated":
        todos = tuple({"content": t["content"], "status": t["status"]} for t in p["todos"])
        return replace(st, todos=todos), False
    if e.type == "agent.checkpoint":
        # the checkpoint holds the history up to here (its writer checked that nothing came between);
        # what it does not hold is the messages still waiting for their reply
        waiting = tuple(sorted(o for o in st.posted.values() if o >= 0))
        return replace(st, checkpoint=dict(p["artifact"]), tail=waiting), False
    if e.type in REPLY_ENDS and p["reply_id"] == st.reply.reply_id:
        return replace(st, reply=None, replies=st.replies + 1, last_reply=REPLY_ENDS[e.type]), False
    return st, False


def turn_message_id(reply: Reply) -> str:
    """The message id of the reply's next model turn. A turn cut off mid-stream (its deltas are on
    the record, its whole message is not) is asked again under a new id (``<reply>:t<n>.<k>``): the
    model writes it anew, and a reader joining deltas by message id never mixes the two."""
    base = f"{reply.reply_id}:t{reply.turns}"
    if reply.streamed is None or not reply.streamed.startswith(base):
        return base
    attempt = reply.streamed[len(base) + 1 :] if reply.streamed != base else "0"
    return f"{base}.{int(attempt) + 1 if attempt.isdigit() else 1}"


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
        if p["message_id"] in st.recent or p["message_id"] in st.pending:
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
    return [event(st, "tool.result", tool_result(c, INTERRUPTED, is_error=True), actor) for c in st.dangling_calls()]


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

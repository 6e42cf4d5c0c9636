"""The conversation state machine with plain values: commands to records, records to history."""

from astraforge.processors.conversations.state import (
    INTERRUPTED,
    ConversationState,
    decide,
    evolve,
    interrupted,
    next_reply,
)
from astraforge.schemas import Envelope

ACTOR = "processor:conversations"
SETTINGS = {"sandbox_id": "sb-1", "model": "m", "temperature": None, "max_tokens": None,
            "system_prompt": None, "tools": [], "title": None}  # fmt: skip


def command(type_: str, payload: dict, actor: str = "tenant:t") -> Envelope:
    return Envelope(type=type_, stream_id="cv-1", tenant_id="t", actor=actor, payload=payload)


def said(text: str) -> Envelope:
    payload = {"message_id": "msg-1-reply:t0", "role": "assistant", "text": text}
    return Envelope("chat.message", "cv-1", "t", ACTOR, payload)


def fold(st: ConversationState | None, events: list[Envelope]) -> ConversationState | None:
    for e in events:
        st = evolve(st, e)
    return st


def started() -> ConversationState:
    st = fold(None, decide(None, command("conversation.create", SETTINGS), ACTOR).events)
    post = command("chat.post", {"message_id": "msg-1", "role": "user", "text": "hi"})
    decision = decide(st, post, ACTOR)
    assert decision.start_reply and decision.events[0].type == "chat.message"
    st = fold(st, decision.events)
    assert decide(st, post, ACTOR).events == []  # redelivered: one message
    return fold(st, next_reply(st, ACTOR))


def test_a_message_waits_then_its_reply_starts_once() -> None:
    st = started()
    assert st.reply.reply_id == "msg-1-reply" and st.pending == ()
    assert next_reply(st, ACTOR) == []  # one reply at a time
    later = command("chat.post", {"message_id": "msg-2", "role": "user", "text": "and?"})
    st = fold(st, decide(st, later, ACTOR).events)
    assert st.pending == ("msg-2",) and st.reply.reply_id == "msg-1-reply"


def test_a_tool_call_without_result_is_closed_as_interrupted_never_run_again() -> None:
    st = started()
    turn = Envelope(
        "chat.message", "cv-1", "t", ACTOR, {"message_id": "msg-1-reply:t0", "role": "assistant", "text": ""}
    )
    call = Envelope("tool.called", "cv-1", "t", ACTOR, {"call_id": "c1", "name": "execute", "arguments_json": "{}"})
    assert not started().answered()
    st = fold(st, [turn])
    assert st.answered()  # a turn without tool calls is the final message: a resumed reply just ends
    st = fold(st, [call])
    assert not st.answered()
    assert [c["id"] for c in st.dangling_calls()] == ["c1"] and st.reply.turns == 1
    (closed,) = interrupted(st, ACTOR)
    assert closed.type == "tool.result" and closed.payload["output"] == INTERRUPTED and closed.payload["is_error"]
    st = fold(st, [closed])
    assert st.dangling_calls() == [] and interrupted(st, ACTOR) == []
    assert ConversationState.from_json(st.to_json()) == st  # what the table keeps


def test_cancel_ends_the_reply_under_way_and_nothing_else() -> None:
    st = started()
    cancel = command("reply.cancel", {"reply_id": "msg-1-reply", "in_reply_to": "msg-1", "state": "cancel",
                                      "reason": "enough"})  # fmt: skip
    (cancelled,) = decide(st, cancel, ACTOR).events
    assert cancelled.type == "reply.cancelled" and cancelled.payload["reason"] == "enough"
    st = fold(st, [cancelled])
    assert st.reply is None and st.last_reply == "cancelled"
    assert decide(st, cancel, ACTOR).events == []  # nothing under way
    late = Envelope(
        "chat.message", "cv-1", "t", ACTOR, {"message_id": "msg-1-reply:t0", "role": "assistant", "text": "x"}
    )
    assert evolve(st, late).messages == st.messages  # a cancelled reply's late record changes nothing

"""The conversation state machine with plain values: commands to records, records to history."""

from astraforge.processors.conversations.state import (
    INTERRUPTED,
    ConversationState,
    History,
    decide,
    evolve,
    fold,
    interrupted,
    next_reply,
    turn_message_id,
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


def fold_all(st: ConversationState | None, events: list[Envelope]) -> ConversationState | None:
    for e in events:
        st = evolve(st, e)
    return st


def started() -> ConversationState:
    st = fold_all(None, decide(None, command("conversation.create", SETTINGS), ACTOR).events)
    post = command("chat.post", {"message_id": "msg-1", "role": "user", "text": "hi"})
    decision = decide(st, post, ACTOR)
    assert decision.start_reply and decision.events[0].type == "chat.message"
    st = fold_all(st, decision.events)
    assert decide(st, post, ACTOR).events == []  # redelivered: one message
    return fold_all(st, next_reply(st, ACTOR))


def test_a_message_waits_then_its_reply_starts_once() -> None:
    st = started()
    assert st.reply.reply_id == "msg-1-reply" and st.pending == ()
    assert next_reply(st, ACTOR) == []  # one reply at a time
    later = command("chat.post", {"message_id": "msg-2", "role": "user", "text": "and?"})
    st = fold_all(st, decide(st, later, ACTOR).events)
    assert st.pending == ("msg-2",) and st.reply.reply_id == "msg-1-reply"


def test_a_tool_call_without_result_is_closed_as_interrupted_never_run_again() -> None:
    st = started()
    turn = Envelope(
        "chat.message", "cv-1", "t", ACTOR, {"message_id": "msg-1-reply:t0", "role": "assistant", "text": ""}
    )
    call = Envelope("tool.called", "cv-1", "t", ACTOR, {"call_id": "c1", "name": "execute", "arguments_json": "{}"})
    assert not started().answered()
    st = fold_all(st, [turn])
    assert st.answered()  # a turn without tool calls is the final message: a resumed reply just ends
    st = fold_all(st, [call])
    assert not st.answered()
    assert st.dangling_calls() == ["c1"] and st.reply.turns == 1
    (closed,) = interrupted(st, ACTOR)
    assert closed.type == "tool.result" and closed.payload["output"] == INTERRUPTED and closed.payload["is_error"]
    st = fold_all(st, [closed])
    assert st.dangling_calls() == [] and interrupted(st, ACTOR) == []
    assert ConversationState.from_json(st.to_json()) == st  # what the table keeps


def test_cancel_ends_the_reply_under_way_and_nothing_else() -> None:
    st = started()
    cancel = command("reply.cancel", {"reply_id": "msg-1-reply", "in_reply_to": "msg-1", "state": "cancel",
                                      "reason": "enough"})  # fmt: skip
    (cancelled,) = decide(st, cancel, ACTOR).events
    assert cancelled.type == "reply.cancelled" and cancelled.payload["reason"] == "enough"
    st = fold_all(st, [cancelled])
    assert st.reply is None and st.last_reply == "cancelled"
    assert decide(st, cancel, ACTOR).events == []  # nothing under way
    late = Envelope(
        "chat.message", "cv-1", "t", ACTOR, {"message_id": "msg-1-reply:t0", "role": "assistant", "text": "x"}
    )
    after = evolve(st, late, 9)
    assert (after.size, after.tail, after.last) == (st.size, st.tail, st.last)  # a cancelled reply's late record


def record(type_: str, **payload) -> Envelope:
    return Envelope(type_, "cv-1", "t", ACTOR, payload)


def conversation() -> list[Envelope]:
    """A reply with a round of tools, during which a second message is posted, then its checkpoint
    and the second reply's first turn."""
    return [
        *decide(None, command("conversation.create", SETTINGS), ACTOR).events,
        record("chat.message", message_id="m1", role="user", text="first"),
        record("reply.started", reply_id="m1-reply", in_reply_to="m1", state="started", reason=None),
        record("chat.delta", message_id="m1-reply:t0", index=0, delta="Let"),
        record("chat.message", message_id="m1-reply:t0", role="assistant", text="Let me look."),
        record("tool.called", call_id="c1", name="ls", arguments_json="{}"),
        record("chat.message", message_id="m2", role="user", text="second"),  # posted while the tool runs
        record("tool.result", call_id="c1", output="a.txt", is_error=False),
        record("agent.checkpoint", reply_id="m1-reply", messages=4, artifact={"artifact_id": "a1"}),
        record("chat.message", message_id="m1-reply:t1", role="assistant", text="One file."),
        record("reply.completed", reply_id="m1-reply", in_reply_to="m1", state="completed", reason=None),
        record("reply.started", reply_id="m2-reply", in_reply_to="m2", state="started", reason=None),
    ]


def test_a_message_posted_mid_reply_joins_the_history_when_its_own_reply_starts() -> None:
    st, history = None, History()
    for offset, e in enumerate(conversation()):
        st, history = fold(st, history, e, offset)
    roles = [(m["role"], m.get("id") or m.get("tool_call_id")) for m in history.messages]
    assert roles == [("user", "m1"), ("assistant", "m1-reply:t0"), ("tool", "c1"), ("assistant", "m1-reply:t1"),
                     ("user", "m2")]  # fmt: skip
    assert st.size == len(history.messages) and st.last == "user" and st.pending == () and history.waiting == ()


def test_the_state_stays_compact_and_names_the_records_past_its_checkpoint() -> None:
    """The history is the checkpoint's messages plus the records at ``tail`` (the waiting message's
    too, posted before the checkpoint); the state holds no message text."""
    events = conversation()
    st, history, at_checkpoint = None, History(), None
    for offset, e in enumerate(events):
        st, history = fold(st, history, e, offset)
        if e.type == "agent.checkpoint":
            at_checkpoint = history
            assert st.tail == (6,)  # the message still waiting for its reply
    rebuilt = History(at_checkpoint.messages)
    for offset in st.tail:
        rebuilt = rebuilt.apply(events[offset])
    assert rebuilt == history
    assert st.tail == (6, 9, 11) and "second" not in str(st.to_json()) and "Let me" not in str(st.to_json())
    assert ConversationState.from_json(st.to_json()) == st


def test_a_turn_cut_off_mid_stream_is_asked_again_under_a_new_message_id() -> None:
    st = started()
    assert turn_message_id(st.reply) == "msg-1-reply:t0"
    st = evolve(st, record("chat.delta", message_id="msg-1-reply:t0", index=0, delta="Hal"))
    assert turn_message_id(st.reply) == "msg-1-reply:t0.1"  # resumed: the cut-off deltas stay apart
    st = evolve(st, record("chat.delta", message_id="msg-1-reply:t0.1", index=0, delta="Hel"))
    assert turn_message_id(st.reply) == "msg-1-reply:t0.2"
    st = evolve(st, said("Hello"))
    assert turn_message_id(st.reply) == "msg-1-reply:t1" and st.reply.streamed is None

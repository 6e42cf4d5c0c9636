"""Everything a conversation depends on that the harness can restart goes down in the middle of a
model turn, on topics and a schema of this test's own: the conversation processor is killed (kill -9,
a process of its own), and the API, the projector and the sandbox processor (threads of this process)
are stopped. Started again, the conversation goes on: the cut-off turn is asked again with the very
history the model was sent before the crash, under a new message id, and its sandbox (with the file
the agent wrote) is still there."""

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from astraforge.config import Settings
from astraforge.db import connect
from astraforge.processors.conversations.processor import ConversationProcessor
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.producers.topics import ensure_topics
from astraforge.projections.postgres import drop_schema
from astraforge.sandbox.providers import make_provider
from tests.conftest import gateway_listener, make_settings, new_tenant
from tests.integration.test_conversations import create, ended, post, records, turns
from tests.integration.test_conversations_crash import conversation_processor
from tests.modelserver import ModelServer, Turn, message, tool_call
from tests.support import running_api, running_projector, wait_until


@pytest.fixture
def own_settings() -> Iterator[Settings]:
    """Topics and a projection schema no other test's processes read (no warm pool: fewer containers)."""
    s = make_settings(warm_pools=[])
    ensure_topics(s)
    yield s
    provider = make_provider(s)
    for sandbox_id in provider.list_ids():  # this test's namespace only
        provider.stop(sandbox_id)
    with connect(s, autocommit=True) as conn:
        drop_schema(conn, s.projection_schema)


@contextmanager
def running(service) -> Iterator[None]:
    """A processor's ``run`` on a thread until the block ends."""
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        service.stop()
        thread.join(timeout=30)


@contextmanager
def platform(settings: Settings) -> Iterator[str]:
    """The projector, the sandbox processor and the API (threads); yields the API's URL."""
    with ExitStack() as stack:
        stack.enter_context(running_projector(settings))
        stack.enter_context(running(SandboxProcessor(settings, make_provider(settings))))
        yield stack.enter_context(running_api(settings, sse_ping_s=1.0))


def test_a_conversation_continues_with_its_whole_history_after_everything_restarts(own_settings) -> None:
    _, key = new_tenant(own_settings)
    hold = threading.Event()
    script = [
        turns(tool_call("write_file", {"file_path": "/workspace/a.txt", "content": "alpha\n"})),
        turns(message("Wrote a.txt.")),
        Turn((message("This answer is cut off by the crash and asked again."),), pause=hold),
        turns(tool_call("execute", {"command": "cat /workspace/a.txt"})),  # the resumed turn
        turns(message("After the restart: a.txt holds alpha.")),
    ]
    with ModelServer(script, listener=gateway_listener()) as model:
        killed = conversation_processor(own_settings)
        try:
            with platform(own_settings) as api:
                conversation = create(api, key)
                cv = conversation["id"]
                post(f"{api}/v1/conversations/{cv}/messages", key, {"text": "write a.txt"})
                ended(api, key, cv, timeout=180)
                r = post(f"{api}/v1/conversations/{cv}/messages", key, {"text": "what is in it?"})
                second = r.json()["reply_id"]
                wait_until(
                    lambda: any(
                        e["type"] == "chat.delta" and e["payload"]["message_id"].startswith(second)
                        for e in records(api, key, cv)
                    ),
                    timeout=120,
                    what="the second reply's first delta",
                )
                asked_before = len(model.requests)
                os.kill(killed.pid, signal.SIGKILL)
                killed.wait()
        finally:
            if killed.poll() is None:
                killed.kill()
                killed.wait()
        hold.set()  # the cut-off stream's rest goes to a dead client
        with platform(own_settings) as api, running(ConversationProcessor(own_settings)):
            stream = ended(api, key, cv, n=2, timeout=180)
            sandbox_records = records(api, key, conversation["sandbox_id"])
        cut_off, resumed = model.requests[asked_before - 1].body, model.requests[asked_before].body

    assert resumed["messages"] == cut_off["messages"]  # the whole history again, nothing of the cut-off turn
    said = [m["content"] for m in resumed["messages"] if m["role"] in ("user", "assistant") and m.get("content")]
    assert said[-3:] == ["write a.txt", "Wrote a.txt.", "what is in it?"], said
    ends = [e["type"] for e in stream if e["type"] in ("reply.completed", "reply.failed", "reply.cancelled")]
    assert ends == ["reply.completed", "reply.completed"], [e["payload"] for e in stream if e["type"] == "reply.failed"]
    assert [e["type"] for e in stream].count("reply.started") == 2
    assert [e for e in stream if e["type"] == "reply.started"][1]["payload"]["reply_id"] == second
    turns_said = [
        e["payload"] for e in stream if e["type"] == "chat.message" and e["payload"]["message_id"].startswith(second)
    ]
    assert [m["message_id"] for m in turns_said] == [f"{second}:t0.1", f"{second}:t1"]  # t0 was cut off
    deltas = [e["payload"] for e in stream if e["type"] == "chat.delta"]
    assert any(d["message_id"] == f"{second}:t0" for d in deltas)  # what streamed before the crash stays apart
    final = turns_said[-1]
    assert "".join(d["delta"] for d in deltas if d["message_id"] == final["message_id"]) == final["text"]
    (result,) = [e["payload"] for e in stream if e["type"] == "tool.result" and "alpha" in e["payload"]["output"]]
    assert not result["is_error"]  # the sandbox, and the file the agent wrote, survived
    assert any(e["type"] == "exec.finished" for e in sandbox_records)

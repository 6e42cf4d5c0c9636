"""A long conversation survives a restart of its processor whole, however large its state has grown:
past a Kafka record's 1 MiB, the state's table write crashed faust's producer (the processor with
it), and deepagents' summarising of a long history failed the reply (it wrote to a read-only path)."""

import threading

from astraforge.processors.conversations.processor import ConversationProcessor
from tests.conftest import gateway_listener
from tests.integration.test_conversations import create, ended, post, turns
from tests.modelserver import ModelServer, message

MESSAGES = 5
MESSAGE_BYTES = 250 * 1024  # each within the API's limit; together past a Kafka record's 1 MiB


def started(settings) -> tuple[ConversationProcessor, threading.Thread]:
    processor = ConversationProcessor(settings)
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    return processor, thread


def test_a_conversation_larger_than_a_record_keeps_its_history_across_a_restart(
    settings, sandbox_processor, api_url, tenant
) -> None:
    _, key = tenant
    script = [turns(message(f"noted {i}")) for i in range(3 * MESSAGES)]  # summaries ask the model too
    with ModelServer(script, listener=gateway_listener()) as model:
        processor, thread = started(settings)
        try:
            cv = create(api_url, key)["id"]
            for i in range(MESSAGES):
                text = f"part-{i}:" + "x" * (MESSAGE_BYTES - 16)
                r = post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": text})
                assert r.status_code == 202, r.text
            ended(api_url, key, cv, n=MESSAGES, timeout=180)
        finally:
            processor.stop()
            thread.join(timeout=30)
        processor, thread = started(settings)
        try:
            post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": "what did I send?"})
            stream = ended(api_url, key, cv, n=MESSAGES + 1, timeout=180)
            history = [m["content"][:7] for m in processor.history(cv).messages if m["role"] == "user"]
        finally:
            processor.stop()
            thread.join(timeout=30)
        assert model.requests  # the model was asked (through deepagents' summarising, past its context)
    ends = [e["type"] for e in stream if e["type"] in ("reply.completed", "reply.failed", "reply.cancelled")]
    assert ends == ["reply.completed"] * (MESSAGES + 1), [e["payload"] for e in stream if e["type"] == "reply.failed"]
    assert history == [f"part-{i}:" for i in range(MESSAGES)] + ["what di"]

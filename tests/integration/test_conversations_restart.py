"""A long conversation survives kill -9 of its processor whole, however large its history has grown,
and what the processor writes per record stays small: the table holds a compact state (the whole
state, history included, was rewritten per record: past a Kafka record's 1 MiB that crashed faust's
producer, and kept in the artifact store instead it still wrote the whole history again each time),
and checkpoints are incremental. deepagents' summarising of the long history runs too (it once failed
the reply: it wrote to a read-only path)."""

import os
import signal
import threading

from astraforge.kafka import read_range
from astraforge.processors.conversations.processor import ConversationProcessor
from astraforge.processors.runtime import app_id
from tests.conftest import gateway_listener
from tests.integration.test_conversations import create, ended, post, turns
from tests.integration.test_conversations_crash import conversation_processor
from tests.modelserver import ModelServer, message

MESSAGES = 5
MESSAGE_BYTES = 250 * 1024  # each within the API's limit; together past a Kafka record's 1 MiB
HISTORY = MESSAGES * MESSAGE_BYTES


def changelog_values(settings, conversation_id: str) -> list[int]:
    """The sizes of the conversation's values in the processor's table changelog, in the order written."""
    topic = f"{app_id(settings, 'conversations')}-conversations-changelog"
    sizes = []
    for partition in range(settings.topic_partitions):
        for msg in read_range(settings, topic, partition, 0, None):
            if conversation_id.encode() in (msg.key() or b"") and msg.value() is not None:
                sizes.append(len(msg.value()))
    return sizes


def stored_bytes(settings, tenant_id: str) -> int:
    """Bytes the (local) artifact store holds for the tenant: checkpoints, offloads, uploads."""
    root = (settings.artifact_dir or settings.state_dir / "artifacts") / tenant_id
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_a_conversation_larger_than_a_record_keeps_its_history_across_kill_9(
    settings, sandbox_processor, api_url, tenant
) -> None:
    tenant_id, key = tenant
    script = [turns(message(f"noted {i}")) for i in range(3 * MESSAGES)]  # summaries ask the model too
    with ModelServer(script, listener=gateway_listener()) as model:
        killed = conversation_processor(settings)
        try:
            cv = create(api_url, key)["id"]
            for i in range(MESSAGES):
                text = f"part-{i}:" + "x" * (MESSAGE_BYTES - 16)
                r = post(f"{api_url}/v1/conversations/{cv}/messages", key, {"text": text})
                assert r.status_code == 202, r.text
            ended(api_url, key, cv, n=MESSAGES, timeout=180)
        finally:
            os.kill(killed.pid, signal.SIGKILL)
            killed.wait()
        processor = ConversationProcessor(settings)
        thread = threading.Thread(target=processor.run, daemon=True)
        thread.start()
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
    values, stored = changelog_values(settings, cv), stored_bytes(settings, tenant_id)
    print(f"\nchangelog: {len(values)} values, {sum(values)} bytes, max {max(values)}; artifacts: {stored} bytes")
    assert values and max(values) < 16 * 1024, values  # compact: no message text in the table
    assert stored < 8 * HISTORY, stored  # each history rewritten per record: tens of times the history

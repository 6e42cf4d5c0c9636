"""A redelivered conversation command is handled once, however many commands came after it.

The conversation processor keeps its own cursor per partition (``processors/cursor.py``), as the
sandbox processor and the run orchestrator do: a command below it was handled. Before, it relied on
faust's committed offset and on the last ``RECENT_USER_MESSAGES`` (32) message ids each conversation
remembers: a ``chat.post`` redelivered (a crash before faust's commit, a reset of the group's offsets)
after more newer messages than that was posted, and answered, a second time. The test hands the
processor the real record again, as faust would."""

from astraforge.kafka import read_range
from astraforge.processors.conversations.state import RECENT_USER_MESSAGES
from astraforge.processors.runtime import Source
from astraforge.schemas import default_codec
from tests.conftest import gateway_listener
from tests.integration.test_conversations import create, ended, post, records
from tests.modelserver import ModelServer

NEWER = 40


def command_record(settings, conversation_id: str, message_id: str) -> tuple[Source, bytes]:
    """The ``chat.post`` the API appended for ``message_id``, as faust hands it to the processor."""
    codec = default_codec()
    for partition in range(settings.topic_partitions):
        for msg in read_range(settings, settings.commands_topic, partition, 0, None):
            if msg.key() != conversation_id.encode():
                continue
            command = codec.decode(msg.value())
            if command.type == "chat.post" and command.payload["message_id"] == message_id:
                return Source(settings.commands_topic, partition, msg.offset(), msg.key()), msg.value()
    raise AssertionError(f"no chat.post of {message_id}")


def test_a_chat_post_redelivered_after_40_newer_messages_is_posted_once(conversations, api_url, tenant) -> None:
    assert NEWER > RECENT_USER_MESSAGES
    _, key = tenant
    with ModelServer([], listener=gateway_listener()):  # each reply: one final message (the script is empty)
        cv = create(api_url, key)["id"]
        url = f"{api_url}/v1/conversations/{cv}/messages"
        sent = [post(url, key, {"text": f"message {i}"}) for i in range(NEWER + 1)]
        assert [r.status_code for r in sent] == [202] * (NEWER + 1), sent[-1].text
        ended(api_url, key, cv, n=NEWER + 1, timeout=180)
        first = sent[0].json()["message_id"]
        conversations.handle(*command_record(conversations.settings, cv, first))  # redelivered
        stream = records(api_url, key, cv)
    users = [
        e["payload"]["message_id"] for e in stream if e["type"] == "chat.message" and e["payload"]["role"] == "user"
    ]
    assert users.count(first) == 1, f"{first} was posted {users.count(first)} times"
    assert sorted(users) == sorted(r.json()["message_id"] for r in sent)

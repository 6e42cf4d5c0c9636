"""Hosted DeepAgent conversations through the toolkit: create one on a sandbox, send a message and
follow its reply as it streams (the conversation processor runs real deepagents against the
scripted model server at the platform's model gateway)."""

import pytest
from astraforge_toolkit import AstraForgeClient, Conflict, Conversation, NotFound

from tests.conftest import gateway_listener, new_tenant
from tests.modelserver import ModelServer, Turn, message, tool_call
from tests.support import wait_until


def taken(client: AstraForgeClient, conversation_id: str) -> bool:
    """The processor has taken the conversation (a processor still starting answers later)."""
    try:
        return client.get_conversation(conversation_id).state != "requested"
    except NotFound:
        return False


def test_a_conversation_replies_as_a_stream_of_records(conversations, api_url, settings) -> None:
    script = [
        Turn((tool_call("write_file", {"file_path": "/workspace/note.md", "content": "# from the agent\n"}),)),
        Turn((message("Wrote note.md."),)),
        Turn((message("Nothing more to do."),)),
    ]
    key = new_tenant(settings)[1]
    with AstraForgeClient(api_url, key) as client, ModelServer(script, gateway_listener()):
        sandbox = client.create_sandbox()
        try:
            conversation = client.create_conversation("stub-model", sandbox_id=sandbox.id, title="notes")
            assert isinstance(conversation, Conversation) and conversation.sandbox_id == sandbox.id
            wait_until(lambda: taken(client, conversation.id), timeout=180, what="the conversation taken")

            events = list(client.converse(conversation.id, "Write note.md"))
            types = [e.type for e in events]
            assert types[-1] == "reply.completed"
            assert "chat.delta" in types and "tool.called" in types
            said = [e.payload["text"] for e in events if e.type == "chat.message" and e.payload["role"] == "assistant"]
            assert said[-1] == "Wrote note.md."
            assert client.download(sandbox.id, "/workspace/note.md") == b"# from the agent\n"
            assert conversation.id in [c.id for c in client.list_conversations(sandbox_id=sandbox.id).items]
            wait_until(lambda: client.get_conversation(conversation.id).state == "idle", timeout=30)
            with pytest.raises(Conflict):  # no reply under way
                client.cancel_reply(conversation.id)

            # a client that never followed the conversation gets this reply's records, not the first one's
            with AstraForgeClient(api_url, key) as fresh:
                second = list(fresh.converse(conversation.id, "Anything else?"))
            assert second[0].type == "reply.started" and second[-1].type == "reply.completed"
            assert len({e.payload.get("reply_id") for e in second if e.type.startswith("reply.")}) == 1
            said = [e.payload["text"] for e in second if e.type == "chat.message" and e.payload["role"] == "assistant"]
            assert said == ["Nothing more to do."]
        finally:
            client.delete_sandbox(sandbox.id)

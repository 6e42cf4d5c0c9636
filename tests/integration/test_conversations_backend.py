"""The recorded sandbox's answers, read from the real events topic: a conversation's backend keeps
the answers to its own commands only, whatever else its sandbox's partition carries (another agent's
output, other streams), and reads each record once (it kept and rescanned every record of the
sandbox's stream for a reply's life)."""

import secrets

from astraforge.processors.conversations.backend import CommandAnswers, end_offset
from astraforge.schemas import Envelope
from tests.support import chat

NOISE = 300


def written(sandbox_id: str, request_id: str) -> Envelope:
    payload = {"request_id": request_id, "path": "/workspace/a.txt", "size": 1, "sha256": "0" * 64}
    return Envelope("file.written", sandbox_id, "t", "processor:sandboxes", payload, sandbox_id=sandbox_id)


def test_a_backend_keeps_only_the_answers_to_its_own_commands(settings, producer) -> None:
    sandbox_id = f"sb-{secrets.token_hex(16)}"
    answers = CommandAnswers(settings, sandbox_id, end_offset(settings, sandbox_id), lambda: False)
    try:
        answers.expect("mine")
        noise = [written(sandbox_id, f"another-agent-{i}") for i in range(NOISE)]
        noise += [chat(sandbox_id, "t", f"chat {i}") for i in range(NOISE)]
        producer.append_many([*noise, written(sandbox_id, "mine")])
        (answer,) = answers.wait("mine", "request_id", ("file.written",), timeout=60)
        assert answer.payload["request_id"] == "mine"
        assert sum(len(kept) for kept in answers.kept.values()) == 1  # nothing of the others' records held
        answers.forget("mine")
        assert answers.kept == {}
    finally:
        answers.close()

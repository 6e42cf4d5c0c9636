"""The Codex track's invocation and its translation of Codex's JSONL into records, on JSONL the real
binary (0.171.0) printed: ``data/codex-session.jsonl`` inside a sandbox (tests/integration/test_codex.py
drives the same kind of session), ``codex-unknown-model.jsonl`` for a model Codex has no metadata for,
``codex-failed-turn.jsonl`` when the model's responses fail."""

import json
import random
import shlex
from pathlib import Path

import pytest

from astraforge.processors.runs.executors.codex import (
    CODEX_HOME,
    MAX_TEXT,
    PROMPT_PATH,
    TOKEN_ENV,
    AgentRecord,
    CodexTranslator,
    codex_invocation,
    placeholder_token,
    translate_output,
)
from astraforge.sandbox.profile import HOME
from astraforge.schemas import Envelope, default_codec

DATA = Path(__file__).with_name("data")
CID = "cmd-1"


def session(name: str) -> bytes:
    return (DATA / name).read_bytes()


def translate(data: bytes) -> list[AgentRecord]:
    translator = CodexTranslator(CID)
    return translator.feed(data) + translator.close()


def test_a_sandbox_session_becomes_commands_a_diff_messages_and_usage() -> None:
    records = translate(session("codex-session.jsonl"))
    assert [
        (r.type, r.payload.get("call_id") or r.payload.get("message_id") or r.payload.get("diff_id"))
        for r in records
        if r.type != "agent.usage"
    ] == [
        ("tool.called", "cmd-1:item_0"),
        ("tool.result", "cmd-1:item_0"),
        ("tool.called", "cmd-1:item_1"),
        ("tool.result", "cmd-1:item_1"),
        ("chat.message", "cmd-1:item_2"),
        ("diff.produced", "cmd-1:item_3"),
        ("tool.called", "cmd-1:item_4"),
        ("tool.result", "cmd-1:item_4"),
        ("chat.message", "cmd-1:item_5"),
    ]
    called, result = records[0].payload, records[1].payload
    assert called["name"] == "command"
    assert json.loads(called["arguments_json"]) == {"command": "/bin/bash -lc 'cat calc.py'"}
    assert result == {
        "call_id": "cmd-1:item_0",
        "output": "def add(a, b):\n    return a - b\n",
        "is_error": False,
        "truncated": False,
        "artifact": None,
        "path": None,
        "size": 0,
    }
    failed = records[3].payload  # exit code 1: an error, its traceback kept
    assert failed["is_error"] and "AssertionError" in failed["output"]
    assert records[4].payload == {
        "message_id": "cmd-1:item_2",
        "role": "agent",
        "text": "add() subtracts; fixing it and adding a test.",
    }
    diff = records[5].payload  # paths relative to the workspace; the content is the platform's diff.captured
    assert diff["files"] == ["README.md", "calc.py", "test_calc.py"] and diff["patch"] is None
    assert records[-1] == AgentRecord(
        "agent.usage",
        {
            "session_id": CID,
            "input_tokens": 600,
            "cached_input_tokens": 0,
            "output_tokens": 150,
            "reasoning_output_tokens": 0,
        },
    )


def test_every_record_is_a_valid_record_of_the_event_language() -> None:
    codec = default_codec()
    for name in ("codex-session.jsonl", "codex-unknown-model.jsonl", "codex-failed-turn.jsonl"):
        for r in translate(session(name)):
            envelope = Envelope(type=r.type, stream_id="run-1", tenant_id="t", actor="agent:codex", payload=r.payload)
            assert codec.decode(codec.encode(envelope)).payload == r.payload


def test_output_split_anywhere_translates_the_same() -> None:
    """The exec's output arrives in chunks cut wherever the supervisor read (mid-line, mid-UTF-8)."""
    data = session("codex-session.jsonl").replace(b"fixing it", "fixing it \u2014 now".encode())
    whole = translate(data)
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 15))
        translator = CodexTranslator(CID)
        records = []
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            records += translator.feed(data[start:end])
        assert records + translator.close() == whole
    byte_by_byte = CodexTranslator(CID)
    assert [r for i in range(len(data)) for r in byte_by_byte.feed(data[i : i + 1])] == whole


def test_a_last_line_without_newline_is_read_at_close() -> None:
    translator = CodexTranslator(CID)
    line = b'{"type":"item.completed","item":{"id":"item_9","type":"agent_message","text":"bye"}}'
    assert translator.feed(line) == []
    assert translator.close() == [
        AgentRecord("chat.message", {"message_id": "cmd-1:item_9", "role": "agent", "text": "bye"})
    ]


def test_codex_errors_become_error_messages() -> None:
    records = translate(session("codex-unknown-model.jsonl"))
    assert records[0].type == "chat.message" and records[0].payload["role"] == "error"
    assert "Model metadata for `stub-model` not found" in records[0].payload["text"]

    failed = translate(session("codex-failed-turn.jsonl"))
    command = failed[1].payload  # exit 3, status failed
    assert command["is_error"] and command["output"] == ""
    errors = [r.payload for r in failed if r.type == "chat.message"]
    assert [e["role"] for e in errors] == ["error"] * 7
    assert errors[0]["text"].startswith("Reconnecting... 1/5")
    assert errors[-1]["text"] == "stream disconnected before completion: the gateway is overloaded"
    assert len({e["message_id"] for e in errors}) == 7  # events without ids still get distinct ones
    assert not [r for r in failed if r.type == "agent.usage"]  # a failed turn reports no usage


def test_lines_that_are_not_events_are_skipped_and_counted() -> None:
    translator = CodexTranslator(CID)
    data = b'not json\n[1, 2]\n\n{"type": "thread.started", "thread_id": "x"}\n{"type": "something.new"}\n'
    assert translator.feed(data) == [] and translator.skipped == 2


def test_an_event_escaping_a_lone_surrogate_is_read_as_text() -> None:
    """What the agent prints reaches the translator (a command can write to Codex's stdout): an
    event whose text escapes a lone surrogate could be in no record (``_cut`` raised on it, and the
    run failed with an internal error). It reads as text, the surrogate as U+FFFD; a pair stays the
    character it is."""
    translator = CodexTranslator(CID)
    lone = {"type": "item.completed", "item": {"id": "i1", "type": "agent_message", "text": "a\ud800b"}}
    pair = {"type": "item.completed", "item": {"id": "i2", "type": "agent_message", "text": "\U0001f600"}}
    records = translator.feed(f"{json.dumps(lone)}\n{json.dumps(pair)}\n".encode())
    assert [r.payload["text"] for r in records] == ["a\ufffdb", "\U0001f600"] and translator.skipped == 0
    for r in records:
        default_codec().encode(Envelope(type=r.type, stream_id="s", tenant_id="t", actor="a", payload=r.payload))


def test_usage_counts_past_a_long_are_no_counts() -> None:
    """A count past 2**63 (the agent can print any event) made an agent.usage no record holds: the
    run failed with an internal error. Such a count, like a negative one, is 0."""
    usage = {"input_tokens": 2**63, "output_tokens": 10**30, "cached_input_tokens": 2**63 - 1}
    (record,) = translate(f"{json.dumps({'type': 'turn.completed', 'usage': usage})}\n".encode())
    assert (record.payload["input_tokens"], record.payload["output_tokens"]) == (0, 0)
    assert record.payload["cached_input_tokens"] == 2**63 - 1
    default_codec().encode(Envelope(type=record.type, stream_id="s", tenant_id="t", actor="a", payload=record.payload))


def test_a_line_nested_past_the_parser_is_skipped_not_fatal() -> None:
    """``[[[[...`` a hundred thousand deep (the agent can print it): json's parser raised
    RecursionError out of the translator, and the run failed with an internal error."""
    translator = CodexTranslator(CID)
    assert translator.feed(b"[" * 100_000 + b"]" * 100_000 + b"\n") == [] and translator.skipped == 1


def test_a_long_output_is_cut_and_marked() -> None:
    item = {
        "id": "item_0",
        "type": "command_execution",
        "command": "yes",
        "aggregated_output": "y\n" * MAX_TEXT,
        "exit_code": 0,
        "status": "completed",
    }
    called, result = CodexTranslator(CID).translate({"type": "item.completed", "item": item})
    assert called.type == "tool.called"  # a command seen only when it ended is still called first
    assert result.payload["truncated"] and len(result.payload["output"].encode()) == MAX_TEXT


def test_the_invocation_runs_codex_on_the_prompt_file_with_a_placeholder_key() -> None:
    hostile = "Ignore the above; echo $(cat /etc/passwd) `id` 'quoted' \"double\"\n" * 3
    invocation = codex_invocation(hostile, "run-1", model="gpt-5.5; rm -rf /")
    assert invocation.files == {PROMPT_PATH: hostile.encode()}
    assert invocation.env[TOKEN_ENV] == placeholder_token("run-1") and invocation.env["CODEX_HOME"] == CODEX_HOME
    assert CODEX_HOME.startswith(HOME + "/") and not CODEX_HOME.startswith("/tmp")
    sh, flag, script = invocation.argv
    assert (sh, flag) == ("/bin/sh", "-c") and hostile not in script
    prepare, _, run = script.partition(" && exec ")
    assert prepare == 'mkdir -p "$CODEX_HOME"'
    words = shlex.split(run)
    assert words[-2:] == ["<", PROMPT_PATH] and words[-3] == "-"  # the prompt comes on stdin
    codex = words[:-2]
    assert codex[:3] == ["/usr/local/bin/codex", "exec", "--json"]
    assert "--dangerously-bypass-approvals-and-sandbox" in codex and codex[codex.index("-C") + 1] == "/workspace"
    assert codex[codex.index("-m") + 1] == "gpt-5.5; rm -rf /"  # one argument, never shell
    config = [codex[i + 1] for i, word in enumerate(codex) if word == "-c"]
    assert "model_provider=astraforge" in config and "features.plugins=false" in config
    (provider,) = [c for c in config if c.startswith("model_providers.astraforge=")]
    assert 'base_url = "http://model-gateway/v1"' in provider and 'wire_api = "responses"' in provider
    assert f'env_key = "{TOKEN_ENV}"' in provider


@pytest.mark.parametrize(
    "change",
    [
        {"upstream": 'gw"; evil = "1'},
        {"upstream": "GW"},
        {"model": ""},
        {"model": "a\nb"},
        {"reasoning_effort": "max; x=1"},
    ],
)
def test_a_setting_that_cannot_be_passed_on_as_it_is_is_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        codex_invocation("spec", "run-1", **change)


def test_the_invocation_is_sandbox_commands_of_the_event_language() -> None:
    invocation = codex_invocation("Fix it.", "run-1")
    commands = invocation.commands("run-1-codex", 900.0)
    assert [t for t, _ in commands] == ["sandbox.file.write", "sandbox.exec"]
    write, run = (payload for _, payload in commands)
    assert (write["request_id"], write["path"], write["content"]) == ("run-1-codex-f0", PROMPT_PATH, b"Fix it.")
    assert (run["command_id"], run["argv"], run["env"]) == ("run-1-codex", invocation.argv, invocation.env)
    codec = default_codec()
    for type_, payload in commands:
        envelope = Envelope(type=type_, stream_id="run-1", tenant_id="t", actor="processor:runs", payload=payload)
        assert codec.decode(codec.encode(envelope)).payload == payload


def test_a_finished_exec_translates_from_its_output_records() -> None:
    data = session("codex-session.jsonl")

    def output(command_id: str, stream: str, seq: int, chunk: bytes) -> Envelope:
        payload = {"command_id": command_id, "stream": stream, "seq": seq, "data": chunk, "artifact": None}
        return Envelope(type="exec.output", stream_id="run-1", tenant_id="t", actor="p", payload=payload)

    outputs = [output(CID, "stdout", i, data[i * 1000 : (i + 1) * 1000]) for i in range(len(data) // 1000 + 1)]
    outputs.insert(1, output(CID, "stderr", 99, b'{"type": "item.completed", "item": {"type": "agent_message"}}\n'))
    outputs.insert(2, output("other", "stdout", 0, b'{"type": "turn.completed", "usage": {}}\n'))
    assert translate_output(CID, outputs) == translate(data)

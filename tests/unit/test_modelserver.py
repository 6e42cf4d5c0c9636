"""The scripted model server speaks the wire protocols its clients parse: Responses streamed as
server-sent events (the real Codex CLI reads them in tests/integration/test_codex.py) and Chat
Completions, streamed or whole. It serves on loopback only."""

import json

import httpx
from httpx_sse import connect_sse

from tests.modelserver import (
    SCRIPT_EXHAUSTED,
    ModelServer,
    Recorded,
    Turn,
    apply_patch,
    exec_command,
    fail,
    message,
    tool_call,
)


def sse(url: str, body: dict) -> list[tuple[str, str]]:
    with httpx.Client() as client, connect_sse(client, "POST", url, json=body) as events:
        return [(e.event, e.data) for e in events.iter_sse()]


def test_a_responses_turn_streams_its_items_and_usage() -> None:
    turns = [Turn((message("looking"), exec_command("ls -la"), apply_patch("*** Begin Patch\n*** End Patch\n")))]
    with ModelServer(turns) as server:
        url = f"http://127.0.0.1:{server.port}/v1/responses"
        events = sse(url, {"model": "m", "stream": True, "input": []})
        names = [name for name, _ in events]
        assert names[0] == "response.created" and names[-1] == "response.completed"
        done = [json.loads(data)["item"] for name, data in events if name == "response.output_item.done"]
        assert [i["type"] for i in done] == ["message", "function_call", "custom_tool_call"]
        assert done[0]["content"][0] == {"type": "output_text", "text": "looking", "annotations": []}
        assert (done[1]["name"], json.loads(done[1]["arguments"])) == ("exec_command", {"cmd": "ls -la"})
        assert done[2]["name"] == "apply_patch" and done[2]["input"].startswith("*** Begin Patch")
        usage = json.loads(events[-1][1])["response"]["usage"]
        assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (120, 30, 150)

        # past the script: a final message, so a client asking once more finishes
        last = [json.loads(d)["item"] for n, d in sse(url, {"stream": True}) if n == "response.output_item.done"]
        assert last[0]["content"][0]["text"] == SCRIPT_EXHAUSTED
    assert [r.body.get("model") for r in server.requests] == ["m", None]


def test_a_failing_turn_ends_with_response_failed() -> None:
    with ModelServer([Turn((fail("overloaded"),))]) as server:
        events = sse(f"http://127.0.0.1:{server.port}/v1/responses", {"stream": True})
    assert [name for name, _ in events] == ["response.created", "response.failed"]
    assert json.loads(events[1][1])["response"]["error"]["message"] == "overloaded"


def test_chat_completions_streamed_and_whole() -> None:
    turns = [Turn((message("hi"), exec_command("pwd"))), Turn((message("bye"),))]
    with ModelServer(turns) as server:
        url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
        chunks = [data for _, data in sse(url, {"stream": True, "messages": []})]
        assert chunks[-1] == "[DONE]"
        parsed = [json.loads(c) for c in chunks[:-1]]
        deltas = [c["choices"][0]["delta"] for c in parsed if c["choices"]]
        assert "".join(d.get("content") or "" for d in deltas) == "hi"
        (call,) = [t for d in deltas for t in d.get("tool_calls", [])]
        assert call["function"]["name"] == "exec_command" and json.loads(call["function"]["arguments"]) == {
            "cmd": "pwd"
        }
        assert [c["choices"][0]["finish_reason"] for c in parsed if c["choices"]][-1] == "tool_calls"
        assert parsed[-1]["usage"] == {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}

        whole = httpx.post(url, json={"messages": []}).json()
        assert whole["choices"][0]["message"] == {"role": "assistant", "content": "bye"}
        assert whole["choices"][0]["finish_reason"] == "stop"


def test_requests_are_recorded_and_the_hook_runs_before_the_answer() -> None:
    seen: list[str] = []

    def hook(request: Recorded) -> None:
        seen.append(request.headers["authorization"])
        raise AssertionError("kept for the test")

    with ModelServer([Turn((message("ok"),))], on_request=hook) as server:
        r = httpx.post(f"http://127.0.0.1:{server.port}/v1/chat/completions", json={}, headers={"Authorization": "B x"})
        assert r.status_code == 200  # the client still gets its turn
        assert httpx.post(f"http://127.0.0.1:{server.port}/v1/nothing", json={}).status_code == 404
    assert seen == ["B x"] and [str(e) for e in server.script.errors] == ["kept for the test"]
    assert [r.path for r in server.requests] == ["/v1/chat/completions"]


def test_any_declared_function_can_be_called_in_either_protocol() -> None:
    """A LangChain agent's tools (``write_file``...) as well as Codex's ``exec_command``."""
    call = tool_call("write_file", {"file_path": "/workspace/a.txt", "content": "x"})
    with ModelServer([Turn((call,)), Turn((call,)), Turn((fail("overloaded"),))]) as server:
        base = f"http://127.0.0.1:{server.port}/v1"
        (item,) = [
            json.loads(d)["item"]
            for n, d in sse(f"{base}/responses", {"stream": True})
            if n == "response.output_item.done"
        ]
        assert (item["type"], item["name"]) == ("function_call", "write_file")
        assert json.loads(item["arguments"]) == {"file_path": "/workspace/a.txt", "content": "x"}
        whole = httpx.post(f"{base}/chat/completions", json={}).json()["choices"][0]
        (chat_call,) = whole["message"]["tool_calls"]
        assert chat_call["function"]["name"] == "write_file" and whole["finish_reason"] == "tool_calls"
        assert json.loads(chat_call["function"]["arguments"])["content"] == "x"
        failed = httpx.post(f"{base}/chat/completions", json={})
        assert failed.status_code == 500 and failed.json()["error"]["message"] == "overloaded"

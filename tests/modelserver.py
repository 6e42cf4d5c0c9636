"""A scripted model server: the only stand-in for a model (DESIGN §6). It speaks the OpenAI
Responses wire protocol (``POST /v1/responses``, streamed as server-sent events) and Chat
Completions (``POST /v1/chat/completions``, streamed or not), so the real Codex CLI and real
LangChain clients run end to end against it.

A script is a list of turns; each request takes the next turn and answers with its items in order:
a tool call (``exec_command``, ``apply_patch``), then the client runs the tool and asks again with
the output, and the next turn answers that. Every request is recorded (path, headers, JSON body),
so a test can assert what reached the server, e.g. the ``Authorization`` header the egress proxy
put there. A request past the end of the script is answered with a final message
(``SCRIPT_EXHAUSTED``), so a client that asks once more than scripted finishes instead of hanging.

It is a test fixture, never the platform's default model: it lives under tests/.

    python tests/modelserver.py SCRIPT.json [--port N]   # serves until killed, for manual runs
"""

import argparse
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SCRIPT_EXHAUSTED = "The script has no more turns."
USAGE = {"input_tokens": 120, "output_tokens": 30}  # what every scripted turn reports using


@dataclass(frozen=True)
class Item:
    """One output item of a turn: ``kind`` is ``message`` (``text``), ``function_call`` (a call of
    the client's function ``name`` with ``text`` as its JSON arguments), ``apply_patch`` (``text``
    is the patch, in the apply_patch envelope format Codex documents: Codex's freeform tool) or
    ``fail`` (the response fails with ``text`` as its error message)."""

    kind: str
    text: str = ""
    name: str = ""


def message(text: str) -> Item:
    return Item("message", text)


def tool_call(name: str, arguments: dict[str, Any]) -> Item:
    """A call of any function tool the client declared (a LangChain agent's ``write_file``...)."""
    return Item("function_call", json.dumps(arguments), name)


def exec_command(cmd: str) -> Item:
    """Codex's shell tool."""
    return tool_call("exec_command", {"cmd": cmd})


def apply_patch(patch: str) -> Item:
    return Item("apply_patch", patch)


def fail(error: str) -> Item:
    return Item("fail", error)


@dataclass(frozen=True)
class Turn:
    """One answer. Streamed Chat Completions send a message's text in word-sized chunks (token
    deltas); with ``pause``, the stream stops after its first text chunk until the event is set (a
    test cancels, or kills the client's process, mid-reply), then goes on."""

    items: tuple[Item, ...]
    usage: dict[str, int] = field(default_factory=lambda: dict(USAGE))
    pause: threading.Event | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]
    at: float = field(default_factory=time.perf_counter)  # when it arrived (bench/codex.py times steps by it)


class Script:
    """The turns still to answer and the requests seen, shared by the server's threads.

    ``on_request`` runs for each model request before it is answered, while the client waits for
    the answer (a test looks at the client's side then); what it raises is kept in ``errors``.
    """

    def __init__(self, turns: list[Turn], on_request: Callable[[Recorded], None] | None = None) -> None:
        self.turns = list(turns)
        self.requests: list[Recorded] = []
        self.errors: list[BaseException] = []
        self.on_request = on_request
        self.lock = threading.Lock()

    def take(self, request: Recorded) -> Turn:
        with self.lock:
            self.requests.append(request)
            if self.on_request is not None:
                try:
                    self.on_request(request)
                except Exception as e:  # kept for the test to raise; the client still gets its turn
                    self.errors.append(e)
            return self.turns.pop(0) if self.turns else Turn((message(SCRIPT_EXHAUSTED),))

    @property
    def model_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(("/responses", "/chat/completions"))]


_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


# -- Responses API ---------------------------------------------------------------------------
def response_item(item: Item) -> dict[str, Any]:
    """The Responses API output item of a scripted item."""
    if item.kind == "message":
        return {
            "type": "message",
            "id": _id("msg"),
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": item.text, "annotations": []}],
        }
    if item.kind == "function_call":
        return {
            "type": "function_call",
            "id": _id("fc"),
            "call_id": _id("call"),
            "name": item.name,
            "arguments": item.text,
            "status": "completed",
        }
    if item.kind == "apply_patch":
        return {
            "type": "custom_tool_call",
            "id": _id("ctc"),
            "call_id": _id("call"),
            "name": "apply_patch",
            "input": item.text,
            "status": "completed",
        }
    raise ValueError(f"unknown scripted item kind {item.kind!r}")


def responses_events(turn: Turn, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The server-sent events of one streamed Responses turn, as (event name, data)."""
    response_id = _id("resp")
    base = {"id": response_id, "object": "response", "created_at": int(time.time()), "model": model}
    yield "response.created", {"type": "response.created", "response": {**base, "status": "in_progress", "output": []}}
    output = []
    for index, item in enumerate(turn.items):
        if item.kind == "fail":
            error = {"code": "server_error", "message": item.text}
            failed = {**base, "status": "failed", "output": output, "error": error}
            yield "response.failed", {"type": "response.failed", "response": failed}
            return
        body = response_item(item)
        output.append(body)
        yield (
            "response.output_item.added",
            {"type": "response.output_item.added", "output_index": index, "item": {**body, "status": "in_progress"}},
        )
        if item.kind == "message":
            yield (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "item_id": body["id"],
                    "output_index": index,
                    "content_index": 0,
                    "delta": item.text,
                },
            )
        yield "response.output_item.done", {"type": "response.output_item.done", "output_index": index, "item": body}
    usage = {
        "input_tokens": turn.usage["input_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": turn.usage["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": turn.usage["input_tokens"] + turn.usage["output_tokens"],
    }
    completed = {**base, "status": "completed", "output": output, "usage": usage}
    yield "response.completed", {"type": "response.completed", "response": completed}


# -- Chat Completions ------------------------------------------------------------------------
def chat_message(turn: Turn) -> dict[str, Any]:
    """The assistant message of a turn: text items joined, tool items as function tool calls."""
    text = "".join(i.text for i in turn.items if i.kind == "message")
    calls = [
        {
            "id": _id("call"),
            "type": "function",
            "function": {
                "name": i.name or i.kind,
                "arguments": i.text if i.kind == "function_call" else json.dumps({"input": i.text}),
            },
        }
        for i in turn.items
        if i.kind != "message"
    ]
    return {"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})}


def chat_usage(turn: Turn) -> dict[str, int]:
    prompt, completion = turn.usage["input_tokens"], turn.usage["output_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(turn: Turn, model: str) -> dict[str, Any]:
    msg = chat_message(turn)
    return {
        "id": _id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if "tool_calls" in msg else "stop"}],
        "usage": chat_usage(turn),
    }


def chat_chunks(turn: Turn, model: str) -> Iterator[dict[str, Any]]:
    """The chunks of one streamed Chat Completions turn (usage in the last one, as OpenAI sends
    it for ``stream_options.include_usage``)."""
    completion = chat_completion(turn, model)
    common = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": model,
    }
    msg = completion["choices"][0]["message"]
    yield {**common, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    for piece in _words(msg["content"] or ""):
        yield {**common, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
    for index, call in enumerate(msg.get("tool_calls", [])):
        delta = {"tool_calls": [{"index": index, **call}]}
        yield {**common, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    finish = completion["choices"][0]["finish_reason"]
    yield {**common, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    yield {**common, "choices": [], "usage": completion["usage"]}


def _paused(chunks: Iterator[dict[str, Any]], turn: Turn) -> Iterator[dict[str, Any]]:
    """The chunks, holding after the first one with text until ``turn.pause`` is set."""
    held = turn.pause is None
    for chunk in chunks:
        yield chunk
        text = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
        if not held and text:
            held = True
            turn.pause.wait(600)


def _words(text: str) -> list[str]:
    """``text`` in pieces that join back to it: each word with the space before it."""
    pieces = re.findall(r"\s*\S+", text)
    if pieces and "".join(pieces) != text:
        pieces[-1] += text[len("".join(pieces)) :]
    return pieces or ([text] if text else [])


# -- the server ------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script: Script  # set on the subclass made per server

    def log_message(self, format: str, *args: object) -> None:  # quiet: the test reads self.script
        pass

    def do_GET(self) -> None:
        self.script.requests.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, {}))
        if self.path.rstrip("/").endswith("/models"):
            return self._json(200, {"object": "list", "data": []})
        self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._json(400, {"error": {"message": "body is not JSON"}})
        recorded = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        if self.path.endswith("/responses"):
            turn = self.script.take(recorded)
            if not body.get("stream"):
                events = list(responses_events(turn, body.get("model", "")))
                return self._json(200, events[-1][1]["response"])
            return self._sse(
                (
                    f"event: {name}\ndata: {json.dumps(data)}\n\n"
                    for name, data in responses_events(turn, body.get("model", ""))
                )
            )
        if self.path.endswith("/chat/completions"):
            turn = self.script.take(recorded)
            failed = [i.text for i in turn.items if i.kind == "fail"]
            if failed:
                return self._json(500, {"error": {"message": failed[0], "type": "server_error"}})
            if not body.get("stream"):
                return self._json(200, chat_completion(turn, body.get("model", "")))
            chunks = (f"data: {json.dumps(c)}\n\n" for c in _paused(chat_chunks(turn, body.get("model", "")), turn))
            return self._sse(itertools.chain(chunks, ["data: [DONE]\n\n"]))
        self.script.requests.append(recorded)
        self._json(404, {"error": {"message": f"no route {self.path}"}})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, frames: Iterator[str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for frame in frames:
            self.wfile.write(frame.encode())
            self.wfile.flush()
        self.close_connection = True


class ModelServer:
    """The server in a thread, on a free loopback port or on ``listener`` (a listening socket it
    then owns); a context manager."""

    def __init__(
        self,
        turns: list[Turn],
        listener: socket.socket | None = None,
        on_request: Callable[[Recorded], None] | None = None,
        port: int = 0,
    ) -> None:
        self.script = Script(turns, on_request)
        handler = type("Handler", (_Handler,), {"script": self.script})
        if listener is None:
            self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        else:
            self.httpd = ThreadingHTTPServer(listener.getsockname(), handler, bind_and_activate=False)
            self.httpd.socket.close()
            self.httpd.socket = listener
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="modelserver", daemon=True)

    @property
    def requests(self) -> list[Recorded]:
        return self.script.model_requests

    def __enter__(self) -> "ModelServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def load_script(path: Path) -> list[Turn]:
    """Turns from JSON: ``[[{"kind": "function_call", "name": "exec_command", "text": "{\\"cmd\\": \\"ls\\"}"}],
    [{"kind": "message", "text": "done"}]]``."""
    return [
        Turn(tuple(Item(i["kind"], i.get("text", ""), i.get("name", "")) for i in turn))
        for turn in json.loads(path.read_text())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ModelServer(load_script(args.script), port=args.port)
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    with server:
        threading.Event().wait()


if __name__ == "__main__":
    main()

"""The remote LangChain tools against the running platform: each call goes into the sandbox
through the API (and so is on its stream); the Python REPL keeps one interpreter per sandbox."""

import base64
import struct
import zlib
from collections.abc import Iterator

import pytest
from astraforge_toolkit import AstraForgeClient, Sandbox
from astraforge_toolkit.tools import sandbox_tools
from langchain_core.messages import ToolMessage

from tests.conftest import new_tenant


def tiny_png() -> bytes:
    """A real 1x1 red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0\xff\0\0")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def client(api_url, sandbox_processor, settings) -> Iterator[AstraForgeClient]:
    with AstraForgeClient(api_url, new_tenant(settings)[1]) as c:
        yield c


@pytest.fixture(scope="module")
def sandbox(client) -> Iterator[Sandbox]:
    sandbox = client.create_sandbox()
    yield sandbox
    client.delete_sandbox(sandbox.id)


def tool(client: AstraForgeClient, sandbox_id: str, name: str):
    (found,) = [t for t in sandbox_tools(client, sandbox_id) if t.name == name]
    return found


def test_shell_answers_output_and_exit_code(client, sandbox) -> None:
    answer = tool(client, sandbox.id, "shell").invoke({"command": "echo hi; echo oops >&2; exit 4"})
    assert "hi" in answer and "oops" in answer and "[exit code 4]" in answer


def test_the_python_repl_keeps_its_state_across_calls_and_clients(api_url, client, sandbox) -> None:
    repl = tool(client, sandbox.id, "python_repl")
    assert repl.invoke({"code": "import os\nx = 41\nprint('set')"}).strip() == "set"
    assert repl.invoke({"code": "x + 1"}).strip() == "42"
    pid = repl.invoke({"code": "os.getpid()"}).strip()
    assert "ZeroDivisionError" in repl.invoke({"code": "1 / 0"})
    # another client and tool set, same sandbox: the same interpreter, its state intact
    with AstraForgeClient(api_url, client.api_key) as other:
        again = tool(other, sandbox.id, "python_repl")
        assert again.invoke({"code": "x, os.getpid()"}).strip() == f"(41, {pid})"
    # a sandbox of its own has an interpreter of its own
    second = client.create_sandbox()
    try:
        assert "NameError" in tool(client, second.id, "python_repl").invoke({"code": "x"})
    finally:
        client.delete_sandbox(second.id)


def test_write_then_read_a_file_and_errors_are_text(client, sandbox) -> None:
    wrote = tool(client, sandbox.id, "write_file").invoke({"path": "/workspace/notes/a.md", "content": "# héllo\n"})
    assert wrote == "wrote 9 bytes to /workspace/notes/a.md"
    assert tool(client, sandbox.id, "read_file").invoke({"path": "notes/a.md"}) == "# héllo\n"
    missing = tool(client, sandbox.id, "read_file").invoke({"path": "/workspace/none.txt"})
    assert missing.startswith("Error: read_file: not_found")


def test_view_image_answers_an_image_content_block(client, sandbox) -> None:
    png = tiny_png()
    client.upload(sandbox.id, "/workspace/dot.png", png)
    message = tool(client, sandbox.id, "view_image").invoke(
        {"type": "tool_call", "id": "call-1", "name": "view_image", "args": {"path": "/workspace/dot.png"}}
    )
    assert isinstance(message, ToolMessage)
    (block,) = message.content
    assert block["type"] == "image" and block["mime_type"] == "image/png"
    assert base64.b64decode(block["base64"]) == png


def test_every_tool_call_is_on_the_sandbox_stream(client, sandbox) -> None:
    tool(client, sandbox.id, "write_file").invoke({"path": "/workspace/recorded.txt", "content": "x"})
    tool(client, sandbox.id, "shell").invoke({"command": "echo recorded-marker"})
    seen = set()
    for event in client.stream(sandbox.id):  # replay, then live: the records come whatever the projection's lag
        if event.type == "file.written" and event.payload.get("path") == "/workspace/recorded.txt":
            seen.add("write_file")
        if event.type == "exec.output" and "recorded-marker" in str(event.payload):
            seen.add("shell")
        if seen == {"write_file", "shell"}:
            break

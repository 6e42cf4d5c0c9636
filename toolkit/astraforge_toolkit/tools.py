"""Remote tools for LangChain agents, each a call into one AstraForge sandbox (so each is recorded
on the sandbox's stream): a shell, a Python REPL that keeps its state across calls, read file,
write file, and view image (an image content block the model can look at).

    tools = sandbox_tools(client, sandbox.id)
    agent = create_agent(model, tools=tools)

Needs langchain-core (the ``deepagents`` extra brings it). Every tool answers text the model can
read, an error included (``Error: ...``), instead of raising into the agent loop.
"""

import base64
import mimetypes
from pathlib import Path

from langchain_core.tools import BaseTool, StructuredTool

from astraforge_toolkit.client import AstraForgeClient
from astraforge_toolkit.errors import AstraForgeError

REPL_DIR = "/tmp/.astraforge-repl"
REPL_SCRIPT = f"{REPL_DIR}/repl_server.py"
MAX_TEXT_BYTES = 256 * 1024  # read_file answers at most this much text; the rest is cut with a note


class PythonRepl:
    """One interpreter per sandbox session: the first call copies ``repl_server.py`` into the
    sandbox, which starts the interpreter; later calls (from any client) reuse it."""

    def __init__(self, client: AstraForgeClient, sandbox_id: str) -> None:
        self.client, self.sandbox_id = client, sandbox_id
        self._installed = False

    def run(self, code: str, timeout: float = 300) -> str:
        if not self._installed:
            self.client.upload(self.sandbox_id, REPL_SCRIPT, (Path(__file__).parent / "repl_server.py").read_bytes())
            self._installed = True
        result = self.client.exec(self.sandbox_id, ["python3", REPL_SCRIPT, REPL_DIR, code], timeout=timeout)
        if result.timed_out:
            return result.output + f"\n[timed out after {timeout} s]"
        return result.output


def _guarded(what: str, action) -> str:
    try:
        return action()
    except AstraForgeError as e:
        return f"Error: {what}: {e.code}: {e.message}"


def sandbox_tools(client: AstraForgeClient, sandbox_id: str) -> list[BaseTool]:
    """shell, python_repl, read_file, write_file and view_image over one sandbox."""
    repl = PythonRepl(client, sandbox_id)

    def shell(command: str, timeout: int = 300) -> str:
        """Run a shell command in the sandbox (working directory /workspace); answers its
        output (stdout and stderr interleaved) and exit code."""

        def run() -> str:
            result = client.exec(sandbox_id, command, timeout=timeout)
            note = " (timed out)" if result.timed_out else ""
            return f"{result.output}\n[exit code {result.exit_code}{note}]"

        return _guarded("shell", run)

    def python_repl(code: str) -> str:
        """Run Python code in a persistent interpreter in the sandbox: variables, imports and
        functions stay defined between calls. The value of a last bare expression is printed."""
        return _guarded("python_repl", lambda: repl.run(code))

    def read_file(path: str) -> str:
        """Read a text file of the sandbox (absolute path, or relative to /workspace)."""

        def read() -> str:
            data = client.download(sandbox_id, path)
            text = data[:MAX_TEXT_BYTES].decode("utf-8", errors="replace")
            if len(data) > MAX_TEXT_BYTES:
                text += f"\n[cut at {MAX_TEXT_BYTES} of {len(data)} bytes: read the rest with shell, e.g. tail -c]"
            return text

        return _guarded("read_file", read)

    def write_file(path: str, content: str) -> str:
        """Write a text file in the sandbox (parents are created; an existing file is replaced)."""

        def write() -> str:
            written = client.upload(sandbox_id, path, content.encode())
            return f"wrote {written.size} bytes to {written.path}"

        return _guarded("write_file", write)

    def view_image(path: str) -> list[dict] | str:
        """Look at an image file of the sandbox (PNG, JPEG, GIF, WebP)."""
        mime = mimetypes.guess_type(path)[0] or "image/png"
        if not mime.startswith("image/"):
            return f"Error: view_image: {path} is not an image ({mime})"
        try:
            data = client.download(sandbox_id, path)
        except AstraForgeError as e:
            return f"Error: view_image: {e.code}: {e.message}"
        return [{"type": "image", "base64": base64.b64encode(data).decode(), "mime_type": mime}]

    return [StructuredTool.from_function(f) for f in (shell, python_repl, read_file, write_file, view_image)]

"""``SandboxBackend``: a deepagents ``BaseSandbox`` over the AstraForge HTTP API.

    backend = SandboxBackend(client, sandbox.id)
    agent = create_deep_agent(model, backend=backend)

deepagents builds ls, read, write, edit, grep and glob on three primitives; this class supplies
them through the platform, so every command and file an agent touches is a record on the
sandbox's stream: ``execute`` is ``POST /exec``, ``upload_files`` is ``PUT /files/...`` and
``download_files`` is ``GET /files/...``. The async variants are deepagents' own (a thread each
over the sync client, which is thread-safe).

File errors map to deepagents' closed set (``file_not_found``, ``permission_denied``,
``is_directory``, ``invalid_path``); a relative path is ``invalid_path`` here, before any call:
deepagents' protocol takes absolute paths only, while the API would read one under /workspace.
"""

from deepagents.backends.protocol import ExecuteResponse, FileDownloadResponse, FileUploadResponse
from deepagents.backends.sandbox import BaseSandbox

from astraforge_toolkit.client import AstraForgeClient
from astraforge_toolkit.errors import AstraForgeError

DEFAULT_EXEC_TIMEOUT_S = 600


def file_error(error: AstraForgeError) -> str:
    """deepagents' error literal for a failed file call."""
    if error.status == 404:
        return "file_not_found"
    if error.status == 403:
        return "permission_denied"
    message = error.message
    if "IsADirectoryError" in message or "not a regular file" in message:
        return "is_directory"
    if "PermissionError" in message:
        return "permission_denied"
    if "FileNotFoundError" in message or "NotADirectoryError" in message:
        return "file_not_found"
    return "invalid_path"


class SandboxBackend(BaseSandbox):
    """One AstraForge sandbox session as a deepagents backend (the sandbox must be ready)."""

    def __init__(
        self, client: AstraForgeClient, sandbox_id: str, *, default_timeout: int = DEFAULT_EXEC_TIMEOUT_S
    ) -> None:
        self.client = client
        self.sandbox_id = sandbox_id
        self.default_timeout = default_timeout

    @property
    def id(self) -> str:
        return self.sandbox_id

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        """Run ``command`` with ``sh -c`` in /workspace. Output past the first MiB is in the
        artifact store (the rest of it, as produced): it is fetched and appended, so the agent
        sees all of it."""
        try:
            result = self.client.exec(self.sandbox_id, command, timeout=timeout or self.default_timeout)
            output = result.output
            if result.output_artifact:
                output += self.client.artifact(result.output_artifact).decode("utf-8", errors="replace")
        except AstraForgeError as e:
            return ExecuteResponse(output=f"Error: {e.code}: {e.message}", exit_code=None)
        if result.timed_out:
            output += f"\n[command timed out after {timeout or self.default_timeout} s]"
        elif result.error:
            output += f"\n[{result.error}]"
        return ExecuteResponse(output=output, exit_code=result.exit_code, truncated=result.truncated)

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        """Each file written as one record (parents created, an existing file replaced)."""
        responses = []
        for path, content in files:
            if not path.startswith("/"):
                responses.append(FileUploadResponse(path=path, error="invalid_path"))
                continue
            try:
                self.client.upload(self.sandbox_id, path, content)
            except AstraForgeError as e:
                responses.append(FileUploadResponse(path=path, error=file_error(e)))  # type: ignore[arg-type]
            else:
                responses.append(FileUploadResponse(path=path, error=None))
        return responses

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        responses = []
        for path in paths:
            if not path.startswith("/"):
                responses.append(FileDownloadResponse(path=path, content=None, error="invalid_path"))
                continue
            try:
                content = self.client.download(self.sandbox_id, path)
            except AstraForgeError as e:
                responses.append(FileDownloadResponse(path=path, content=None, error=file_error(e)))  # type: ignore[arg-type]
            else:
                responses.append(FileDownloadResponse(path=path, content=content, error=None))
        return responses

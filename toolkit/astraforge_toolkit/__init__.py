"""astraforge-toolkit: AstraForge sandboxes and runs from Python, and for deepagents.

``AstraForgeClient`` / ``AsyncAstraForgeClient`` wrap the HTTP API. ``SandboxBackend``
(``astraforge_toolkit.backend``) and the LangChain tools (``astraforge_toolkit.tools``) need the
``deepagents`` extra and are imported from their modules, so the core needs only httpx.
"""

from astraforge_toolkit.aio import AsyncAstraForgeClient
from astraforge_toolkit.client import AstraForgeClient
from astraforge_toolkit.errors import (
    ApiUnavailable,
    AstraForgeError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    TooLarge,
    Unauthorized,
)
from astraforge_toolkit.types import (
    ArtifactRef,
    Conversation,
    Event,
    ExecAccepted,
    ExecResult,
    FileWritten,
    MessageAccepted,
    Page,
    Run,
    Sandbox,
    Snapshot,
)

DeepAgentClient = AstraForgeClient  # the second name for the same client

__all__ = [
    "ApiUnavailable",
    "ArtifactRef",
    "AstraForgeClient",
    "AstraForgeError",
    "AsyncAstraForgeClient",
    "BadRequest",
    "Conflict",
    "Conversation",
    "DeepAgentClient",
    "Event",
    "ExecAccepted",
    "ExecResult",
    "FileWritten",
    "Forbidden",
    "MessageAccepted",
    "NotFound",
    "Page",
    "QuotaExceeded",
    "Run",
    "Sandbox",
    "Snapshot",
    "TooLarge",
    "Unauthorized",
]

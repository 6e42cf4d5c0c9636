"""Errors of the AstraForge API as exceptions: the API's ``{"error": {"code", "message", "details"}}``
becomes an ``AstraForgeError`` carrying the same ``code``, the HTTP ``status`` and the ``details``.

Each subclass also inherits the builtin that matches it (``NotFound`` is a ``LookupError``), so
callers may catch either. A transport failure (the API is unreachable) is ``ApiUnavailable``.
"""

from typing import Any


class AstraForgeError(Exception):
    """An error the API answered (or a transport failure, with ``status`` 0)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class BadRequest(AstraForgeError, ValueError):
    """400 or 422: the request is wrong as sent (``details`` names the field)."""


class Unauthorized(AstraForgeError, PermissionError):
    """401: no key, or a key the API refuses."""


class Forbidden(AstraForgeError, PermissionError):
    """403: e.g. a path outside the sandbox's writable roots, a repository off the allowlist."""


class NotFound(AstraForgeError, LookupError):
    """404: no such resource for this tenant (another tenant's resource answers 404 too)."""


class Conflict(AstraForgeError):
    """409: the resource is in a state that refuses the call (e.g. a terminated sandbox)."""


class TooLarge(AstraForgeError, ValueError):
    """413: a file or snapshot past the platform's limit."""


class QuotaExceeded(AstraForgeError):
    """429: a tenant quota (``details``: quota, limit, used)."""


class ApiUnavailable(AstraForgeError, ConnectionError):
    """503/504, or the API could not be reached at all (``status`` 0): retry later."""


_BY_STATUS: dict[int, type[AstraForgeError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: BadRequest,
    429: QuotaExceeded,
    503: ApiUnavailable,
    504: ApiUnavailable,
}


def error_from_response(status: int, body: Any, fallback_text: str = "") -> AstraForgeError:
    """The exception for an error answer; the body's ``error`` object when it has one."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message, details = str(error.get("code", "error")), str(error.get("message", "")), error.get("details")
    else:
        code, message, details = "error", fallback_text[:500], None
    cls = _BY_STATUS.get(status, ApiUnavailable if status >= 500 else AstraForgeError)
    return cls(status, code, message, details)

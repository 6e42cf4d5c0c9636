"""Every error leaves as ``{"error": {"code", "message", "details"}}``; bad input is a 4xx."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from astraforge.errors import DatabaseUnavailable, KafkaUnavailable

LOG = logging.getLogger(__name__)
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An HTTP error with a machine-readable code and optional details."""

    def __init__(self, status: int, message: str, code: str | None = None, details: object = None) -> None:
        super().__init__(status, message)
        self.code = code or CODES.get(status, "error")
        self.details = details


def error_body(status: int, message: str, code: str | None = None, details: object = None) -> dict:
    return {"error": {"code": code or CODES.get(status, "error"), "message": message, "details": details}}


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None)
        details = getattr(exc, "details", None)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else getattr(exc, "headers", None)
        return JSONResponse(error_body(exc.status_code, str(exc.detail), code, details), exc.status_code, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse(error_body(422, "request did not validate", details=details), 422)

    @app.exception_handler(KafkaUnavailable)
    @app.exception_handler(DatabaseUnavailable)
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        LOG.warning("dependency unavailable: %s", exc)
        return JSONResponse(error_body(503, "a backing service is unavailable, retry shortly"), 503)

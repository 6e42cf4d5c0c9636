"""The web UI's built files at ``/``, with the single-page app's fallback to index.html.

The fallback never shadows the API: it is the router's "no route matched" handler (so a route's
405 stays a 405), it answers only GET and HEAD, and a path under an API prefix (``/v1``, ``/docs``,
``/openapi.json``...) that no route matched still answers the API's JSON 404, not the page.
Hashed assets are cached for good; index.html is revalidated every time and carries a
Content-Security-Policy that lets the page load nothing from another origin.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

API_PREFIXES = ("v1", "docs", "docs-assets", "redoc", "openapi.json", "health", "assets")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
PAGE_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}


class ImmutableAssets(StaticFiles):
    """Vite names assets by content hash: a file's name changes whenever its bytes do."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def install(app: FastAPI, dist: Path | None) -> None:
    """Serve ``dist`` (vite's output) at ``/``; nothing when the UI was not built."""
    if dist is None or not (dist / "index.html").is_file():
        return
    index = dist / "index.html"
    app.mount("/assets", ImmutableAssets(directory=dist / "assets", check_dir=False), name="web-assets")
    not_found = app.router.default

    async def page(scope: Scope, receive: Receive, send: Send) -> None:
        if is_page(scope):
            await FileResponse(index, headers=PAGE_HEADERS)(scope, receive, send)
        else:
            await not_found(scope, receive, send)

    app.router.default = page


def is_page(scope: Scope) -> bool:
    """A browser's navigation to one of the UI's own paths (a client-side route)."""
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
        return False
    return scope["path"].lstrip("/").split("/", 1)[0] not in API_PREFIXES

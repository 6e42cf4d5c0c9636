"""A stand-in for the Sentry REST API and GlitchTip's Sentry-compatible one: the calls the alerts
processor makes (an issue's latest event; an issue's comments, listed and posted), checked as
documented (Bearer token; Sentry's comment body ``{"text"}``, GlitchTip's ``{"data": {"text"}}``;
comments listed newest first as ``{"id", "type": "note", "data": {"text"}}``, paginated with
Sentry's ``Link`` header: ``rel="next"; results="true|false"; cursor="..."``). It keeps every
request it saw for the tests to assert on."""

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.alert_payloads import rest_latest_event

LATEST = re.compile(r"^/api/0/(?:organizations/[^/]+/)?issues/(?P<issue>\d+)/events/latest/$")
COMMENTS = re.compile(r"^/api/0/issues/(?P<issue>\d+)/comments/$")


@dataclass
class IssueApiStandIn:
    url: str
    token: str
    kind: str  # sentry | glitchtip
    requests: list[dict] = field(default_factory=list)
    page_size: int = 100  # Sentry's default page
    latest: dict[str, dict] = field(default_factory=dict)  # an issue's latest event, where not the default

    def comments(self, issue_id: str) -> list[str]:
        return [r["text"] for r in self.requests if r.get("comment_on") == issue_id]

    def add_comment(self, issue_id: str, text: str) -> None:
        """A comment somebody else wrote on the issue."""
        self.requests.append({"method": "POST", "path": "(elsewhere)", "comment_on": issue_id, "text": text})


def _handler(api: IssueApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            return

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            ok = self.headers.get("Authorization") == f"Bearer {api.token}"
            if not ok:
                self._answer(401, {"detail": "Authentication credentials were not provided."})
            return ok

        def do_GET(self) -> None:
            api.requests.append({"method": "GET", "path": self.path})
            if not self._authorized():
                return
            url = urlsplit(self.path)
            listed = COMMENTS.match(url.path)
            if listed:
                return self._comment_page(url, listed["issue"])
            found = LATEST.match(self.path)
            if not found:
                return self._answer(404, {"detail": "Not found."})
            self._answer(200, api.latest.get(found["issue"]) or rest_latest_event(found["issue"]))

        def _comment_page(self, url, issue_id: str) -> None:
            texts = list(reversed(api.comments(issue_id)))  # newest first
            cursor = (parse_qs(url.query).get("cursor") or ["0:0:0"])[0]
            start = int(cursor.split(":")[1])
            page = texts[start : start + api.page_size]
            following = start + api.page_size
            more = "true" if following < len(texts) else "false"
            base = f"{api.url}{url.path}"
            link = (
                f'<{base}?cursor=0:{start}:1>; rel="previous"; results="{"true" if start else "false"}"; '
                f'cursor="0:{start}:1", <{base}?cursor=0:{following}:0>; rel="next"; results="{more}"; '
                f'cursor="0:{following}:0"'
            )
            body = [{"id": str(start + i), "type": "note", "data": {"text": t}} for i, t in enumerate(page)]
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Link", link)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            seen = {"method": "POST", "path": self.path, "body": body}
            api.requests.append(seen)
            if not self._authorized():
                return
            found = COMMENTS.match(self.path)
            if not found:
                return self._answer(404, {"detail": "Not found."})
            text = body.get("text") if api.kind == "sentry" else (body.get("data") or {}).get("text")
            if not isinstance(text, str) or not text:
                return self._answer(400, {"text": ["This field is required."]})
            seen.update(comment_on=found["issue"], text=text)
            self._answer(201, {"id": str(len(api.requests)), "data": {"text": text}, "type": "note"})

    return Handler


@contextmanager
def issue_api(kind: str, token: str) -> Iterator[IssueApiStandIn]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    api = IssueApiStandIn(f"http://127.0.0.1:{server.server_address[1]}", token, kind)
    server.RequestHandlerClass = _handler(api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()

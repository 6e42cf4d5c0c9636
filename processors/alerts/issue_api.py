"""The issue tracker's API, for enrichment and answers: Sentry's REST API, or GlitchTip's
Sentry-compatible one. Two calls: the issue's latest event (its stack trace), and a comment (Sentry
issue comment / GlitchTip note) saying how the remediation run ended.

The token travels in the Authorization header only; it is never logged or recorded, and an error
names the call and the status, never the request. The base URL is a tenant's choice: unless the
operator trusts its ``host:port``, every address it resolves to must be public (not loopback,
private, link-local, this host or a platform service), or no call is made.

The name is resolved once per call and the connection goes to the address that was checked (the
URL's host in ``Host`` and, over TLS, in SNI and the certificate check): a DNS answer that changes
between the check and the connection (rebinding) reaches nothing new. A trusted ``host:port`` is
connected to by name.
"""

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from astraforge import jsontext
from astraforge.errors import AstraForgeError
from astraforge.integrations import Integration
from astraforge.sandbox.egress_addresses import Address, AddressPolicy, resolve_now

MAX_COMMENT_PAGES = 20  # an issue with more comments than this many pages is searched no further


class IssueApiFailed(AstraForgeError, RuntimeError):
    """The API did not answer, or answered with an error status."""


class IssueApi:
    def __init__(
        self,
        integration: Integration,
        token: str,
        timeout_s: float,
        policy: AddressPolicy,
        trusted: list[str],
        resolve: Callable[[str], list[Address]] = resolve_now,
    ) -> None:
        self.integration = integration
        self.policy = policy
        self.trusted = trusted
        self.resolve = resolve
        self.client = httpx.Client(
            base_url=integration.api_base_url or "",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout_s,
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()

    def _issue_path(self, issue_id: str) -> str:
        org = self.integration.organization
        if self.integration.kind == "sentry" and org:
            return f"/api/0/organizations/{org}/issues/{issue_id}"
        return f"/api/0/issues/{issue_id}"

    def latest_event(self, issue_id: str) -> dict[str, Any]:
        return self._call("GET", f"{self._issue_path(issue_id)}/events/latest/")[1]

    def comment(self, issue_id: str, text: str) -> int:
        """Post ``text`` on the issue; the answer's status."""
        body = {"text": text} if self.integration.kind == "sentry" else {"data": {"text": text}}
        return self._call("POST", f"/api/0/issues/{issue_id}/comments/", body)[0]

    def comment_once(self, issue_id: str, text: str, marker: str) -> int:
        """Post ``text`` (which carries ``marker``, unique to what it answers) unless a comment on the
        issue carries the marker already: a crash between an earlier post and its record posts
        nothing the second time. The status of the post, or 200 when the comment was there."""
        if marker not in text:
            raise ValueError("the comment must carry its marker")
        if any(marker in body for body in self.comment_texts(issue_id)):
            return 200
        return self.comment(issue_id, text)

    def comment_texts(self, issue_id: str) -> list[str]:
        """The texts of the issue's comments (Sentry: newest first, pages followed through the ``Link``
        header's ``rel="next"`` while it says ``results="true"``), at most ``MAX_COMMENT_PAGES`` pages."""
        texts, path, params = [], f"/api/0/issues/{issue_id}/comments/", None
        for _ in range(MAX_COMMENT_PAGES):
            r = self._request("GET", path, params=params)
            page = _json(r, "GET", path)
            if not isinstance(page, list):
                raise IssueApiFailed(f"GET {path}: the answer is not a list of comments")
            for item in page:
                data = item.get("data") if isinstance(item, dict) else None
                if isinstance(data, dict) and isinstance(data.get("text"), str):
                    texts.append(data["text"])
            following = r.links.get("next") or {}
            if following.get("results") != "true" or not following.get("cursor"):
                return texts
            params = {"cursor": following["cursor"]}
        return texts

    def _checked_address(self) -> Address | None:
        """The address to connect to: the API host's, resolved now and checked (every address it
        resolves to must pass); None for a trusted ``host:port`` (connected to by name)."""
        url = urlsplit(self.integration.api_base_url or "")
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        if f"{host}:{port}" in self.trusted:
            return None
        addresses = self.resolve(host)
        if not addresses:
            raise IssueApiFailed(f"{host} does not resolve")
        for ip in addresses:
            refusal = self.policy.refusal(ip)
            if refusal:
                raise IssueApiFailed(f"refused to call {host}: {refusal}")
        return addresses[0]

    def _request(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> httpx.Response:
        address = self._checked_address()
        request = self.client.build_request(method, path, json=body, params=params)
        if address is not None:  # to the checked address, not to whatever the name resolves to next
            request.headers["Host"] = request.url.netloc.decode("ascii")
            if request.url.scheme == "https":  # the certificate is still checked against the name
                request.extensions = {**request.extensions, "sni_hostname": request.url.host}
            request.url = request.url.copy_with(host=str(address))
        try:
            r = self.client.send(request)
        except httpx.HTTPError as e:
            raise IssueApiFailed(f"{method} {path}: {type(e).__name__}") from None
        if r.status_code >= 400:
            raise IssueApiFailed(f"{method} {path}: HTTP {r.status_code}")
        return r

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        r = self._request(method, path, body)
        return r.status_code, _json(r, method, path)


def _json(r: httpx.Response, method: str, path: str) -> Any:
    """The answer as text (``jsontext``: a source line or message of the monitored app may escape a
    lone surrogate, which no record holds: the run it started was lost)."""
    try:
        return jsontext.loads(r.content) if r.content else {}
    except (ValueError, RecursionError):  # not JSON, or nested past what json's parser takes
        raise IssueApiFailed(f"{method} {path}: the answer is not JSON") from None

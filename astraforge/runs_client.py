"""The API client behind ``astraforge run`` and ``astraforge runs``: submit a request, follow the
run's stream over SSE, review and cancel. It speaks HTTP only (the core never imports the API)."""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from astraforge.errors import AstraForgeError

ENDED = ("merged", "rejected", "failed", "cancelled")
STOP_AT = (*ENDED, "awaiting_review")  # where following a run ends: a person acts next, or nobody
FAILED = ("rejected", "failed", "cancelled")


class ApiFailed(AstraForgeError, RuntimeError):
    """The API answered an error (its message is the API's)."""


@dataclass(frozen=True)
class StreamRecord:
    offset: int
    type: str
    payload: dict[str, Any]


class RunsClient:
    def __init__(self, base_url: str, key: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def _call(self, method: str, path: str, **kw) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ApiFailed(f"the API at {self.base_url} did not answer: {e}") from e
        if r.status_code >= 400:
            try:
                error = r.json()["error"]
                message = f"{r.status_code} {error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = f"{r.status_code}: {r.text[:500]}"
            raise ApiFailed(message)
        return r.json()

    def submit(self, request: dict, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/requests", json=request, headers=headers)

    def list(self, **filters: str | None) -> list[dict]:
        return self._call("GET", "/v1/runs", params={k: v for k, v in filters.items() if v})["items"]

    def show(self, run_id: str) -> dict:
        return self._call("GET", f"/v1/runs/{run_id}")

    def review(self, run_id: str, decision: str, comment: str | None = None, guidance: str | None = None) -> dict:
        body = {"decision": decision, "comment": comment, "guidance": guidance}
        return self._call("POST", f"/v1/runs/{run_id}/review", json=body)

    def cancel(self, run_id: str, reason: str | None = None) -> dict:
        return self._call("POST", f"/v1/runs/{run_id}/cancel", json={"reason": reason})

    def follow(self, run_id: str, until: tuple[str, ...] = STOP_AT, attempt: int = 1) -> Iterator[StreamRecord]:
        """The run's records from the first, then live, until its state is one of ``until`` in
        ``attempt`` or a later one (reconnecting after ``Last-Event-ID``)."""
        last: int | None = None
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                with self.http.stream("GET", f"/v1/streams/{run_id}/events/sse", headers=headers, timeout=None) as r:
                    if r.status_code == 404:  # not projected yet: the request was just accepted
                        r.read()
                        time.sleep(0.2)
                        continue
                    if r.status_code >= 400:
                        raise ApiFailed(f"{r.status_code}: {r.read().decode(errors='replace')[:500]}")
                    for record in _sse(r.iter_lines()):
                        last = record.offset
                        yield record
                        p = record.payload
                        if record.type.startswith("run.") and p.get("state") in until and p["attempt"] >= attempt:
                            return
            except httpx.TransportError:
                continue  # reconnect after the last record seen


def _sse(lines: Iterator[str]) -> Iterator[StreamRecord]:
    """Records of an SSE body (``id:`` offset, ``event:`` type, ``data:`` the record as JSON)."""
    ident, data = None, []
    for line in lines:
        if line.startswith("id:"):
            ident = int(line[3:].strip())
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and ident is not None and data:
            record = json.loads("\n".join(data))
            yield StreamRecord(ident, record["type"], record.get("payload") or {})
            ident, data = None, []

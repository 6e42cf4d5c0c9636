"""The fast path of a webhook: authenticate a delivery, turn it into ``alert.receive`` commands (one
per issue) and append them; everything slow (dedupe, enrichment, the run) is the alerts processor's.

A refused delivery (unknown integration, bad signature or secret, malformed body) becomes one
``webhook.refused`` record: the reason, the body's size and sha256, never the body or a secret.
Refusals that name no integration go to the platform's own stream (``REFUSED_STREAM``).
"""

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from astraforge import jsontext
from astraforge.integrations import Integration
from astraforge.producers import alert_payloads
from astraforge.producers.alert_payloads import MalformedAlert
from astraforge.schemas import Envelope

LOG = logging.getLogger(__name__)
REFUSED_STREAM = "webhooks-refused"
PLATFORM_TENANT = "platform"
MAX_BODY_BYTES = 1024 * 1024  # Sentry events are well under it; a bigger body is refused (413)


@dataclass(frozen=True)
class Refusal:
    """Why a delivery was refused, as an HTTP status and the record that keeps it."""

    status: int
    reason: str
    record: Envelope


def refused(
    source: str,
    status: int,
    reason: str,
    body: bytes,
    integration: Integration | None,
    resource: str | None = None,
    delivery_id: str | None = None,
    remote: str | None = None,
) -> Refusal:
    payload = {
        "source": source,
        "integration_id": integration.integration_id if integration else None,
        "status": status,
        "reason": reason,
        "resource": (resource or "")[:100] or None,
        "delivery_id": (delivery_id or "")[:100] or None,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_bytes": len(body),
        "remote": remote,
        "unrecorded_before": 0,
    }
    record = Envelope(
        type="webhook.refused",
        stream_id=integration.stream_id if integration else REFUSED_STREAM,
        tenant_id=integration.tenant_id if integration else PLATFORM_TENANT,
        actor=f"webhook:{source}",
        payload=payload,
    )
    return Refusal(status, reason, record)


def to_record(refusal: Refusal, unrecorded_before: int) -> Envelope:
    """The refusal's record, carrying how many of its stream's refusals were not recorded before it."""
    return replace(refusal.record, payload={**refusal.record.payload, "unrecorded_before": unrecorded_before})


class RefusalBudget:
    """Which refused deliveries are recorded one by one (per API process). Anyone can send a refused
    delivery and the events topic keeps every record forever, so a refusal is recorded only while
    three fixed windows all have room: its stream's (an integration, or the platform's stream for
    unknown ones), its source address's, and everyone's. Past that it is answered the same but only
    counted: ``dropped`` (all) and, per stream, carried on that stream's next record
    (``unrecorded_before``). A flood of bad deliveries thus adds at most ``overall`` records per
    window, however many addresses or integration ids it rotates through; the windows' table is
    bounded too (expired entries are pruned; past ``max_keys`` live ones, new keys are not admitted)."""

    def __init__(
        self,
        per_stream: int = 20,
        per_remote: int = 50,
        overall: int = 200,
        window_s: float = 10.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"stream": per_stream, "remote": per_remote, "overall": overall}
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}  # (kind, key) -> (window start, admitted)
        self._unrecorded: dict[str, int] = {}  # stream -> refusals dropped since its last record
        self.dropped = 0

    def admit(self, stream_id: str, remote: str | None = None) -> int | None:
        """None: do not record this refusal (it is counted). Otherwise record it, carrying the number
        of the stream's refusals that were not recorded since its last record."""
        now = self.clock()
        keys = [("stream", stream_id), ("remote", remote or "?"), ("overall", "*")]
        with self._lock:
            counts = [self._count(key, now) for key in keys]
            if None in counts or any(n >= self.limits[k[0]] for k, n in zip(keys, counts, strict=True)):
                self.dropped += 1
                if stream_id in self._unrecorded or len(self._unrecorded) < self.max_keys:
                    self._unrecorded[stream_id] = self._unrecorded.get(stream_id, 0) + 1
                return None
            for key, n in zip(keys, counts, strict=True):
                start = self._windows[key][0] if key in self._windows else now
                self._windows[key] = (start, n + 1)
            return self._unrecorded.pop(stream_id, 0)

    def _count(self, key: tuple[str, str], now: float) -> int | None:
        """Refusals admitted in ``key``'s current window (a new window starts at 0); None when the
        table is full of live windows and ``key`` has none (not admitted: the table stays bounded)."""
        found = self._windows.get(key)
        if found is not None and now - found[0] < self.window_s:
            return found[1]
        if found is not None:
            del self._windows[key]
            return 0
        if len(self._windows) >= self.max_keys:
            for k in [k for k, (start, _) in self._windows.items() if now - start >= self.window_s]:
                del self._windows[k]
            if len(self._windows) >= self.max_keys:
                return None
        return 0


def parse_json(body: bytes) -> Any:
    try:  # as text: a lone surrogate escaped (an error tracker's exception message) is U+FFFD
        return jsontext.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedAlert("the body is not JSON") from e
    except RecursionError as e:  # ``[[[[...`` a few thousand deep: json's parser gives up
        raise MalformedAlert("the body nests too deeply") from e


def receive(integration: Integration, alerts: list[dict[str, Any]]) -> list[Envelope]:
    """The ``alert.receive`` commands of one verified delivery, in the integration's stream."""
    return [
        Envelope(
            type="alert.receive",
            stream_id=integration.stream_id,
            tenant_id=integration.tenant_id,
            actor=f"webhook:{integration.kind}",
            payload={**a, "integration_id": integration.integration_id},
        )
        for a in alerts
    ]


def sentry_alerts(resource: str | None, body: bytes, delivery_id: str | None) -> list[dict[str, Any]]:
    """The alert of a verified Sentry delivery (``MalformedAlert`` if it is not one)."""
    return [alert_payloads.sentry(resource or "", parse_json(body), delivery_id)]


def glitchtip_alerts(body: bytes) -> list[dict[str, Any]]:
    return alert_payloads.glitchtip(parse_json(body))

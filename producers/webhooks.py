"""The fast path of a webhook: authenticate a delivery, turn it into ``alert.receive`` commands (one
per issue) and append them; everything slow (dedupe, enrichment, the run) is the alerts processor's.

A refused delivery (unknown integration, bad signature or secret, malformed body) becomes one
``webhook.refused`` record: the reason, the body's size and sha256, never the body or a secret.
Refusals that name no integration go to the platform's own stream (``REFUSED_STREAM``).
"""

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

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
    }
    record = Envelope(
        type="webhook.refused",
        stream_id=integration.stream_id if integration else REFUSED_STREAM,
        tenant_id=integration.tenant_id if integration else PLATFORM_TENANT,
        actor=f"webhook:{source}",
        payload=payload,
    )
    return Refusal(status, reason, record)


class RefusalBudget:
    """How many refusals per stream and window are recorded one by one (per API process): anyone can
    send a refused delivery, and the events topic keeps every record forever, so past the budget a
    refusal is answered the same but only counted, and the count logged once the window ends."""

    def __init__(self, per_window: int = 20, window_s: float = 10.0) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}  # stream -> (window start, refusals in it)

    def admit(self, stream_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            start, seen = self._windows.get(stream_id, (now, 0))
            if now - start >= self.window_s:
                if seen > self.per_window:
                    unrecorded = seen - self.per_window
                    LOG.warning("%d refused webhook deliveries to %s were not recorded", unrecorded, stream_id)
                start, seen = now, 0
            if len(self._windows) > 10_000:
                self._windows.clear()
            self._windows[stream_id] = (start, seen + 1)
            return seen < self.per_window


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
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

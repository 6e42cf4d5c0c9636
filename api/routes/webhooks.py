"""Webhook intake: Sentry (HMAC-signed) and GlitchTip (secret in the path) alerts.

These routes take no API key: a Sentry delivery is authenticated by ``Sentry-Hook-Signature`` (the
integration's client secret over the raw body), a GlitchTip one by its unguessable path secret. A
verified delivery is appended as ``alert.receive`` and answered 202 at once (Sentry counts a reply
after 1 s as a timeout); the alerts processor does the rest. A refusal is 401 (unknown integration,
bad signature or secret), 400 (malformed body) or 413 (too large), and is recorded without the body.

Never 429: Sentry retries only timeouts and connection errors, GlitchTip nothing at all, so a 429
would lose the alert. Every verified alert is accepted; the per-project rate limit is the
processor's, which queues what is over it (``processors/alerts``).
"""

import logging
import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from astraforge import integrations as store
from astraforge.api.deps import Conn
from astraforge.api.errors import error_body
from astraforge.api.params import IntegrationId
from astraforge.integrations import Integration, path_secret_digest, signature_matches
from astraforge.producers import webhooks
from astraforge.producers.alert_payloads import MalformedAlert
from astraforge.secretbox import SecretUnreadable

router = APIRouter(tags=["webhooks"])
ANSWERS = {202: {"description": "Accepted: recorded, processed asynchronously."}}
SECRET_PATH = re.compile(r"(/v1/webhooks/glitchtip/)[^/?\s\"]+")


class RedactWebhookSecrets(logging.Filter):
    """Keeps GlitchTip path secrets out of the access log (uvicorn logs every request's path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(SECRET_PATH.sub(r"\1<secret>", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = SECRET_PATH.sub(r"\1<secret>", record.msg)
        return True


def redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactWebhookSecrets) for f in access.filters):
        access.addFilter(RedactWebhookSecrets())


async def _body(request: Request) -> bytes | None:
    """The raw body (what the signature covers), or None past ``MAX_BODY_BYTES``."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > webhooks.MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _refuse(request: Request, refusal: webhooks.Refusal) -> JSONResponse:
    unrecorded = request.app.state.refusals.admit(refusal.record.stream_id, _remote(request))
    if unrecorded is not None:  # else over the budget: answered the same, counted (``RefusalBudget``)
        await run_in_threadpool(request.app.state.producer.append_many, [webhooks.to_record(refusal, unrecorded)])
    return JSONResponse(error_body(refusal.status, refusal.reason), refusal.status)


async def _accept(request: Request, integration: Integration, alerts: list[dict]) -> JSONResponse:
    records = webhooks.receive(integration, alerts)
    await run_in_threadpool(request.app.state.producer.append_many, records)
    return JSONResponse({"accepted": len(records), "alerts": [r.event_id for r in records]}, 202)


def _remote(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/v1/webhooks/sentry/{integration_id}", status_code=202, operation_id="sentryWebhook", responses=ANSWERS)
async def sentry_webhook(integration_id: IntegrationId, request: Request, conn: Conn) -> JSONResponse:
    resource = request.headers.get("sentry-hook-resource")
    delivery = request.headers.get("request-id")
    body = await _body(request)
    row = await (await conn.execute(store.SELECT_BY_ID, (integration_id, "sentry"))).fetchone()
    integration = store.from_row(row) if row else None

    async def refuse(status: int, reason: str) -> JSONResponse:
        where = (resource, delivery, _remote(request))
        return await _refuse(request, webhooks.refused("sentry", status, reason, body or b"", integration, *where))

    if body is None:
        return await refuse(413, "body too large")
    try:
        valid = integration is not None and signature_matches(
            integration.sentry_secret(request.app.state.secretbox), body, request.headers.get("sentry-hook-signature")
        )
    except SecretUnreadable:
        valid = False
    if not valid:
        return await refuse(401, "unknown integration" if integration is None else "bad signature")
    try:
        alerts = webhooks.sentry_alerts(resource, body, delivery)
    except MalformedAlert as e:
        return await refuse(400, str(e))
    return await _accept(request, integration, alerts)


@router.post("/v1/webhooks/glitchtip/{secret}", status_code=202, operation_id="glitchtipWebhook", responses=ANSWERS)
async def glitchtip_webhook(secret: str, request: Request, conn: Conn) -> JSONResponse:
    body = await _body(request)
    # looked up by the secret's sha256 (an index lookup on a digest of 256 random bits: no timing to exploit)
    row = await (await conn.execute(store.SELECT_BY_PATH_SECRET, (path_secret_digest(secret),))).fetchone()
    integration = store.from_row(row) if row else None

    async def refuse(status: int, reason: str) -> JSONResponse:
        refusal = webhooks.refused("glitchtip", status, reason, body or b"", integration, remote=_remote(request))
        return await _refuse(request, refusal)

    if integration is None:
        return await refuse(401, "unknown webhook secret")
    if body is None:
        return await refuse(413, "body too large")
    try:
        alerts = webhooks.glitchtip_alerts(body)
    except MalformedAlert as e:
        return await refuse(400, str(e))
    return await _accept(request, integration, alerts)

"""``Idempotency-Key``: a retried POST that creates or runs something does it once.

The first request with a key claims it in PostgreSQL (one row per tenant and key, shared by every
API instance) *before* anything is appended, with the ids it minted (sandbox, command, snapshot)
and a lease. Later requests with the same key:

- same operation and body, answered  → the stored answer again (status and body; header
  ``Idempotent-Replayed: true``), for 24 h from the first request;
- a different operation (method + path) or body → 422 ``idempotency_key_reused`` (the draft's
  choice; not 409, which says "retry later" when no retry can succeed): the key names another
  request, and running this one under it would make the stored answer a lie;
- the first still running (its instance renews a 15 s lease every 5 s) → 409
  ``idempotency_in_progress`` with ``Retry-After`` (as the IETF idempotency-key draft advises):
  never run twice, and never hold a request open waiting on another one;
- the first gone without an answer (its instance shut down or died, so the lease lapsed within
  15 s; or the answer did not come in time) → this request takes the key over with the *same*
  ids: if the command was appended it is not appended again, its answer is read from the projection.

A request refused before anything was appended (validation, quota) frees its key, so a corrected
retry may use it; once a command is appended, its answer (even a 4xx such as a failed snapshot) is
the key's answer.

Keys are scoped to the tenant: another tenant's identical key is a different key.

An instance that dies in the instant between Kafka's acknowledgement and recording it leaves the
key "claimed": a retry that takes it over cannot tell whether the command went out. It appends it
again with the same ids (a create not if its sandbox is already projected) and reads the answer
from the projection; the processor drops a create, exec, file or snapshot command whose id it has
seen (``state.SandboxState.seen``). Not protected: a command whose id left the processor's memory
(more than ``state.RECENT`` commands of its sandbox finished since, or the sandbox ended past its
grace) runs again, or is ignored if its sandbox ended.
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from astraforge.api.errors import ApiError, error_body

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:~+/=-]{1,255}")
KEEP_HOURS = 24
LEASE_S = 15.0  # the attempt holding a key renews its lease this far ahead...
RENEW_EVERY_S = 5.0  # ...this often, so a retry takes over within LEASE_S of the holder's death
LOG = logging.getLogger(__name__)

Handler = Callable[[dict, "Claim | None"], Awaitable[tuple[int, Any]]]


def check_key(value: str | None) -> str | None:
    """The header's value, or a 400 naming what is wrong with it."""
    if value is None:
        return None
    if not KEY_PATTERN.fullmatch(value):
        raise ApiError(
            400, f"{HEADER} must be 1-255 characters of A-Z a-z 0-9 _ . : ~ + / = -", code="invalid_idempotency_key"
        )
    return value


def fingerprint(payload: Any) -> bytes:
    """sha256 of the request as canonical JSON (parsed body and the query parameters that matter)."""
    text = json.dumps(jsonable_encoder(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()


class Claim:
    """This request holds ``key`` with these ``ids``; ``appended`` once its commands are in Kafka;
    ``taken_over`` if an earlier attempt held it and went away (it may have appended them unrecorded)."""

    def __init__(
        self, store: "IdempotencyStore", tenant: str, key: str, ids: dict, appended: bool, taken_over: bool = False
    ) -> None:
        self.store, self.tenant, self.key, self.ids = store, tenant, key, ids
        self.appended, self.taken_over = appended, taken_over
        self._recording: asyncio.Task | None = None

    async def mark_appended(self) -> None:
        """Record the append while the caller goes on to await the answer (off the critical path);
        ``recorded`` waits for it, so the key's final state is always written after it."""
        self.appended = True
        self._recording = asyncio.ensure_future(
            self.store.execute(
                "UPDATE idempotency_keys SET state = 'appended' WHERE tenant_id = %s AND key = %s",
                (self.tenant, self.key),
            )
        )

    async def recorded(self) -> None:
        if self._recording is not None:
            with contextlib.suppress(Exception):  # then a retry cannot tell; it handles that (see above)
                await asyncio.shield(self._recording)


def resumed(claim: Claim | None) -> bool:
    """A retry resuming a command its first attempt appended: admit nothing, append nothing again."""
    return claim is not None and claim.appended


class Replay(Exception):
    """The key was answered before: this is the answer."""

    def __init__(self, status: int, body: Any) -> None:
        # an answer is an object, a list or null: a string is the JSON text ``finish`` keeps
        self.status, self.body = status, json.loads(body) if isinstance(body, str) else body


class IdempotencyStore:
    """The ``idempotency_keys`` control table (``astraforge.db.CONTROL_SCHEMA``)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.held: set[Claim] = set()  # claims of requests in flight on this instance
        self._settled = asyncio.Event()
        self._settled.set()

    def _hold(self, claim: Claim) -> None:
        self.held.add(claim)
        self._settled.clear()

    def _let_go(self, claim: Claim) -> None:
        self.held.discard(claim)
        if not self.held:
            self._settled.set()

    async def drain(self, timeout: float) -> None:
        """At shutdown, before the pool closes: let requests cancelled in flight free or release
        their keys, so a retry on another instance resumes at once instead of after the lease."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._settled.wait()

    async def execute(self, query: str, params: tuple) -> dict | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone() if cur.description else None

    async def claim(self, tenant: str, key: str, operation: str, digest: bytes, ids: dict) -> Claim:
        """Hold the key for this request, or raise ``Replay`` / a 409 / a 422."""
        for _ in range(5):  # a row freed or expired between two statements: look again
            row = await self.execute(
                "INSERT INTO idempotency_keys AS k (tenant_id, key, operation, request_sha256, ids, state,"
                " lease_until, expires_at) VALUES (%s, %s, %s, %s, %s, 'claimed',"
                " now() + make_interval(secs => %s), now() + make_interval(hours => %s))"
                " ON CONFLICT (tenant_id, key) DO UPDATE SET operation = EXCLUDED.operation,"
                " request_sha256 = EXCLUDED.request_sha256, ids = EXCLUDED.ids, state = 'claimed', status = NULL,"
                " response = NULL, lease_until = EXCLUDED.lease_until, created_at = now(),"
                " expires_at = EXCLUDED.expires_at WHERE k.expires_at <= now() RETURNING ids",
                (tenant, key, operation, digest, Jsonb(ids), LEASE_S, KEEP_HOURS),
            )
            if row is not None:
                return Claim(self, tenant, key, row["ids"], appended=False)
            held = await self.execute(
                "SELECT operation, request_sha256, state, status, response, lease_until > now() AS leased"
                " FROM idempotency_keys WHERE tenant_id = %s AND key = %s AND expires_at > now()",
                (tenant, key),
            )
            if held is None:
                continue
            if held["operation"] != operation or bytes(held["request_sha256"]) != digest:
                what = "operation" if held["operation"] != operation else "request body"
                raise ApiError(
                    422,
                    f"this {HEADER} was used for a different {what}; use a new key for a new request",
                    code="idempotency_key_reused",
                    details={"differs": what},
                )
            if held["state"] == "done":
                raise Replay(held["status"], held["response"])
            if held["leased"]:
                error = ApiError(
                    409,
                    f"a request with this {HEADER} is still in progress; retry shortly",
                    code="idempotency_in_progress",
                )
                error.headers = {"Retry-After": "1"}
                raise error
            taken = await self.execute(  # its holder is gone: take over, with the ids it minted
                "UPDATE idempotency_keys SET lease_until = now() + make_interval(secs => %s)"
                " WHERE tenant_id = %s AND key = %s AND state <> 'done' AND lease_until <= now()"
                " RETURNING ids, state",
                (LEASE_S, tenant, key),
            )
            if taken is not None:
                return Claim(self, tenant, key, taken["ids"], appended=taken["state"] == "appended", taken_over=True)
        raise ApiError(409, f"this {HEADER} is contended; retry shortly", code="idempotency_in_progress")

    async def keep(self, claim: Claim) -> None:
        """Renew the claim's lease while its request runs (a failed renewal is retried; if the
        database stays away long enough, a retry may take the key over: the processor then drops
        the command it has seen)."""
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                await self.execute(
                    "UPDATE idempotency_keys SET lease_until = now() + make_interval(secs => %s)"
                    " WHERE tenant_id = %s AND key = %s AND state <> 'done'",
                    (LEASE_S, claim.tenant, claim.key),
                )
            except Exception:
                LOG.warning("could not renew the lease of an idempotency key", exc_info=True)

    async def finish(self, claim: Claim, status: int, body: Any) -> None:
        """Keep the answer as its JSON text in a jsonb string: jsonb refuses a NUL character
        (``\\u0000``) anywhere, and an answer may carry one (exec output of ``grep -Z``), while
        the text holds it as a six-character escape. ``Replay`` reads both forms."""
        await claim.recorded()
        await self.execute(
            "UPDATE idempotency_keys SET state = 'done', status = %s, response = %s, lease_until = now()"
            " WHERE tenant_id = %s AND key = %s",
            (status, Jsonb(json.dumps(body)), claim.tenant, claim.key),
        )

    async def release(self, claim: Claim) -> None:
        """No answer: a key this request claimed and appended nothing under is freed; else (an
        earlier attempt may have appended) the next retry resumes it at once."""
        await claim.recorded()
        if claim.appended or claim.taken_over:
            await self.execute(
                "UPDATE idempotency_keys SET lease_until = now() WHERE tenant_id = %s AND key = %s",
                (claim.tenant, claim.key),
            )
        else:
            await self.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = %s AND key = %s", (claim.tenant, claim.key)
            )

    async def sweep(self) -> None:
        """Forget keys past their 24 h (claims already ignore them; this keeps the table small)."""
        await self.execute("DELETE FROM idempotency_keys WHERE expires_at <= now()", ())


class Idempotent:
    """One request's ``Idempotency-Key`` (or none): runs the request's handler at most once per key."""

    def __init__(self, store: IdempotencyStore, tenant: str, key: str | None, operation: str) -> None:
        self.store, self.tenant, self.key, self.operation = store, tenant, key, operation

    async def run(self, request: Any, ids: dict, handler: Handler) -> Response:
        """``handler(ids, claim)`` answers ``(status, model or None)``; ``request`` is what must match
        on a retry (the parsed body and query); ``ids`` are the ids a first attempt hands out."""
        if self.key is None:
            return _response(*await handler(ids, None))
        try:
            claim = await self.store.claim(self.tenant, self.key, self.operation, fingerprint(request), ids)
        except Replay as r:
            response = _response(r.status, r.body)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        self.store._hold(claim)
        keeper = asyncio.create_task(self.store.keep(claim))
        try:
            status, result = await handler(claim.ids, claim)
        except ApiError as e:
            if claim.appended and e.status_code < 500:  # the command's own answer, e.g. a failed snapshot
                await self.store.finish(
                    claim, e.status_code, error_body(e.status_code, str(e.detail), e.code, e.details)
                )
            else:
                await self.store.release(claim)
            raise
        except BaseException:
            await self.store.release(claim)
            raise
        finally:
            keeper.cancel()
            self.store._let_go(claim)
        body = jsonable_encoder(result) if result is not None else None
        await self.store.finish(claim, status, body)
        return Response(status_code=status) if body is None else JSONResponse(body, status)


def _response(status: int, body: Any) -> Response:
    """The answer's response; a model is serialised by pydantic's own encoder (an exec answer is
    an ``ExecResult``: ``jsonable_encoder`` walks it in Python, several times slower)."""
    if body is None:
        return Response(status_code=status)
    if isinstance(body, BaseModel):
        return Response(body.model_dump_json(by_alias=True), status, media_type="application/json")
    return JSONResponse(jsonable_encoder(body), status)

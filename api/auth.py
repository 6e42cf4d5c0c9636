"""Verifying API keys (``astraforge.keys`` creates and revokes them): only sha256(secret) is stored;
keys are 256-bit random, so a fast hash is enough and verification stays sub-millisecond."""

import hashlib
import hmac
import time

from astraforge.keys import KEY_PATTERN
from astraforge.projections.queries import Executor


class KeyVerifier:
    """Resolves a bearer token to its tenant, caching answers (good and bad) for ``ttl_s``: the
    revocation lag. The cache is per process and bounded; nothing tells it about a revocation."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def tenant_for(self, conn: Executor, token: str) -> str | None:
        match = KEY_PATTERN.match(token)
        if not match:
            return None
        hit = self._cache.get(token)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        key_id, secret = match.groups()
        cur = await conn.execute(
            "SELECT tenant_id, secret_sha256 FROM api_keys WHERE key_id = %s AND revoked_at IS NULL",
            (key_id,),
        )
        row = await cur.fetchone()
        tenant = None
        if row and hmac.compare_digest(bytes(row["secret_sha256"]), hashlib.sha256(secret.encode()).digest()):
            tenant = row["tenant_id"]
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (time.monotonic() + self.ttl_s, tenant)
        return tenant

"""API keys in the control tables: ``af_<key_id>_<secret>``. Only sha256(secret) is stored; keys are
256-bit random, so a fast hash is enough (no password stretching needed). The CLI creates and
revokes them here; the API verifies them (``astraforge.api.auth.KeyVerifier``)."""

import hashlib
import re
import secrets

from astraforge.config import Settings
from astraforge.db import connect, ensure_control_schema

KEY_ID = r"[0-9a-f]{16}"
KEY_PATTERN = re.compile(rf"^af_({KEY_ID})_([A-Za-z0-9_-]{{43}})$")
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def create_key(settings: Settings, tenant: str, name: str | None = None) -> str:
    """Create the tenant if needed and a new key for it; returns the key (shown once)."""
    if not TENANT_PATTERN.match(tenant):
        raise ValueError("tenant must be 1-63 chars of a-z, 0-9 and '-', starting with a letter or digit")
    ensure_control_schema(settings)
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with connect(settings) as conn:
        conn.execute("INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, secret_sha256, name) VALUES (%s, %s, %s, %s)",
            (key_id, tenant, hashlib.sha256(secret.encode()).digest(), name),
        )
    return f"af_{key_id}_{secret}"


def revoke_key(settings: Settings, key_id: str) -> bool:
    """Revoke a key by its id (the 16 hex characters after ``af_``); False if no active key has it.

    Not instant everywhere: a running API process keeps its answer for a token it verified in the
    last ``key_cache_ttl_s`` (default 5 s), so the key may still work there for up to that long. A
    token the process has not verified in that window is checked against the row at once.
    """
    if not re.fullmatch(KEY_ID, key_id):
        raise ValueError("key id must be the 16 hex characters after 'af_' in the key")
    ensure_control_schema(settings)
    with connect(settings) as conn:
        cur = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
        return cur.rowcount == 1

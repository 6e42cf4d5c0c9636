"""PostgreSQL access: connections with a clear error, and the control tables (tenants, API keys,
idempotency keys, integrations, file leases).

Control tables are not derived from Kafka (secrets' hashes, answers to idempotent requests), so they live in the
``public`` schema, apart from the rebuildable projection schema.
"""

import psycopg
from psycopg.rows import dict_row

from astraforge.config import Settings
from astraforge.errors import DatabaseUnavailable

CONTROL_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id  text        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     text        PRIMARY KEY,
    tenant_id  text        NOT NULL REFERENCES tenants,
    secret_sha256 bytea    NOT NULL,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
-- Idempotency-Key answers (astraforge.api.idempotency), shared by every API instance for 24 h
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id      text        NOT NULL,
    key            text        NOT NULL,
    operation      text        NOT NULL,  -- method and path: a key names one request
    request_sha256 bytea       NOT NULL,  -- its parsed body and query
    ids            jsonb       NOT NULL,  -- what the first attempt minted (sandbox, command ids)
    state          text        NOT NULL,  -- claimed | appended | done
    status         integer,
    response       jsonb,
    lease_until    timestamptz NOT NULL,  -- the attempt holding the key; a retry after it resumes
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
-- File leases on shared sandboxes (astraforge.leases): one holder per file until expires_at, judged
-- by this server's clock, shared by every API and processor instance
CREATE TABLE IF NOT EXISTS file_leases (
    tenant_id   text        NOT NULL,
    sandbox_id  text        NOT NULL,
    path        text        NOT NULL,
    holder      text        NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (sandbox_id, path)
);
-- Sentry/GlitchTip integrations (astraforge.integrations): secrets sealed, the GlitchTip path secret
-- only as its sha256; a deleted integration keeps its row (its alerts' records name it), not its secrets
CREATE TABLE IF NOT EXISTS integrations (
    integration_id     text        PRIMARY KEY,
    tenant_id          text        NOT NULL,
    kind               text        NOT NULL,
    config             jsonb       NOT NULL,
    secret_sealed      bytea,
    api_token_sealed   bytea,
    path_secret_sha256 bytea       UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);
CREATE INDEX IF NOT EXISTS integrations_by_tenant ON integrations (tenant_id, integration_id);
"""


def connect(settings: Settings, **kwargs) -> psycopg.Connection:
    """A connection (dict rows), or ``DatabaseUnavailable`` within a few seconds."""
    try:
        return psycopg.connect(settings.database_dsn(), connect_timeout=5, row_factory=dict_row, **kwargs)
    except psycopg.OperationalError as e:
        raise unavailable(settings, e) from e


def unavailable(settings: Settings, error: Exception) -> DatabaseUnavailable:
    """``DatabaseUnavailable`` for a refused or unanswered connection, naming a missing password if that is why."""
    hint = settings.missing_credentials("postgres")
    message = f"PostgreSQL refused the connection or did not answer: {error}".strip()
    return DatabaseUnavailable(f"{message} ({hint})" if hint else message)


def ensure_control_schema(settings: Settings) -> None:
    with connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(4242)")
        try:
            conn.execute(CONTROL_SCHEMA)
        finally:
            conn.execute("SELECT pg_advisory_unlock(4242)")

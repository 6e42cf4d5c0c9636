"""PostgreSQL access: connections with a clear error, and the control tables (tenants, API keys).

Control tables are not derived from Kafka (they hold secrets' hashes), so they live in the
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

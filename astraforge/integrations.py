"""Integrations: a tenant's Sentry or GlitchTip connection, stored in the ``integrations`` control
table (secrets sealed by ``astraforge.secretbox``, never returned after creation, never in records).

An integration says how alerts are authenticated (the Sentry client secret, or the GlitchTip path
secret, kept only as its sha256), how they are enriched and answered (the API base URL and token),
and what a remediation run does (project -> repository, agent, steps, test command, rate limit).
The API creates and deletes them; the webhook intake and the alerts processor read them.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from astraforge.ids import new_id
from astraforge.secretbox import SecretBox

KINDS = ("sentry", "glitchtip")


@dataclass(frozen=True)
class ProjectRoute:
    """Where a project's alerts go: the repository (and branch) its remediation runs work on."""

    repository: str
    base_branch: str | None = None


@dataclass(frozen=True)
class Integration:
    """One integration's settings, secrets left sealed (``sentry_secret``/``api_token`` open them)."""

    integration_id: str
    tenant_id: str
    kind: str
    name: str | None
    api_base_url: str | None
    organization: str | None
    projects: dict[str, ProjectRoute]
    agent: str
    steps: list[dict[str, Any]]
    test_command: str | None
    writable_paths: list[str]
    rate_limit_runs: int
    rate_limit_window_s: int
    created_at: Any = None
    secret_sealed: bytes | None = field(default=None, repr=False)
    api_token_sealed: bytes | None = field(default=None, repr=False)

    @property
    def stream_id(self) -> str:
        """The stream of its alerts (the Kafka key): one integration's alerts are totally ordered."""
        return self.integration_id

    def sentry_secret(self, box: SecretBox) -> str:
        return box.open(self.secret_sealed or b"", f"{self.integration_id}:secret")

    def api_token(self, box: SecretBox) -> str | None:
        if self.api_token_sealed is None:
            return None
        return box.open(self.api_token_sealed, f"{self.integration_id}:api_token")

    def route(self, *names: str | None) -> tuple[str, ProjectRoute] | None:
        """The first of ``names`` (slug, id, name) the integration maps to a repository."""
        for name in names:
            if name is not None and str(name) in self.projects:
                return str(name), self.projects[str(name)]
        return None


def new_integration_id() -> str:
    return f"int-{new_id().replace('-', '')}"


def new_path_secret() -> str:
    """A GlitchTip webhook's path secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def path_secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def signature_matches(secret: str, body: bytes, signature: str | None) -> bool:
    """Sentry's ``Sentry-Hook-Signature``: lowercase hex HMAC-SHA256 of the raw body under the
    client secret, compared in constant time."""
    if not signature:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


COLUMNS = "integration_id, tenant_id, kind, config, secret_sealed, api_token_sealed, created_at"  # never the digest


def to_row(integration: Integration, path_secret: str | None) -> dict[str, Any]:
    """The ``integrations`` row of a new integration (its secrets already sealed)."""
    config = {
        "name": integration.name,
        "api_base_url": integration.api_base_url,
        "organization": integration.organization,
        "projects": {
            k: {"repository": v.repository, "base_branch": v.base_branch} for k, v in integration.projects.items()
        },
        "agent": integration.agent,
        "steps": integration.steps,
        "test_command": integration.test_command,
        "writable_paths": integration.writable_paths,
        "rate_limit_runs": integration.rate_limit_runs,
        "rate_limit_window_s": integration.rate_limit_window_s,
    }
    return {
        "integration_id": integration.integration_id,
        "tenant_id": integration.tenant_id,
        "kind": integration.kind,
        "config": Jsonb(config),
        "secret_sealed": integration.secret_sealed,
        "api_token_sealed": integration.api_token_sealed,
        "path_secret_sha256": path_secret_digest(path_secret) if path_secret else None,
    }


INSERT = (
    "INSERT INTO integrations (integration_id, tenant_id, kind, config, secret_sealed, api_token_sealed, "
    "path_secret_sha256) VALUES (%(integration_id)s, %(tenant_id)s, %(kind)s, %(config)s, %(secret_sealed)s, "
    "%(api_token_sealed)s, %(path_secret_sha256)s) RETURNING created_at"
)
SELECT_OWNED = f"SELECT {COLUMNS} FROM integrations WHERE integration_id = %s AND tenant_id = %s AND deleted_at IS NULL"
SELECT_PAGE = (
    f"SELECT {COLUMNS} FROM integrations WHERE tenant_id = %s AND integration_id > %s AND deleted_at IS NULL "
    "ORDER BY integration_id LIMIT %s"
)
SELECT_BY_ID = f"SELECT {COLUMNS} FROM integrations WHERE integration_id = %s AND kind = %s AND deleted_at IS NULL"
SELECT_BY_PATH_SECRET = (
    f"SELECT {COLUMNS} FROM integrations WHERE path_secret_sha256 = %s AND kind = 'glitchtip' AND deleted_at IS NULL"
)
SELECT_ANY = f"SELECT {COLUMNS} FROM integrations WHERE integration_id = %s"  # the processor: deleted ones too
DELETE = (
    "UPDATE integrations SET deleted_at = now(), secret_sealed = NULL, api_token_sealed = NULL, "
    "path_secret_sha256 = NULL WHERE integration_id = %s AND tenant_id = %s AND deleted_at IS NULL "
    "RETURNING integration_id"
)


def from_row(row: dict[str, Any]) -> Integration:
    c = row["config"]
    return Integration(
        integration_id=row["integration_id"],
        tenant_id=row["tenant_id"],
        kind=row["kind"],
        name=c.get("name"),
        api_base_url=c.get("api_base_url"),
        organization=c.get("organization"),
        projects={k: ProjectRoute(v["repository"], v.get("base_branch")) for k, v in c["projects"].items()},
        agent=c["agent"],
        steps=c.get("steps") or [],
        test_command=c.get("test_command"),
        writable_paths=c.get("writable_paths") or [],
        rate_limit_runs=c["rate_limit_runs"],
        rate_limit_window_s=c["rate_limit_window_s"],
        created_at=row.get("created_at"),
        secret_sealed=bytes(row["secret_sealed"]) if row.get("secret_sealed") is not None else None,
        api_token_sealed=bytes(row["api_token_sealed"]) if row.get("api_token_sealed") is not None else None,
    )

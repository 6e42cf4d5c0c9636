"""One ``Settings`` object, read from ``ASTRAFORGE_*`` environment variables (and ``.env``).

Defaults point at the local stack that ``astraforge dev up`` starts, so a newcomer needs no
configuration: outside production, unset credentials are read from the files the stack scripts
generate (``<state_dir>/secrets``), at the moment a client is built, never at import. With
``env=production`` the settings refuse to start without explicit credentials for PostgreSQL and
Kafka. Secret fields are ``SecretStr``: they never appear in a repr, a log line or ``dev status``.
"""

import json
import os
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from astraforge.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What deploy/local/postgres.sh and kafka.sh create: one application identity, its password in a file.
LOCAL_USER = "astraforge"
POSTGRES_PASSWORD_FILE = "secrets/postgres-app.password"
KAFKA_PASSWORD_FILE = "secrets/kafka-app.password"
UPSTREAM_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
UPSTREAM_TARGET = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")
# deploy/local/common.sh makes the same choice: root caches where unprivileged sandbox uids can read
DEFAULT_CACHE = Path("/var/cache/astraforge") if os.geteuid() == 0 else Path.home() / ".cache" / "astraforge"


class WarmPool(BaseModel):
    """One warm pool: ``size`` ready sandboxes of this image (default: sandbox_image) and profile."""

    model_config = {"extra": "forbid"}

    image: str | None = None
    profile: dict[str, int | float] = Field(default_factory=dict)
    size: int = Field(default=2, ge=0, le=200)


class Settings(BaseSettings):
    """Platform configuration; every field can be set as ``ASTRAFORGE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="ASTRAFORGE_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    """Deployment kind; `production` refuses development defaults and needs explicit credentials."""
    kafka_port: int = 19092
    """The local stack's Kafka port (deploy/local/kafka.sh reads the same variable)."""
    pg_port: int = 15432
    """The local stack's PostgreSQL port (deploy/local/postgres.sh reads the same variable)."""
    kafka_bootstrap: str = ""
    """Kafka bootstrap servers (default: `127.0.0.1:<kafka_port>`)."""
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] | None = None
    """librdkafka `security.protocol` (default: SASL_PLAINTEXT when there are credentials, else PLAINTEXT)."""
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    """Kafka SASL user (default outside production: the local stack's `astraforge`)."""
    kafka_sasl_password: SecretStr | None = None
    """Kafka SASL password (default outside production: <state_dir>/secrets/kafka-app.password)."""
    topic_prefix: str = "astraforge"
    """Topics are `<prefix>.commands`, `<prefix>.events`, `<prefix>.deadletter`."""
    topic_partitions: int = Field(default=6, ge=1)
    """Partitions for newly created topics."""
    database_url: SecretStr | None = None
    """PostgreSQL connection string (psycopg conninfo or URL) with the password of a non-superuser role
    (default outside production: the local stack's role, password from <state_dir>/secrets/postgres-app.password)."""
    projection_schema: str = "projection"
    """PostgreSQL schema holding the read models (rebuilt from Kafka on demand)."""
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_header_timeout_s: float = Field(default=10.0, gt=0)
    """A request head must reach the API within this (of the connection, or of the previous
    response); past it the connection is closed (slowloris)."""
    key_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)
    """How long an API process reuses a key's verification: a revoked key may work that long (0: never)."""
    kafka_timeout_s: float = Field(default=5.0, gt=0)
    """How long to wait for Kafka before reporting it unreachable."""
    state_dir: Path = PROJECT_ROOT / ".local"
    """Local stack state (data dirs, logs, sockets)."""
    cache_dir: Path = DEFAULT_CACHE
    """Downloads and built images (Kafka jars, the sandbox rootfs)."""
    web_dist: Path | None = None
    """The built web UI (``deploy/local/web.sh build`` prints it; ``make run`` sets it); unset: no UI at ``/``."""
    sandbox_provider: Literal["auto", "docker", "bwrap"] = "auto"
    """`auto`: docker when its engine answers, else bubblewrap."""
    docker_host: str | None = None
    """Docker engine URL; default: the local stack's dockerd socket, then DOCKER_HOST."""
    sandbox_image: str = "astraforge/sandbox:bookworm"
    """Image for sandboxes created without one (docker); bwrap always uses the rootfs."""
    sandbox_images: list[str] = Field(default_factory=list)
    """Further images a tenant may ask for (besides ``sandbox_image`` and the warm pools' images).
    An image's python3 and setpriv run as the sandbox's root: the supervisor and the switch to the
    agent's uid are only as trustworthy as the image, so images are the operator's choice, never
    a tenant's (the engine would pull any name it does not have)."""

    @property
    def allowed_images(self) -> list[str]:
        """Every image a create may name, the default first."""
        pools = [p.image for p in self.warm_pools if p.image]
        return list(dict.fromkeys([self.sandbox_image, *self.sandbox_images, *pools]))

    @property
    def commands_topic(self) -> str:
        return f"{self.topic_prefix}.commands"

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.topic_prefix}.deadletter"

    egress_credentials: dict[str, str] = Field(default_factory=dict)
    """Host -> header the egress proxy adds for it (e.g. {"api.openai.com": "Authorization: Bearer ..."}).
    Secrets stay on the platform: sandboxes only ever see a placeholder."""
    egress_platform_upstreams: dict[str, str] = Field(default_factory=dict)
    """Operator upstreams, name -> "host:port" (e.g. {"model-gateway": "127.0.0.1:9000"}; any address,
    loopback included). A sandbox reaches one as http://<name>/ (or CONNECT <name>:443) only when the
    platform grants it that name; a tenant's egress rules never reach it, by name or by address."""
    egress_header_timeout_s: float = Field(default=10.0, gt=0)
    """A request head must arrive within this (slowloris); an idle kept-alive connection closes then."""
    egress_max_connections: int = Field(default=32, ge=1)
    """Egress connections one sandbox may hold open at once (more are answered 429)."""
    egress_denials_recorded: int = Field(default=20, ge=1)
    """Denied egress attempts recorded one by one per sandbox and window; the rest become one summary."""
    egress_denial_window_s: float = Field(default=10.0, gt=0)
    """The window of ``egress_denials_recorded``."""
    conversation_model_upstream: str = "model-gateway"
    """The operator upstream (``egress_platform_upstreams``) hosted conversations ask their model at
    (``http://<address>/v1``, OpenAI Chat Completions); its ``egress_credentials`` entry is the key."""
    conversation_offload_bytes: int = Field(default=16 * 1024, ge=1024)
    """A conversation's tool output above this is offloaded (artifact store + a file in the sandbox);
    the agent sees its path and a preview."""
    warm_pools: list[WarmPool] = Field(default_factory=lambda: [WarmPool(size=2)])
    """Ready sandboxes kept waiting per image/profile; a create asking for exactly that claims one."""
    instance_id: str = socket.gethostname()
    """Stable name of this processor instance (Kafka static group membership); unique per replica."""
    quota_sandboxes: int = Field(default=50, ge=1)
    """Live (not ended) sandboxes one tenant may hold; past it a create answers 429."""
    quota_memory_mb: int = Field(default=32_768, ge=64)
    """Sum of the memory one tenant's live sandboxes may hold: each its memory_mb plus its tmpfs caps."""
    quota_concurrent_uploads: int = Field(default=4, ge=1)
    """Uploads one tenant may have in flight per API process (each spools up to max_file_bytes)."""
    quota_concurrent_execs: int = Field(default=32, ge=1)
    """Commands one tenant may have running at once (async ones included)."""
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest file an upload may carry (refused with 413 while the body streams in)."""
    lease_guard_kept_bytes: int = Field(default=1024 * 1024 * 1024, ge=0)
    """Bytes of leased files one sandbox processor keeps at once, to put them back after another
    actor's command (every watched command keeps its own copy); a file past it is checked, and a
    change reported, but not put back."""
    max_output_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    """Output stored per command (the first MiB as records, the rest as one artifact); past it the
    output is dropped and the result says truncated."""
    max_snapshot_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    """Largest compressed workspace snapshot; a bigger one fails with snapshot.failed (too_large)."""
    max_snapshot_entries: int = Field(default=100_000, ge=100)
    """Most tar entries a snapshot may hold to be restored (bounds the host-side check's work)."""
    quota_artifact_bytes: int = Field(default=10 * 1024**3, ge=1024 * 1024)
    """Bytes of live artifacts one tenant may hold; past it uploads and snapshots answer 429."""
    repo_allowlist: dict[str, list[str]] = Field(default_factory=dict)
    """Repositories a tenant's runs may use: tenant -> URL patterns (``fnmatch``, e.g.
    ``https://github.com/acme/*`` or ``/srv/git/*.git``); ``*`` applies to every tenant. A run on
    any other repository is refused (403 and a ``guardrail.violated`` record). Empty: no runs."""
    agent_model_upstream: str = "model-gateway"
    """The platform upstream (``egress_platform_upstreams``) a model-driven agent's sandbox is granted:
    Codex reaches its model as ``http://<name>/v1`` through the egress proxy, which adds the key
    (``egress_credentials[<name>]``); the sandbox holds only a per-run placeholder."""
    agent_default_model: str = Field(default="gpt-5.5", min_length=1, max_length=200)
    """The model a Codex run asks for when its request names none."""
    agent_memory_mb: int = Field(default=1024, ge=256)
    """Memory of a Codex or CLI agent's sandbox (Codex alone holds a few hundred MiB)."""
    vcs_provider: Literal["local", "github", "gitlab"] = "local"
    """Where an approved run's branch goes: ``local`` pushes it to the repository it was cloned from
    (a local bare repository) and records the merge request there; ``github`` and ``gitlab`` push it
    over https and open a pull/merge request through their REST API (``vcs_api_url``, ``vcs_token``)."""
    vcs_api_url: str | None = None
    """The provider's REST API (default https://api.github.com or https://gitlab.com/api/v4)."""
    vcs_token: SecretStr | None = None
    """The provider's token: sent in HTTP headers only (API and git), never in a URL or argv."""
    artifact_retention_days: int = Field(default=30, ge=0)
    """Artifacts older than this are deleted by the sweep (0 keeps them forever)."""
    artifact_store: Literal["local", "s3"] = "local"
    """Where large output, files and snapshots go."""
    artifact_dir: Path | None = None
    """Local artifact store directory (default: <state_dir>/artifacts)."""
    s3_endpoint: str | None = None
    s3_bucket: str = "astraforge-artifacts"
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    integration_key: SecretStr | None = None
    """Key (64 hex characters) that encrypts integration secrets at rest (default outside production:
    <state_dir>/secrets/integrations.key, generated on first use)."""
    alert_api_timeout_s: float = Field(default=5.0, gt=0)
    """How long an enrichment or comment call to a Sentry/GlitchTip API may take."""
    alert_api_trusted_hosts: list[str] = Field(default_factory=list)
    """``host:port`` of issue trackers the platform may call at a private or local address (an
    on-premises GlitchTip). Any other integration API must resolve to public addresses only: an
    integration's URL is a tenant's choice, and the platform's own services sit on private ones."""

    def database_dsn(self) -> str:
        """The connection string to use: ``database_url``, or the local stack's (its password read now).

        Without a password file the URL has none, and PostgreSQL's refusal names it
        (``missing_credentials`` says where it was looked for).
        """
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        password = self._local_secret(POSTGRES_PASSWORD_FILE)
        auth = f"{LOCAL_USER}:{quote(password, safe='')}" if password else LOCAL_USER
        return f"postgresql://{auth}@127.0.0.1:{self.pg_port}/{LOCAL_USER}"

    def kafka_credentials(self) -> "KafkaCredentials | None":
        """The SASL identity for Kafka clients: explicit settings, or the local stack's (read now)."""
        if self.kafka_sasl_username is not None and self.kafka_sasl_password is not None:
            return KafkaCredentials(
                self.kafka_sasl_mechanism, self.kafka_sasl_username, self.kafka_sasl_password.get_secret_value()
            )
        password = self._local_secret(KAFKA_PASSWORD_FILE)
        if password is None:
            return None
        return KafkaCredentials(self.kafka_sasl_mechanism, self.kafka_sasl_username or LOCAL_USER, password)

    def missing_credentials(self, service: Literal["kafka", "postgres"]) -> str | None:
        """A hint naming what is missing when a service has no credentials to offer, else None."""
        if service == "kafka":
            if self.kafka_credentials() is not None or self.kafka_security_protocol in ("PLAINTEXT", "SSL"):
                return None
            return (
                f"no Kafka credentials: set ASTRAFORGE_KAFKA_SASL_USERNAME/_PASSWORD, or start the local "
                f"stack (`astraforge dev up`), which writes {self.state_dir / KAFKA_PASSWORD_FILE}"
            )
        if self.database_url is not None or self._local_secret(POSTGRES_PASSWORD_FILE) is not None:
            return None
        return (
            f"no PostgreSQL password: set ASTRAFORGE_DATABASE_URL, or start the local stack "
            f"(`astraforge dev up`), which writes {self.state_dir / POSTGRES_PASSWORD_FILE}"
        )

    def _local_secret(self, name: str) -> str | None:
        """A password the local stack generated, outside production only (never a production default)."""
        if self.env == "production":
            return None
        try:
            return (self.state_dir / name).read_text().strip() or None
        except FileNotFoundError:
            return None

    def as_env(self) -> dict[str, str]:
        """These settings as ``ASTRAFORGE_*`` variables, to hand to a child process (secrets included:
        an environment is not a log; unset credentials stay unset, so the child reads the same files)."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            raw = getattr(self, name)
            if raw is None:
                continue
            value = raw.get_secret_value() if isinstance(raw, SecretStr) else value
            env[f"ASTRAFORGE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    @field_validator("egress_platform_upstreams")
    @classmethod
    def _upstreams_are_names_and_endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        for name, target in value.items():
            if not UPSTREAM_NAME.match(name) or not UPSTREAM_TARGET.match(target):
                raise ValueError(f"egress_platform_upstreams: expected name -> 'host:port', got {name!r}: {target!r}")
        return value

    @model_validator(mode="after")
    def _local_and_production_defaults(self) -> "Settings":
        if not self.kafka_bootstrap:
            self.kafka_bootstrap = f"127.0.0.1:{self.kafka_port}"
        if (self.kafka_sasl_username is None) != (self.kafka_sasl_password is None):
            raise ConfigError("set both ASTRAFORGE_KAFKA_SASL_USERNAME and ASTRAFORGE_KAFKA_SASL_PASSWORD, or neither")
        if self.env == "production":
            missing = []
            if self.database_url is None or not _has_credential(self.database_url.get_secret_value()):
                missing.append("ASTRAFORGE_DATABASE_URL with the password of a non-superuser role")
            if self.kafka_sasl_username is None:
                missing.append("ASTRAFORGE_KAFKA_SASL_USERNAME and ASTRAFORGE_KAFKA_SASL_PASSWORD")
            if missing:
                raise ConfigError(f"production needs explicit credentials: {'; '.join(missing)}")
        return self


@dataclass(frozen=True, slots=True)
class KafkaCredentials:
    """A SASL identity; the password is left out of the repr."""

    mechanism: str
    username: str
    password: str = field(repr=False)


def _has_credential(dsn: str) -> bool:
    """A password (or a client certificate) in a psycopg connection string or URL."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"ASTRAFORGE_DATABASE_URL is not a valid connection string: {type(e).__name__}") from e
    return bool(params.get("password") or params.get("sslcert"))


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings`` instead); ``ConfigError`` if unusable."""
    try:
        return Settings()
    except ValidationError as e:
        problems = [
            f"ASTRAFORGE_{str(err['loc'][0]).upper()}: {err['msg']}" if err["loc"] else err["msg"] for err in e.errors()
        ]
        raise ConfigError(f"invalid settings: {'; '.join(problems)}") from e

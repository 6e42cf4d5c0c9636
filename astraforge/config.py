"""One ``Settings`` object, read from ``ASTRAFORGE_*`` environment variables (and ``.env``).

Defaults point at the local stack that ``astraforge dev up`` starts, so a newcomer needs no
configuration. Outside ``env=development`` the settings refuse to start with development defaults
for anything secret.
"""

import json
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from astraforge.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEV_DATABASE_URL = "postgresql://astraforge@127.0.0.1:15432/astraforge"
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
    """Deployment kind; `production` refuses development defaults."""
    kafka_bootstrap: str = "127.0.0.1:19092"
    """Kafka bootstrap servers."""
    topic_prefix: str = "astraforge"
    """Topics are `<prefix>.commands`, `<prefix>.events`, `<prefix>.deadletter`."""
    topic_partitions: int = Field(default=6, ge=1)
    """Partitions for newly created topics."""
    database_url: str = DEV_DATABASE_URL
    """PostgreSQL connection string (psycopg conninfo or URL)."""
    projection_schema: str = "projection"
    """PostgreSQL schema holding the read models (rebuilt from Kafka on demand)."""
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    key_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)
    """How long an API process reuses a key's verification: a revoked key may work that long (0: never)."""
    kafka_timeout_s: float = Field(default=5.0, gt=0)
    """How long to wait for Kafka before reporting it unreachable."""
    state_dir: Path = PROJECT_ROOT / ".local"
    """Local stack state (data dirs, logs, sockets)."""
    cache_dir: Path = DEFAULT_CACHE
    """Downloads and built images (Kafka jars, the sandbox rootfs)."""
    sandbox_provider: Literal["auto", "docker", "bwrap"] = "auto"
    """`auto`: docker when its engine answers, else bubblewrap."""
    docker_host: str | None = None
    """Docker engine URL; default: the local stack's dockerd socket, then DOCKER_HOST."""
    sandbox_image: str = "astraforge/sandbox:bookworm"
    """Image for sandboxes created without one (docker); bwrap always uses the rootfs."""

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
    warm_pools: list[WarmPool] = Field(default_factory=lambda: [WarmPool(size=2)])
    """Ready sandboxes kept waiting per image/profile; a create asking for exactly that claims one."""
    instance_id: str = socket.gethostname()
    """Stable name of this processor instance (Kafka static group membership); unique per replica."""
    artifact_store: Literal["local", "s3"] = "local"
    """Where large output, files and snapshots go."""
    artifact_dir: Path | None = None
    """Local artifact store directory (default: <state_dir>/artifacts)."""
    s3_endpoint: str | None = None
    s3_bucket: str = "astraforge-artifacts"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None

    def as_env(self) -> dict[str, str]:
        """These settings as ``ASTRAFORGE_*`` variables, to hand to a child process."""
        values = self.model_dump(mode="json")
        return {f"ASTRAFORGE_{k.upper()}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()
                if v is not None}  # fmt: skip

    @model_validator(mode="after")
    def _no_dev_defaults_in_production(self) -> "Settings":
        if self.env == "production" and self.database_url == DEV_DATABASE_URL:
            raise ConfigError("ASTRAFORGE_DATABASE_URL must be set in production (dev default refused)")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings`` instead)."""
    return Settings()

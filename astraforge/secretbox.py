"""Secrets at rest: integration credentials (a Sentry client secret, an API token) are stored
AES-256-GCM encrypted under the platform's integration key, bound to the row they belong to.

The key is ``Settings.integration_key`` (64 hex characters); outside production an unset key is read
from ``<state_dir>/secrets/integrations.key``, generated there (0600) on first use like the local
stack's other secrets. Production refuses to run without an explicit key.

Not protected: whoever holds the key and the database holds the secrets (the key must live apart
from database backups); a process that decrypts a secret holds it in memory while it uses it.
"""

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from astraforge.config import Settings
from astraforge.errors import AstraForgeError, ConfigError

KEY_FILE = "secrets/integrations.key"
NONCE_BYTES = 12


class SecretUnreadable(AstraForgeError, ValueError):
    """A stored secret does not decrypt under the current key (another key, or a tampered row)."""


class SecretBox:
    """Encrypts and decrypts small secrets; ``context`` (e.g. the integration id and field) is
    authenticated with each one, so a ciphertext copied to another row or field does not decrypt."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("the integration key must be 32 bytes (64 hex characters)")
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> "SecretBox":
        return cls(integration_key(settings))

    def seal(self, plaintext: str, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, context: str) -> str:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, ValueError) as e:
            raise SecretUnreadable(f"a stored secret ({context.split(':')[-1]}) does not decrypt") from e


def integration_key(settings: Settings) -> bytes:
    """The configured key, or (outside production) the state dir's, generated on first use."""
    if settings.integration_key is not None:
        return _hex_key(settings.integration_key.get_secret_value())
    if settings.env == "production":
        raise ConfigError("production needs ASTRAFORGE_INTEGRATION_KEY (64 hex characters) to store integrations")
    path = settings.state_dir / KEY_FILE
    if not path.exists():
        _generate(path)
    return _hex_key(path.read_text().strip())


def _generate(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    try:
        os.link(tmp, path)  # the first writer wins; a concurrent one reads the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _hex_key(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError as e:
        raise ConfigError("the integration key must be 64 hex characters") from e

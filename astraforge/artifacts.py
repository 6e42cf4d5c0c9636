"""The artifact store: bytes too large for a record (big output, files, snapshots). A record carries
an ``ArtifactRef`` (key + sha256 + size); the bytes live here. Keys are content-addressed per
tenant (``<tenant>/<sha256>``), so storing the same bytes twice is free and a retried put is safe.

Two backends: a local directory (the default) and S3 through boto3 (tested against SeaweedFS).
"""

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from astraforge.config import Settings
from astraforge.errors import AstraForgeError, NotFound
from astraforge.ids import new_id

MAX_INLINE_BYTES = 512 * 1024
"""Files larger than this do not ride in a record: their bytes go through the artifact store."""


class ArtifactError(AstraForgeError, IOError):
    """The artifact store failed to store or return bytes."""


class ArtifactStore(ABC):
    def put(self, tenant_id: str, data: bytes, content_type: str = "application/octet-stream",
            name: str | None = None, artifact_id: str | None = None) -> dict:  # fmt: skip
        """Store bytes; returns the ``ArtifactRef`` payload to put in a record."""
        sha = hashlib.sha256(data).hexdigest()
        key = f"{tenant_id}/{sha}"
        self._put(key, data, content_type)
        return {"artifact_id": artifact_id or new_id(), "key": key, "sha256": sha, "size": len(data),
                "content_type": content_type, "name": name}  # fmt: skip

    def get(self, ref: dict) -> bytes:
        """The bytes of a ref, verified against its sha256."""
        data = self._get(ref["key"])
        if hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise ArtifactError(f"artifact {ref['key']} does not match its sha256")
        return data

    @abstractmethod
    def _put(self, key: str, data: bytes, content_type: str) -> None: ...

    @abstractmethod
    def _get(self, key: str) -> bytes: ...


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ArtifactError(f"artifact key {key!r} escapes the store")
        return path

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)  # atomic: a reader never sees half an artifact

    def _get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no artifact {key}") from None


class S3ArtifactStore(ArtifactStore):
    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        retries = {"max_attempts": 3}
        config = Config(connect_timeout=5, read_timeout=30, retries=retries, s3={"addressing_style": "path"})
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        self.client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint, aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=secret, region_name="us-east-1", config=config,
        )  # fmt: skip

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except (BotoCoreError, ClientError) as e:
            raise ArtifactError(f"S3 put {key} failed: {e}") from e

    def _get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"no artifact {key}") from e
            raise ArtifactError(f"S3 get {key} failed: {e}") from e
        except BotoCoreError as e:
            raise ArtifactError(f"S3 get {key} failed: {e}") from e


def make_artifact_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_store == "s3":
        store = S3ArtifactStore(settings)
        store.ensure_bucket()
        return store
    return LocalArtifactStore(settings.artifact_dir or settings.state_dir / "artifacts")

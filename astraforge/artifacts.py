"""The artifact store: bytes too large for a record (big output, files, snapshots). A record carries
an ``ArtifactRef`` (key + sha256 + size); the bytes live here. Keys are content-addressed per
tenant (``<tenant>/<sha256>``), so storing the same bytes twice is free and a retried put is safe.

Two backends: a local directory (the default) and S3 through boto3 (tested against SeaweedFS).
"""

import hashlib
import io
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from astraforge.config import Settings
from astraforge.errors import AstraForgeError, NotFound
from astraforge.ids import new_id

MAX_INLINE_BYTES = 512 * 1024
"""Files larger than this do not ride in a record: their bytes go through the artifact store."""
CHUNK = 1024 * 1024


class ArtifactError(AstraForgeError, IOError):
    """The artifact store failed to store or return bytes."""


def spool(max_memory: int = CHUNK) -> BinaryIO:
    """A file for bytes on their way to the store: in memory while small, on disk past ``max_memory``
    (so a big output or snapshot never sits whole in the platform's memory)."""
    return tempfile.SpooledTemporaryFile(max_size=max_memory)


class ArtifactStore(ABC):
    """Content-addressed bytes per tenant. Every path streams: no call holds an artifact whole."""

    def put(
        self,
        tenant_id: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        name: str | None = None,
        artifact_id: str | None = None,
    ) -> dict:
        """Store bytes; returns the ``ArtifactRef`` payload to put in a record."""
        return self.put_file(tenant_id, io.BytesIO(data), content_type, name, artifact_id)

    def put_file(
        self,
        tenant_id: str,
        source: BinaryIO,
        content_type: str = "application/octet-stream",
        name: str | None = None,
        artifact_id: str | None = None,
    ) -> dict:
        """Store a seekable file's bytes (read twice: once to hash, once to store)."""
        source.seek(0)
        digest, size = hashlib.sha256(), 0
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        sha = digest.hexdigest()
        key = f"{tenant_id}/{sha}"
        source.seek(0)
        self._put(key, source, content_type)
        return {
            "artifact_id": artifact_id or new_id(),
            "key": key,
            "sha256": sha,
            "size": size,
            "content_type": content_type,
            "name": name,
        }

    def iter_chunks(self, ref: dict) -> Iterator[bytes]:
        """The bytes of a ref in chunks, checked against its sha256 as they pass: a mismatch raises
        after the last chunk (a streamed download then breaks off instead of completing)."""
        digest = hashlib.sha256()
        for chunk in self._iter(ref["key"]):
            digest.update(chunk)
            yield chunk
        if digest.hexdigest() != ref["sha256"]:
            raise ArtifactError(f"artifact {ref['key']} does not match its sha256")

    def get(self, ref: dict) -> bytes:
        """The bytes of a small artifact (records, files up to the inline limit), verified."""
        return b"".join(self.iter_chunks(ref))

    def get_file(self, ref: dict) -> BinaryIO:
        """A verified copy of the artifact in a spooled file, positioned at its start."""
        out = spool()
        try:
            for chunk in self.iter_chunks(ref):
                out.write(chunk)
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return out

    @abstractmethod
    def _put(self, key: str, source: BinaryIO, content_type: str) -> None: ...

    @abstractmethod
    def _iter(self, key: str) -> Iterator[bytes]: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a key's bytes; no error if they are already gone."""

    @abstractmethod
    def modified_at(self, key: str) -> float | None:
        """When a key was last put (epoch seconds; a put of bytes already there counts), or None."""


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ArtifactError(f"artifact key {key!r} escapes the store")
        return path

    def _put(self, key: str, source: BinaryIO, content_type: str) -> None:
        path = self._path(key)
        if path.exists():
            os.utime(path)  # a put of the same bytes: the sweep's grace period starts again
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            shutil.copyfileobj(source, tmp, CHUNK)
        os.replace(tmp.name, path)  # atomic: a reader never sees half an artifact

    def _iter(self, key: str) -> Iterator[bytes]:
        try:
            src = self._path(key).open("rb")
        except FileNotFoundError:
            raise NotFound(f"no artifact {key}") from None
        with src:
            while chunk := src.read(CHUNK):
                yield chunk

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def modified_at(self, key: str) -> float | None:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            return None


class S3ArtifactStore(ArtifactStore):
    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        retries = {"max_attempts": 3}
        config = Config(connect_timeout=5, read_timeout=30, retries=retries, s3={"addressing_style": "path"})
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=config,
        )

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def _put(self, key: str, source: BinaryIO, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # multipart past 8 MiB: the file is read in parts, never whole
            self.client.upload_fileobj(source, self.bucket, key, ExtraArgs={"ContentType": content_type})
        except (BotoCoreError, ClientError) as e:
            raise ArtifactError(f"S3 put {key} failed: {e}") from e

    def _iter(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            yield from body.iter_chunks(CHUNK)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"no artifact {key}") from e
            raise ArtifactError(f"S3 get {key} failed: {e}") from e
        except BotoCoreError as e:
            raise ArtifactError(f"S3 get {key} failed: {e}") from e

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise ArtifactError(f"S3 delete {key} failed: {e}") from e

    def modified_at(self, key: str) -> float | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # every put writes the object again, so LastModified is the last put
            return self.client.head_object(Bucket=self.bucket, Key=key)["LastModified"].timestamp()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise ArtifactError(f"S3 head {key} failed: {e}") from e
        except BotoCoreError as e:
            raise ArtifactError(f"S3 head {key} failed: {e}") from e


def make_artifact_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_store == "s3":
        store = S3ArtifactStore(settings)
        store.ensure_bucket()
        return store
    return LocalArtifactStore(settings.artifact_dir or settings.state_dir / "artifacts")

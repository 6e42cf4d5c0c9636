"""Both artifact store backends: a local directory, and S3 on the SeaweedFS the stack starts."""

import pytest

from astraforge.artifacts import ArtifactError, LocalArtifactStore, S3ArtifactStore
from tests.conftest import make_settings
from tests.contracts.artifact_store import ArtifactStoreContract


class TestLocalArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return LocalArtifactStore(tmp_path)

    def test_keys_cannot_escape_the_directory(self, store) -> None:
        with pytest.raises(ArtifactError, match="escapes"):
            store.get({"key": "../../etc/passwd", "sha256": "x"})


class TestS3ArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def store(self):
        s3 = S3ArtifactStore(make_settings(**S3_SETTINGS))
        s3.ensure_bucket()
        return s3


S3_SETTINGS = {"artifact_store": "s3", "s3_endpoint": "http://127.0.0.1:18333", "s3_bucket": "astraforge-test",
               "s3_access_key": "astraforge", "s3_secret_key": "astraforge-dev-only"}  # fmt: skip

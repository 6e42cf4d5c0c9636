"""The contract every artifact store meets; a backend's test supplies only the ``store`` fixture."""

import secrets

import pytest

from astraforge.artifacts import ArtifactError, ArtifactStore
from astraforge.errors import NotFound


class ArtifactStoreContract:
    def test_put_get_round_trip_is_content_addressed(self, store: ArtifactStore) -> None:
        tenant = f"t-{secrets.token_hex(4)}"
        data = secrets.token_bytes(300_000)
        ref = store.put(tenant, data, "application/x-tar", "snap.tgz")
        assert ref["size"] == len(data) and ref["key"] == f"{tenant}/{ref['sha256']}" and ref["name"] == "snap.tgz"
        assert store.get(ref) == data
        again = store.put(tenant, data)  # idempotent: same key, no error
        assert again["key"] == ref["key"]

    def test_missing_and_tampered_artifacts_are_errors(self, store: ArtifactStore) -> None:
        with pytest.raises(NotFound):
            store.get({"key": f"nobody/{'0' * 64}", "sha256": "0" * 64})
        ref = store.put("t-tamper", b"original")
        with pytest.raises(ArtifactError, match="sha256"):
            store.get({**ref, "sha256": "f" * 64})

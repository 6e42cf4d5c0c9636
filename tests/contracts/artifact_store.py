"""The contract every artifact store meets; a backend's test supplies only the ``store`` fixture."""

import hashlib
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

    def test_files_stream_in_and_out_in_chunks(self, store: ArtifactStore) -> None:
        from astraforge.artifacts import CHUNK, spool

        data = secrets.token_bytes(3 * CHUNK + 123)
        with spool() as source:
            source.write(data)
            ref = store.put_file("t-stream", source, "application/gzip", "big.tgz")
        assert ref["size"] == len(data) and ref["sha256"] == hashlib.sha256(data).hexdigest()
        chunks = list(store.iter_chunks(ref))
        assert len(chunks) > 1 and all(len(c) <= CHUNK for c in chunks) and b"".join(chunks) == data
        with store.get_file(ref) as copy:
            assert copy.read() == data

    def test_delete_removes_the_bytes_and_is_idempotent(self, store: ArtifactStore) -> None:
        ref = store.put(f"t-{secrets.token_hex(4)}", b"to be deleted")
        store.delete(ref["key"])
        store.delete(ref["key"])
        with pytest.raises(NotFound):
            store.get(ref)

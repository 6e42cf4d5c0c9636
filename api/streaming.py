"""Responses that stream an artifact's bytes from the store (never held whole by the API)."""

from collections.abc import Iterator

from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from astraforge.artifacts import ArtifactStore


async def artifact_response(store: ArtifactStore, ref: dict, media_type: str) -> StreamingResponse:
    """The artifact's bytes, checked against its sha256 as they pass. The first chunk is read
    before the headers go out, so a missing artifact raises ``NotFound`` (a clean 404) here;
    a mismatch found at the end breaks the response off."""
    chunks = store.iter_chunks(ref)
    first = await run_in_threadpool(next, chunks, b"")

    def body() -> Iterator[bytes]:
        yield first
        yield from chunks

    headers = {"X-Sha256": ref["sha256"], "Content-Length": str(ref["size"])}
    return StreamingResponse(body(), media_type=media_type, headers=headers)

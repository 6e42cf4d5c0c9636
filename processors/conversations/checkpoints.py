"""A conversation's history in the artifact store, written incrementally: what a resumed reply reads.

A checkpoint artifact (JSON, ``FORMAT``) holds its own messages plus the list of earlier checkpoints
(``segments``) that hold the messages before them: the history is each segment's own messages in
order, then the checkpoint's own. A new checkpoint writes the messages since the newest segment, and
absorbs (writes again as its own) the newest segments while they are no larger than what it writes,
as a binary counter carries: a message is rewritten at most log2(history / smallest write) times, so a
long session writes O(n log n) bytes in all instead of its whole history per step (O(n²)), and a
resume reads O(log n) artifacts.

The state names the newest checkpoint only; the records after it (the state's ``tail``) complete the
history (``processors.conversations.processor`` reads both).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from astraforge.artifacts import ArtifactStore
from astraforge.errors import AstraForgeError

FORMAT = "astraforge.conversation-checkpoint/2"


class CheckpointUnreadable(AstraForgeError, ValueError):
    """A checkpoint (or a segment it names) is gone or not one: the history comes from the records."""


@dataclass(frozen=True)
class Segment:
    """One checkpoint artifact and how many of the history's messages it holds as its own."""

    artifact: dict[str, Any]
    messages: int
    size: int  # bytes of its own messages (JSON), what the carry compares


def write(
    artifacts: ArtifactStore,
    tenant_id: str,
    name: str,
    segments: Sequence[Segment],
    messages: Sequence[dict[str, Any]],
) -> tuple[dict[str, Any], list[Segment]]:
    """Store a checkpoint of ``messages`` (the whole history) after ``segments`` (the newest
    checkpoint's, which hold a prefix of it); its ref and the segments it leaves (itself last)."""
    covered = sum(s.messages for s in segments)
    if covered > len(messages):  # not a prefix of this history: start the chain again
        segments, covered = [], 0
    keep = len(segments)
    own = len(json.dumps(list(messages[covered:])))
    while keep and segments[keep - 1].size <= own:
        keep -= 1
        own += segments[keep].size
    start = sum(s.messages for s in segments[:keep])
    body = {
        "format": FORMAT,
        "segments": [{"artifact": s.artifact, "messages": s.messages, "size": s.size} for s in segments[:keep]],
        "messages": list(messages[start:]),
    }
    ref = artifacts.put(tenant_id, json.dumps(body).encode(), "application/json", name)
    return ref, [*segments[:keep], Segment(ref, len(messages) - start, len(json.dumps(body["messages"])))]


def read(artifacts: ArtifactStore, ref: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Segment]]:
    """The history a checkpoint holds, and its segments (itself last)."""
    body = _body(artifacts, ref)
    segments = [Segment(s["artifact"], s["messages"], s["size"]) for s in body["segments"]]
    messages: list[dict[str, Any]] = []
    for segment in segments:
        own = _body(artifacts, segment.artifact)["messages"]
        if len(own) != segment.messages:
            raise CheckpointUnreadable(f"segment {segment.artifact['artifact_id']} holds {len(own)} messages")
        messages += own
    messages += body["messages"]
    return messages, [*segments, Segment(ref, len(body["messages"]), len(json.dumps(body["messages"])))]


def _body(artifacts: ArtifactStore, ref: dict[str, Any]) -> dict[str, Any]:
    try:
        body = json.loads(artifacts.get(ref))
    except (OSError, ValueError, AstraForgeError) as e:
        raise CheckpointUnreadable(f"checkpoint {ref.get('artifact_id')}: {e}") from e
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CheckpointUnreadable(f"checkpoint {ref.get('artifact_id')} is not {FORMAT}")
    return body

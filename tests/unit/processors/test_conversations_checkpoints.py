"""Checkpoints of a conversation's history, written incrementally to a real (local) artifact store:
a long session writes O(n log n) bytes, not its whole history per step, and reads back whole."""

import json

import pytest

from astraforge.artifacts import LocalArtifactStore
from astraforge.processors.conversations import checkpoints
from astraforge.processors.conversations.agent import DeltaBatcher

STEPS = 200


def turn(i: int) -> list[dict]:
    return [
        {"role": "user", "id": f"m{i}", "content": f"message {i} " + "x" * 2000},
        {"role": "assistant", "id": f"m{i}-reply:t0", "content": f"answer {i}", "tool_calls": []},
    ]


def test_200_checkpoints_write_a_few_times_the_history_and_each_reads_back_whole(tmp_path) -> None:
    store = LocalArtifactStore(tmp_path)
    messages: list[dict] = []
    segments: list[checkpoints.Segment] = []
    written = 0
    for i in range(STEPS):
        messages += turn(i)
        ref, segments = checkpoints.write(store, "t", f"c{i}.json", segments, messages)
        written += ref["size"]
        assert len(segments) <= 10  # ~log2(steps): a resume reads few artifacts
        if i % 37 == 0 or i == STEPS - 1:
            back, again = checkpoints.read(store, ref)
            assert back == messages and again == segments
    history = len(json.dumps(messages))
    assert written < 10 * history, (written, history)  # rewriting the whole history each step: ~100x
    assert segments[-1].artifact == ref


def test_a_checkpoint_that_is_gone_or_foreign_is_unreadable_not_a_crash(tmp_path) -> None:
    store = LocalArtifactStore(tmp_path)
    ref, _ = checkpoints.write(store, "t", "c.json", [], turn(0))
    store.delete(ref["key"])
    with pytest.raises(checkpoints.CheckpointUnreadable):
        checkpoints.read(store, ref)
    old = store.put("t", json.dumps([{"type": "human", "data": {}}]).encode())  # the langchain dicts kept before
    with pytest.raises(checkpoints.CheckpointUnreadable):
        checkpoints.read(store, old)


def test_tokens_are_batched_into_deltas_that_join_to_the_text_in_index_order() -> None:
    records: list[dict] = []
    batcher = DeltaBatcher(lambda type_, payload: records.append(payload), tokens=4, wait_s=60)
    words = [f" w{i}" for i in range(10)]
    for w in words:
        batcher.add("r:t0", w)
    batcher.add("r:t1", " next")  # a new message: the last batch of the one before goes first
    batcher.flush()
    batcher.close()
    assert [(r["message_id"], r["index"]) for r in records] == [("r:t0", 0), ("r:t0", 1), ("r:t0", 2), ("r:t1", 0)]
    assert "".join(r["delta"] for r in records if r["message_id"] == "r:t0") == "".join(words)

"""The supervisor's taken exec ids: bounded for a sandbox's life, and a redelivered id never runs twice.

``RequestIds`` is plain data in the supervisor's module (stdlib only); the whole supervisor refusing a
duplicate over its socket is tests/contracts/sandbox_provider.py (test_a_request_id_never_runs_twice)."""

import sys

from astraforge.ids import new_id
from astraforge.sandbox.supervisor import KEPT_IDS, RequestIds


def test_100k_ids_keep_memory_bounded_and_a_recent_duplicate_is_refused() -> None:
    taken = RequestIds()
    for i in range(100_000):
        assert taken.take(new_id() if i % 2 else f"cmd-{i}")
    held = sys.getsizeof(taken.recent) + sum(map(sys.getsizeof, taken.recent)) + sys.getsizeof(taken.floor)
    assert len(taken.recent) == KEPT_IDS and held < 2 * 1024 * 1024, f"{held} bytes held for 100k ids"
    recent = list(taken.recent)
    assert not taken.take(recent[0]) and not taken.take(recent[-1]) and not taken.take("cmd-99998")
    assert taken.take(new_id()), "a fresh id still runs"


def test_a_forgotten_platform_id_is_refused_by_the_floor() -> None:
    """A UUIDv7 (as the platform mints command ids) redelivered after more than the window's worth of
    later commands is still refused: it sorts below the newest id forgotten. An id of another shape
    is remembered only within the window (documented: the platform's ids are UUIDv7)."""
    taken = RequestIds(kept=8)
    first, own = new_id(), "caller-chosen"
    assert taken.take(first) and taken.take(own)
    for _ in range(8):
        assert taken.take(new_id())
    assert first not in taken.recent and own not in taken.recent
    assert not taken.take(first), "a redelivered command ran again once its id left the window"
    assert taken.take(own)

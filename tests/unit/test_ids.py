import time
import uuid
from collections.abc import Callable

import pytest

from astraforge import _native
from astraforge.ids import new_id, python_new_id


@pytest.fixture(params=["c", "python"])
def make_id(request: pytest.FixtureRequest) -> Callable[[], str]:
    return _native.new_id if request.param == "c" else python_new_id


def test_the_platform_mints_ids_in_c() -> None:
    assert new_id is _native.new_id


def test_new_ids_are_canonical_uuid7_increasing_in_a_process(make_id: Callable[[], str]) -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [make_id() for _ in range(5000)]
    parsed = [uuid.UUID(i) for i in ids]
    assert all(str(u) == i for u, i in zip(parsed, ids, strict=True))  # canonical lower-case text
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # later ids sort later, even in one millisecond
    assert parsed[0].int >> 80 >= before_ms  # the first 48 bits are Unix milliseconds
    assert len({u.int & ((1 << 62) - 1) for u in parsed}) == len(parsed)  # random bits, not a counter


def test_ids_at_ingest_rate_keep_the_clocks_time(make_id: Callable[[], str]) -> None:
    """20,000 ids as fast as a producer makes them: a counter orders them within each millisecond, so
    their timestamps stay at the clock's time (one millisecond per id put them 20 s into the future)."""
    ids = [uuid.UUID(make_id()) for _ in range(20_000)]
    after_ms = time.time_ns() // 1_000_000
    assert [u.int for u in ids] == sorted(u.int for u in ids)
    assert max(u.int >> 80 for u in ids) <= after_ms + 20

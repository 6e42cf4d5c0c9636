"""The lease guard's fingerprint requests: split so that none passes the supervisor's 1 MiB request
line, nor hashes so many files (each up to max_bytes) that it outlasts its timeout."""

from astraforge.sandbox.client import FINGERPRINT_BATCH_CHARS, FINGERPRINT_BATCH_PATHS, _batches


def test_batches_keep_order_and_bound_both_characters_and_paths() -> None:
    short = [f"/workspace/f{i}" for i in range(100)]
    assert [len(b) for b in _batches(short, FINGERPRINT_BATCH_CHARS, FINGERPRINT_BATCH_PATHS)] == [32, 32, 32, 4]
    long = ["/workspace/" + "d" * 4000 + f"/{i}" for i in range(10)]
    batches = list(_batches(long, 10_000, 32))
    assert [len(b) for b in batches] == [2] * 5 and [p for b in batches for p in b] == long
    assert list(_batches(["/" + "x" * 20_000], 10_000, 32)) == [["/" + "x" * 20_000]]  # one path always goes
    assert list(_batches([], 10_000, 32)) == []

"""Identifiers and timestamps: UUIDv7 for events (time-ordered, so indexes stay append-mostly)."""

import time
from datetime import UTC, datetime

import uuid6


def new_id() -> str:
    """A new UUIDv7 as its canonical string."""
    return str(uuid6.uuid7())


def now_micros() -> int:
    """Wall-clock time in microseconds since the epoch (the envelope's ``occurred_at``)."""
    return time.time_ns() // 1000


def from_micros(micros: int) -> datetime:
    """Exact (no float rounding) UTC datetime for an ``occurred_at`` value."""
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


def iso(when: datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z, identical for projection rows and Kafka records."""
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# Every id the platform accepts from outside (path, query or body) matches this one pattern: ASCII
# letters, digits and ``._:-``, at most 200 characters. NUL bytes, slashes, spaces and non-ASCII
# never reach a query, a topic key or a file name.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"

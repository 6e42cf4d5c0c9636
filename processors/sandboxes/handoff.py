"""What a new owner of a sandbox's partition needs to re-attach to a command the previous owner ran.

A command outlives its host's connection (the supervisor keeps it running, and its output by byte
offset: ``sandbox/supervisor.py``, protocol 2), so a rebalance need not interrupt it. The previous
owner stops recording the command's output once its partition is suspended and detaches once the
partition is lost (it writes nothing more for the command); the stream then holds exactly the output
it recorded. The new owner counts it here, from the command's ``exec.started`` on, and asks the
supervisor for the rest from that byte offset: nothing is recorded twice, nothing is skipped (but
what the supervisor no longer kept: ``SupervisorResult.lost``, recorded as ``truncated``).
"""

import contextlib
from dataclasses import dataclass

from astraforge.config import Settings
from astraforge.errors import AstraForgeError, DecodeError
from astraforge.kafka import read_range
from astraforge.schemas import Codec


@dataclass(frozen=True)
class RecordedOutput:
    """How much of a command's output its stream holds: bytes (both streams, as produced) and the
    ``seq`` the next ``exec.output`` record takes."""

    size: int = 0
    next_seq: int = 0


def recorded_output(
    settings: Settings, codec: Codec, partition: int, started_offset: int, sandbox_id: str, command_id: str
) -> RecordedOutput:
    """The ``exec.output`` records of ``command_id`` in the events topic, from its ``exec.started`` (at
    ``started_offset`` of ``partition``) to the partition's current end."""
    size, next_seq = 0, 0
    for msg in read_range(settings, settings.events_topic, partition, started_offset, None):
        with contextlib.suppress(DecodeError):
            e = codec.decode(msg.value())
            if e.type != "exec.output" or e.sandbox_id != sandbox_id or e.payload["command_id"] != command_id:
                continue
            if e.payload["artifact"] is None:  # an overflow artifact is written with the command's end only
                size += len(e.payload["data"])
            next_seq = max(next_seq, e.payload["seq"] + 1)
    return RecordedOutput(size, next_seq)


class Detached(AstraForgeError):
    """This instance no longer owns the command's sandbox: it stops reading the command, records
    nothing more for it, and the new owner re-attaches."""

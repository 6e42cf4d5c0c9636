"""Live SSE frames written as text carry what the pydantic model and sse-starlette would have sent."""

from sse_starlette import ServerSentEvent

from astraforge.api import frames
from astraforge.api.models import EventPublic
from astraforge.kafka import Positioned
from astraforge.schemas import Envelope

PAYLOADS = [
    {"text": "first"},
    {"text": "é 漢字 \U0001f600 \u2028", "nested": {"list": [1, None, True, 'x\ny\t"q"\\']}, "n": -(2**62)},
    {},
]


def expected(event: EventPublic) -> bytes:
    return ServerSentEvent(data=event.model_dump_json(), id=str(event.offset), event=event.type, sep="\n").encode()


def test_records_frame_as_the_model_would() -> None:
    for i, payload in enumerate([*PAYLOADS, {"data": b"\x00\xffbinary", "text": b"bytes as text"}]):
        envelope = Envelope(type="chat.message", stream_id="s", tenant_id="t", actor="a", payload=payload,
                            occurred_at=1_796_000_000_000_000 + i, causation_id="c" if i else None)  # fmt: skip
        record = Positioned(2, 40 + i, envelope)
        assert frames.from_record(record).encode() == expected(EventPublic.from_envelope(2, 40 + i, envelope))

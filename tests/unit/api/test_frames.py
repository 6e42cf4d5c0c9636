"""Live SSE frames written as text carry what the pydantic model and sse-starlette would have sent."""

from sse_starlette import ServerSentEvent

from astraforge.api import frames
from astraforge.api.models import EventPublic
from astraforge.kafka import Positioned
from astraforge.schemas import Envelope, default_codec

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


def test_frames_from_bytes_are_the_frames_of_the_decoded_record() -> None:
    codec = default_codec()
    texts = ["first", "é 漢字 \U0001f600 \u2028", 'x\ny\t"q"\\', ""]
    records = [
        Envelope(type="chat.message", stream_id="s-é", tenant_id=f"t{i}", actor="a\u2028",
                 payload={"message_id": f"m{i}", "role": "agent", "text": text},
                 occurred_at=1_796_000_000_000_000 + i, causation_id="c" if i else None)
        for i, text in enumerate(texts)
    ]  # fmt: skip
    records += [
        Envelope(type="exec.output", stream_id="s", tenant_id="t", actor="a", sandbox_id="sb",
                 payload={"command_id": "c", "stream": "stderr", "seq": 7, "data": data, "artifact": None})
        for data in (b"\xffnot utf-8", b"text \xc3\xa9", b"NUL \x00")
    ]  # fmt: skip
    for i, envelope in enumerate(records):
        data = codec.encode(envelope)
        record = Positioned(2, 40 + i, codec.decode(data))
        assert frames.from_bytes(codec, 2, 40 + i, data) == (envelope.tenant_id, frames.from_record(record))


def test_frames_from_bytes_leave_text_with_nul_to_from_record() -> None:
    codec = default_codec()
    envelope = Envelope(type="chat.message", stream_id="s", tenant_id="t", actor="a",
                        payload={"message_id": "m", "role": "agent", "text": "NUL \x00"})  # fmt: skip
    assert frames.from_bytes(codec, 0, 1, codec.encode(envelope)) is None

"""Where an API exec's milliseconds go, from the timestamps its own records carry.

Every record has two clocks of the same host: ``occurred_at`` (when its writer built it) and the
Kafka timestamp (CreateTime: when the producer was handed it). With the client's send and receive
times around each call, one exec splits into stages:

  api handler        client send            -> sandbox.exec built (HTTP, auth, ownership, quota)
  command produce    sandbox.exec built     -> handed to the producer
  to processor       command handed over    -> exec.accepted built (ack, fetch, faust, decode, decide)
  accept durably     exec.accepted built    -> exec.started built (ack of the accept, thread, start)
  start + sandbox    exec.started built     -> exec.finished built (ack of the start, supervisor call)
    of it in sandbox                           the supervisor's own duration_ms
  answer to client   exec.finished built    -> client has the response (ack, live tail, HTTP)
"""

import itertools
import statistics
from collections import defaultdict

from astraforge.config import Settings
from astraforge.kafka import partition_for, read_range
from astraforge.schemas import default_codec

STAGES = ("api handler", "command produce", "to processor", "accept durably", "start + sandbox",
          "  of it in sandbox", "answer to client")  # fmt: skip


def stages(settings: Settings, stream_id: str, calls: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Per stage, the milliseconds each call in ``calls`` (command id -> client send, receive time in
    seconds since the epoch) spent there."""
    codec = default_codec()
    partition = partition_for(stream_id, settings.topic_partitions)
    seen: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)  # command id -> type -> (built, handed)
    duration: dict[str, float] = {}
    for topic in (settings.commands_topic, settings.events_topic):
        for msg in read_range(settings, topic, partition, 0, None):
            e = codec.decode(msg.value())
            cid = e.payload.get("command_id") if isinstance(e.payload, dict) else None
            if e.stream_id != stream_id or cid not in calls:
                continue
            seen[cid].setdefault(e.type, (e.occurred_at / 1000, msg.timestamp()[1]))
            if e.type == "exec.finished":
                duration[cid] = e.payload["duration_ms"]
    out: dict[str, list[float]] = {s: [] for s in STAGES}
    for cid, (sent, received) in calls.items():
        r = seen.get(cid, {})
        if not {"sandbox.exec", "exec.accepted", "exec.started", "exec.finished"} <= r.keys():
            continue
        cmd, acc, sta, fin = r["sandbox.exec"], r["exec.accepted"], r["exec.started"], r["exec.finished"]
        points = [sent * 1000, cmd[0], cmd[1], acc[0], sta[0], fin[0], received * 1000]
        spans = [b - a for a, b in itertools.pairwise(points)]
        for name, span in zip(
            ("api handler", "command produce", "to processor", "accept durably", "start + sandbox", "answer to client"),
            spans,
            strict=True,
        ):
            out[name].append(span)
        out["  of it in sandbox"].append(duration[cid])
    return out


def rows(breakdown: dict[str, list[float]], label: str = "exec stage") -> list[tuple[str, str, str]]:
    """Table rows: stage, p50 ms, mean ms (also the warm create's, from ``create_breakdown``)."""
    return [
        (f"{label}: {name}", f"{statistics.median(v):.2f}", f"{statistics.fmean(v):.2f}")
        for name, v in breakdown.items()
        if v
    ]

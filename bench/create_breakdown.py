"""Where a warm-pool create's milliseconds go, from the timestamps its own records carry (as
``exec_breakdown`` does for an exec; the same two clocks of one host). Kafka's timestamps are whole
milliseconds: the two stages around the hand-over are each off by up to 1 ms, their sum is not.

  api handler        client send             -> sandbox.create built (HTTP, auth, spec check)
  command produce    sandbox.create built    -> handed to the producer (quota admission, append)
  to processor       command handed over     -> sandbox.provisioning built (fetch, faust, decode, decide)
  claim + ready      sandbox.provisioning    -> sandbox.ready built (ack, provision lane, pool claim)
  answer to client   sandbox.ready built     -> client has the response (ack, live tail, HTTP)
"""

import itertools
from collections import defaultdict

from astraforge.config import Settings
from astraforge.kafka import partition_for, read_range
from astraforge.schemas import default_codec

STAGES = ("api handler", "command produce", "to processor", "claim + ready", "answer to client")


def stages(settings: Settings, calls: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Per stage, the milliseconds each create in ``calls`` (sandbox id -> client send, receive time
    in seconds since the epoch) spent there."""
    codec = default_codec()
    seen: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)  # sandbox id -> type -> (built, handed)
    partitions = {partition_for(sid, settings.topic_partitions) for sid in calls}
    for topic in (settings.commands_topic, settings.events_topic):
        for partition in partitions:
            for msg in read_range(settings, topic, partition, 0, None):
                e = codec.decode(msg.value())
                if e.stream_id in calls:
                    seen[e.stream_id].setdefault(e.type, (e.occurred_at / 1000, msg.timestamp()[1]))
    out: dict[str, list[float]] = {s: [] for s in STAGES}
    for sid, (sent, received) in calls.items():
        r = seen.get(sid, {})
        if not {"sandbox.create", "sandbox.provisioning", "sandbox.ready"} <= r.keys():
            continue
        cmd, req, ready = r["sandbox.create"], r["sandbox.provisioning"], r["sandbox.ready"]
        points = [sent * 1000, cmd[0], cmd[1], req[0], ready[0], received * 1000]
        for name, (a, b) in zip(STAGES, itertools.pairwise(points), strict=True):
            out[name].append(b - a)
    return out

"""Bytes a conversation processor writes per turn, against the conversation's length: the table value
(changelog) per persisted record and the checkpoint artifacts, as the processor writes them now
(compact state; incremental checkpoints) next to what it wrote before (the whole state, history
included, per record, moved to the artifact store past 256 KiB; the whole history per checkpoint),
in the same run, through the real state functions and a real local artifact store. No broker: the
bytes are what would be sent.

usage: python bench/conversation_state.py [--turns 200] [--message-bytes 2048] [--tool-bytes 4096]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astraforge.artifacts import LocalArtifactStore
from astraforge.processors.conversations import checkpoints
from astraforge.processors.conversations.state import History, fold
from astraforge.schemas import Envelope
from bench.common import table

OLD_TABLE_VALUE_BYTES = 256 * 1024  # before: a state past this went to the artifact store whole


def turn_records(i: int, message_bytes: int, tool_bytes: int) -> list[Envelope]:
    """One turn: a message, its reply with one round of tools, then the answer."""
    reply = f"m{i}-reply"

    def rec(type_: str, **payload) -> Envelope:
        return Envelope(type_, "cv-bench", "t", "bench", payload)

    return [
        rec("chat.message", message_id=f"m{i}", role="user", text="u" * message_bytes),
        rec("reply.started", reply_id=reply, in_reply_to=f"m{i}", state="started", reason=None),
        rec("chat.message", message_id=f"{reply}:t0", role="assistant", text="Let me look."),
        rec("tool.called", call_id=f"c{i}", name="execute", arguments_json='{"command": "ls"}'),
        rec("tool.result", call_id=f"c{i}", output="o" * tool_bytes, is_error=False),
        rec("agent.checkpoint", reply_id=reply, messages=0, artifact={}),  # written by the bench below
        rec("chat.message", message_id=f"{reply}:t1", role="assistant", text="Done."),
        rec("agent.checkpoint", reply_id=reply, messages=0, artifact={}),
        rec("reply.completed", reply_id=reply, in_reply_to=f"m{i}", state="completed", reason=None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--message-bytes", type=int, default=2048)
    parser.add_argument("--tool-bytes", type=int, default=4096)
    args = parser.parse_args()
    created = Envelope(
        "conversation.created", "cv-bench", "t", "bench", {"sandbox_id": "sb-bench", "model": "m", "tools": []}
    )
    st, history = fold(None, History(), created, 0)
    store = LocalArtifactStore(Path(tempfile.mkdtemp(prefix="conv-bench-")))
    segments: list[checkpoints.Segment] = []
    now = {"changelog": 0, "artifacts": 0}
    before = {"changelog": 0, "artifacts": 0}
    last_turn: dict[str, tuple[int, int]] = {}
    offset = 1
    for i in range(args.turns):
        start_now, start_before = dict(now), dict(before)
        for e in turn_records(i, args.message_bytes, args.tool_bytes):
            if e.type == "agent.checkpoint":
                ref, segments = checkpoints.write(store, "t", f"c{offset}.json", segments, history.messages)
                now["artifacts"] += ref["size"]
                before["artifacts"] += len(json.dumps(list(history.messages)))  # the whole history each time
                e = Envelope(e.type, e.stream_id, e.tenant_id, e.actor, {**e.payload, "artifact": ref})
            st, history = fold(st, history, e, offset)
            offset += 1
            now["changelog"] += len(json.dumps(st.to_json()))
            whole = len(json.dumps({**st.to_json(), "messages": list(history.messages)}))
            if whole <= OLD_TABLE_VALUE_BYTES:
                before["changelog"] += whole
            else:
                before["changelog"] += 200  # the reference to ...
                before["artifacts"] += whole  # ... the whole state, stored again
        if i == args.turns - 1:
            last_turn = {k: (now[k] - start_now[k], before[k] - start_before[k]) for k in now}
    rows = [("per turn, averaged over all / the last turn", "now", "before", "before / now")]
    for k in ("changelog", "artifacts"):
        avg_now, avg_before = now[k] / args.turns, before[k] / args.turns
        rows.append((f"{k} bytes, mean", f"{avg_now:,.0f}", f"{avg_before:,.0f}", f"{avg_before / avg_now:.1f}x"))
        ln, lb = last_turn[k]
        rows.append((f"{k} bytes, turn {args.turns}", f"{ln:,}", f"{lb:,}", f"{lb / max(ln, 1):.1f}x"))
    history_bytes = len(json.dumps(list(history.messages)))
    print(f"{args.turns} turns, history {history_bytes:,} bytes, {len(segments)} checkpoint segments")
    print(table(rows))


if __name__ == "__main__":
    main()

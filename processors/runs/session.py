"""An agent that runs as one process in the run's sandbox (Codex, or any coding CLI), followed as it
runs: its files are written, its exec is sent, and each piece of its output is read from the run's
stream as the sandbox processor records it.

What the agent prints is translated into records as it arrives (``CodexTranslator`` for Codex:
chat, commands with their output, file changes, token usage); a file change is followed at once by
a ``diff.captured`` of the workspace (the platform's own diff, checked against the run's writable
paths; a change the agent claims outside them, which the sandbox refused, fails the run too), and
the whole workspace is captured once more when the process ends (a shell command can change files
without a file-change item). A snapshot taken while the agent writes can fail (tar: file changed
as we read it): it is taken again, and a step that still has none is left to the diff at the end.
An agent without a translator (``cli``) is recorded at the exec's level: the command, its output
records, and the diffs.

A resumed driver repeats nothing: the exec is sent again only if it has no answer (the sandbox
processor runs a command id once), translated records already in the stream are not written again
(counted per identical record, after reading the whole stream), and diffs are captured per step.
"""

import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from astraforge.processors.runs.executors.codex import CodexTranslator
from astraforge.processors.runs.executors.script import SandboxCall
from astraforge.processors.runs.facts import Answer, StepFailed, StreamFacts
from astraforge.processors.runs.guardrails import forbidden
from astraforge.schemas import Envelope

if TYPE_CHECKING:
    from astraforge.processors.runs.driver import Driver

LOG = logging.getLogger(__name__)
OUTPUT_WAIT_S = 900.0
CAPTURE_TRIES = 3  # the longest quiet stretch of an agent (its exec's own timeout ends it before)


@dataclass
class AgentProcess:
    """One agent process: write ``files`` (path -> bytes), then exec ``argv`` with ``env``."""

    name: str  # codex | cli: the run's reason names it
    command_id: str
    argv: list[str]
    env: dict[str, str]
    files: dict[str, bytes]
    actor: str
    translator: CodexTranslator | None = None
    timeout_s: float = OUTPUT_WAIT_S - 60


def _key(type_: str, payload: dict) -> tuple[str, str]:
    return type_, json.dumps(payload, sort_keys=True, default=repr)


def run_process(d: "Driver", facts: StreamFacts, process: AgentProcess) -> Envelope:
    """Run ``process`` to its end; the last ``diff.captured`` (the whole workspace at its end).
    ``StepFailed`` when it fails or changes a path outside the writable paths."""
    cid = process.command_id
    for i, (path, content) in enumerate(process.files.items()):
        write = {"request_id": f"{cid}-f{i}", "path": path, "content": content, "artifact": None, "mode": 0o600}
        done = d.call(facts, SandboxCall("sandbox.file.write", write), "file.written", "request_id")
        if done.payload.get("error"):
            raise StepFailed(f"could not write {path} for {process.name}: {done.payload['error']}")
    facts.catch_up()  # an earlier driver's records, all of them, before any is written again
    already = Counter(_key(e.type, e.payload) for e in facts.seen if e.actor == process.actor)
    emitted: Counter = Counter()
    allowed = d.st.request["writable_paths"]
    step = 0

    def emit(type_: str, payload: dict) -> None:
        key = _key(type_, payload)
        emitted[key] += 1
        if emitted[key] > already[key]:
            d.record(type_, payload, actor=process.actor)

    def captured(diff: Envelope) -> Envelope:
        outside = forbidden(diff.payload["files"], allowed)
        if outside:
            d.blocked(diff.payload["step"], outside, f"{process.name} changed files outside the run's writable paths")
        return diff

    ours = Answer(("exec.output", "exec.finished"), "command_id", cid)
    if facts.find(Answer(("exec.finished",), "command_id", cid)) is None:
        run = {
            "command_id": cid,
            "argv": process.argv,
            "shell": None,
            "cwd": "/workspace",
            "env": process.env,
            "timeout_s": process.timeout_s,
            "async_": False,
        }
        d.sandbox_command("sandbox.exec", run)
    position = 0
    while True:
        position, e = facts.next(position, ours, OUTPUT_WAIT_S)
        position += 1
        if e.type == "exec.finished":
            finished = e
            break
        if process.translator is None or e.payload["stream"] != "stdout":
            continue
        for r in process.translator.feed(e.payload["data"]):
            if r.type == "diff.produced":
                emit(r.type, {**r.payload, "attempt": d.attempt, "step": step})
                try:  # taken while the agent works: a file it writes meanwhile can fail the snapshot
                    diff = d.capture(facts, step, CAPTURE_TRIES)
                except StepFailed as e:
                    LOG.warning("%s: no diff after step %d (%s); the one at the end covers it", cid, step + 1, e)
                else:
                    captured(diff)
                tried = forbidden(r.payload["files"], allowed)  # refused in the sandbox, yet an attempt
                if tried:
                    d.blocked(step, tried, f"{process.name} tried to change files outside the run's writable paths")
                step += 1
            else:
                emit(r.type, r.payload)
    for r in process.translator.close() if process.translator else []:
        emit(r.type, r.payload if r.type != "diff.produced" else {**r.payload, "attempt": d.attempt, "step": step})
    last = captured(d.capture(facts, step, CAPTURE_TRIES))
    p = finished.payload
    if p.get("error") or p["exit_code"] != 0:
        why = p.get("error") or f"exited {p['exit_code']}"
        raise StepFailed(f"{process.name} {why}")
    return last


def with_guidance(
    spec: str, guidance: tuple[str, ...], writable_paths: list[str], attachments: list[str] | None = None
) -> str:
    """The prompt of an attempt: the spec, the files attached to it, the reviewers' guidance of earlier
    attempts, the paths the agent may change (it cannot change others: say so rather than let it find out)."""
    parts = [spec.rstrip()]
    if attachments:
        parts.append("Files attached to this request (outside the repository): " + ", ".join(attachments))
    if guidance:
        notes = "\n".join(f"- {g}" for g in guidance if g)
        parts.append(f"A reviewer looked at the earlier attempt(s) and asks:\n{notes}")
    if writable_paths:
        parts.append("You may change only these paths: " + ", ".join(writable_paths))
    return "\n\n".join(parts) + "\n"

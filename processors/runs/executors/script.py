"""The script agent: a deterministic agent that runs a list of steps (shell commands, file writes)
— remediation playbooks, CI-like jobs — as sandbox commands, recorded like any agent's.

A step is data from the request (``ScriptStep``): ``shell`` runs ``/bin/sh -c`` in /workspace with
the attempt's guidance in ``ASTRAFORGE_GUIDANCE``; ``write`` replaces a file's text. A write outside
the run's writable paths is refused before it reaches the sandbox; a shell command runs with every
path outside them read-only (``confine.py``, Landlock, at directory granularity), and what it changed
is checked, path by path, on the diff captured after it (``processors.runs.driver``).
"""

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from astraforge.processors.runs.guardrails import normalise

STEP_TIMEOUT_S = 600.0
CONFINE = (Path(__file__).parent / "confine.py").read_text()  # passed whole: never a file the agent could replace


@dataclass(frozen=True)
class SandboxCall:
    """One sandbox command a step becomes: its type and payload (ids chosen by the driver)."""

    type: str
    payload: dict


def confined_dirs(writable_paths: list[str]) -> list[str]:
    """The sandbox directories a step may write beneath (``confine.py``): a writable directory, or a
    writable file's directory; empty when every path is writable."""
    dirs = []
    for entry in writable_paths:
        name = normalise(entry)
        if name is None:
            continue
        parent = name if entry.endswith("/") else str(PurePosixPath(name).parent)
        dirs.append("/workspace" if parent == "." else f"/workspace/{parent}")
    return sorted(set(dirs))


def confined(argv: list[str], writable_paths: list[str]) -> list[str]:
    """``argv`` run under ``confine.py``: every path outside ``writable_paths`` read-only to it and
    to all it starts (unchanged when every path is writable)."""
    if not writable_paths:
        return argv
    return ["python3", "-I", "-c", CONFINE, *confined_dirs(writable_paths), "--", *argv]


def step_call(step: dict, command_id: str, guidance: tuple[str, ...], writable_paths: list[str]) -> SandboxCall:
    """The sandbox command of one step; ``ValueError`` for a step that names no valid action. A
    shell step with writable paths runs under ``confine.py``: other paths are read-only to it."""
    if step["kind"] == "shell" and step.get("command"):
        env = {"ASTRAFORGE_GUIDANCE": "\n".join(guidance)} if guidance else {}
        argv, shell = [], step["command"]
        if writable_paths:
            argv, shell = confined(["/bin/sh", "-c", step["command"]], writable_paths), None
        return SandboxCall(
            "sandbox.exec",
            {
                "command_id": command_id,
                "argv": argv,
                "shell": shell,
                "cwd": "/workspace",
                "env": env,
                "timeout_s": STEP_TIMEOUT_S,
                "async_": False,
            },
        )
    if step["kind"] == "write" and step.get("path") is not None:
        name = normalise(step["path"])
        if name is None:
            raise ValueError(f"write step path {step['path']!r} is outside the repository")
        content = (step.get("content") or "").encode()
        return SandboxCall(
            "sandbox.file.write",
            {
                "request_id": command_id,
                "path": f"/workspace/{name}",
                "content": content,
                "artifact": None,
                "mode": 0o644,
            },
        )
    raise ValueError(f"step kind {step['kind']!r} needs {'a command' if step['kind'] == 'shell' else 'a path'}")


def step_paths(step: dict) -> list[str]:
    """The repository paths a step says it writes (shell steps say nothing; their diff tells)."""
    return [step["path"]] if step["kind"] == "write" and step.get("path") is not None else []

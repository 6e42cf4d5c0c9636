"""The script agent: a deterministic agent that runs a list of steps (shell commands, file writes)
— remediation playbooks, CI-like jobs — as sandbox commands, recorded like any agent's.

A step is data from the request (``ScriptStep``): ``shell`` runs ``/bin/sh -c`` in /workspace with
the attempt's guidance in ``ASTRAFORGE_GUIDANCE``; ``write`` replaces a file's text. A write outside
the run's writable paths is refused before it reaches the sandbox; what a shell command changed is
checked on the diff captured after it (``processors.runs.driver``).
"""

from dataclasses import dataclass

from astraforge.processors.runs.guardrails import normalise

STEP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class SandboxCall:
    """One sandbox command a step becomes: its type and payload (ids chosen by the driver)."""

    type: str
    payload: dict


def step_call(step: dict, command_id: str, guidance: tuple[str, ...]) -> SandboxCall:
    """The sandbox command of one step; ``ValueError`` for a step that names no valid action."""
    if step["kind"] == "shell" and step.get("command"):
        env = {"ASTRAFORGE_GUIDANCE": "\n".join(guidance)} if guidance else {}
        return SandboxCall(
            "sandbox.exec",
            {
                "command_id": command_id,
                "argv": [],
                "shell": step["command"],
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

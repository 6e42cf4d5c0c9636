"""The ``cli`` agent: any coding CLI the sandbox image carries, run from the request's command
template, recorded at the command/output/diff level (its exec's records, and a diff of the
workspace when it ends).

The spec (with the guidance of earlier attempts and the writable paths, as Codex gets it) is
written to ``SPEC_PATH`` before the command runs. A template that names ``{spec_file}`` gets that
path there (shell-quoted); any other template reads the spec on its stdin. The command runs with
``/bin/sh -c`` in /workspace, confined to the writable paths like a script step, with the model
gateway as an OpenAI-compatible endpoint (``OPENAI_BASE_URL``; ``OPENAI_API_KEY`` holds the run's
placeholder, which the egress proxy swaps for the operator's key) for a CLI that wants a model.

The template travels in the run's ``RunCreate`` record as its one ``shell`` step (a field of its
own would need a schema release for nothing the step does not already hold).
"""

import shlex

from astraforge.processors.runs.executors.codex import TOKEN_ENV, placeholder_token
from astraforge.sandbox.profile import HOME

SPEC_PATH = f"{HOME}/.astraforge/spec.md"
SPEC_FILE = "{spec_file}"
AGENT = "agent:cli"


def cli_script(template: str) -> str:
    """The shell script that runs ``template`` with the spec in a file or on stdin."""
    if SPEC_FILE in template:
        return template.replace(SPEC_FILE, shlex.quote(SPEC_PATH))
    return f"exec /bin/sh -c {shlex.quote(template)} < {shlex.quote(SPEC_PATH)}"


def cli_env(run_id: str, upstream: str) -> dict[str, str]:
    placeholder = placeholder_token(run_id)
    return {
        "HOME": HOME,
        "ASTRAFORGE_SPEC_FILE": SPEC_PATH,
        "OPENAI_BASE_URL": f"http://{upstream}/v1",
        "OPENAI_API_KEY": placeholder,
        TOKEN_ENV: placeholder,
    }

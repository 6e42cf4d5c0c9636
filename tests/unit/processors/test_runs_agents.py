"""The pure parts of the codex and cli agents and of the VCS providers."""

import base64
import subprocess

import pytest

from astraforge.processors.runs.executors.cli import SPEC_PATH, cli_script
from astraforge.processors.runs.session import with_guidance
from astraforge.processors.runs.vcs import VcsError, basic, git_header_env, make_provider, project_path


def test_a_template_naming_the_spec_file_gets_its_path_and_any_other_reads_stdin() -> None:
    assert cli_script("tool --message-file {spec_file} --yes") == f"tool --message-file {SPEC_PATH} --yes"
    script = cli_script("tool --yes 'a b' && echo done")
    assert script == f"exec /bin/sh -c 'tool --yes '\"'\"'a b'\"'\"' && echo done' < {SPEC_PATH}"
    # the template runs whole on the spec: both of its commands see it, quoting intact
    shell = cli_script("read first; echo \"got $first\" 'a b'").replace(SPEC_PATH, "/dev/stdin")
    done = subprocess.run(["/bin/sh", "-c", shell], input=b"the spec\n", capture_output=True, check=True)
    assert done.stdout == b"got the spec a b\n"


def test_the_prompt_carries_the_spec_the_guidance_and_the_paths() -> None:
    assert with_guidance("Fix it.\n", (), []) == "Fix it.\n"
    prompt = with_guidance("Fix it.", ("add notes", "", "be brief"), ["calc.py", "docs/"])
    assert prompt.startswith("Fix it.\n\n") and "- add notes\n- be brief\n" in prompt
    assert prompt.endswith("You may change only these paths: calc.py, docs/\n")


def test_git_gets_the_token_in_a_header_through_its_environment() -> None:
    env = git_header_env(basic("x-access-token", "tok"))
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader" and env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic " + base64.b64encode(b"x-access-token:tok").decode()


@pytest.mark.parametrize(
    ("repository", "path"),
    [("https://github.com/acme/calc.git", "acme/calc"), ("https://gitlab.example.com/g/sub/p", "g/sub/p")],
)
def test_project_paths(repository, path) -> None:
    assert project_path(repository) == path


@pytest.mark.parametrize(
    "repository", ["/srv/calc.git", "https://u:p@github.com/a/b", "https://github.com/b", "ssh://x/a/b"]
)
def test_a_repository_an_api_cannot_name_is_refused(repository) -> None:
    with pytest.raises(VcsError):
        project_path(repository)


def test_a_hosted_provider_needs_its_token() -> None:
    assert make_provider("local", None, None) is None
    with pytest.raises(ValueError, match="vcs_token"):
        make_provider("github", None, None)
    assert make_provider("gitlab", None, "t").http.base_url.host == "gitlab.com"

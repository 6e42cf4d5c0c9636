"""The supervisor's command line, parsed without argparse (whose imports cost every sandbox start
~7 ms of CPU): what it accepts and what it refuses."""

import pytest

from astraforge.sandbox.supervisor import parse_args


def test_the_socket_and_the_agent_uid() -> None:
    assert parse_args(["/run/x/supervisor.sock", "--agent-uid", "1000"]) == ("/run/x/supervisor.sock", 1000)
    assert parse_args(["--agent-uid=1001"]) == ("/run/astraforge/supervisor.sock", 1001)


@pytest.mark.parametrize(
    "argv",
    [[], ["/s.sock"], ["--agent-uid"], ["--agent-uid", "x"], ["--agent-uid=-1"], ["a", "b", "--agent-uid", "1"]],
)
def test_anything_else_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)

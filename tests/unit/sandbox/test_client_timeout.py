"""A control call to a supervisor that took the connection and never answers ends in time."""

import os
import socket

import pytest

from astraforge.sandbox.client import PeerIdentity, SupervisorClient, SupervisorTimeout


@pytest.mark.timeout(20)
def test_ping_and_cancel_give_up_on_a_silent_supervisor(tmp_path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / SupervisorClient.SOCKET))
    listener.listen(8)  # the kernel queues connections; nothing ever reads or answers them
    client = SupervisorClient(tmp_path, PeerIdentity(os.getuid(), os.readlink("/proc/self/ns/pid")))
    try:
        for call in (lambda: client.ping(timeout=0.5), lambda: client.cancel("some-command", timeout=0.5)):
            with pytest.raises(SupervisorTimeout):
                call()
        with pytest.raises(
            SupervisorTimeout
        ):  # the default bound (CONTROL_TIMEOUT_S) applies to a caller that passes none
            client.cancel("another-command")
    finally:
        listener.close()

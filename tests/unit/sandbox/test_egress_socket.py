"""The egress socket's mode is set without following a link the sandbox's supervisor could plant."""

import os
import socket
import stat
from pathlib import Path

import pytest

from astraforge.sandbox.egress import chmod_socket


def test_the_socket_itself_is_changed(tmp_path: Path) -> None:
    path = tmp_path / "egress.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        chmod_socket(path, 0o666)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o666


def test_a_link_in_its_place_is_not_followed(tmp_path: Path) -> None:
    host_file = tmp_path / "host-file"
    host_file.write_text("secret")
    host_file.chmod(0o600)
    (tmp_path / "egress.sock").symlink_to(host_file)
    with pytest.raises(OSError):
        chmod_socket(tmp_path / "egress.sock", 0o666)
    assert stat.S_IMODE(os.stat(host_file).st_mode) == 0o600


def test_a_file_in_its_place_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "egress.sock"
    planted.write_text("")
    planted.chmod(0o600)
    with pytest.raises(OSError, match="no longer the egress socket"):
        chmod_socket(planted, 0o666)
    assert stat.S_IMODE(planted.stat().st_mode) == 0o600

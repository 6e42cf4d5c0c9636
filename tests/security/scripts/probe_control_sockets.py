"""Runs inside a sandbox (tests/security/test_control_channel.py): connect to the control
directory's sockets as the agent and ask the supervisor for a command nobody would record.
Prints one line per socket: ``<name> connected <reply>`` or ``<name> refused <error class>``."""

import socket

REQUEST = b'{"id": "unrecorded", "op": "exec", "argv": ["touch", "/workspace/unrecorded"]}\n'

for name in ("supervisor.sock", "egress.sock"):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(f"/run/astraforge/{name}")
        s.sendall(REQUEST)
        print(name, "connected", s.recv(64))
    except OSError as e:
        print(name, "refused", type(e).__name__)

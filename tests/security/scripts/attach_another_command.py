"""Runs inside a sandbox (tests/security/test_control_channel.py): try to take over another running
command of the sandbox with the supervisor's ``attach`` (protocol 2) and read its output, as the agent:
through the supervisor's socket, and through the egress forwarder on 127.0.0.1:3128 (the one port of
the platform's a command can reach). Prints one line per way: ``<way> connected <reply>`` or
``<way> refused <error class>``."""

import json
import socket
import sys

target = sys.argv[1]
request = json.dumps({"id": "hostile", "op": "attach", "target": target, "offset": 0}).encode() + b"\n"

s = socket.socket(socket.AF_UNIX)
try:
    s.connect("/run/astraforge/supervisor.sock")
    s.sendall(request)
    print("supervisor.sock", "connected", s.recv(256))
except OSError as e:
    print("supervisor.sock", "refused", type(e).__name__)
finally:
    s.close()

s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
try:
    s.sendall(request)
    s.shutdown(socket.SHUT_WR)  # all it has to say: the other end answers and closes
    reply = b""
    while len(reply) < 4096 and (data := s.recv(4096)):
        reply += data
    print("forwarder", "connected", reply[:200])
except OSError as e:
    print("forwarder", "refused", type(e).__name__)
finally:
    s.close()

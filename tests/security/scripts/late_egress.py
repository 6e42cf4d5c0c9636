"""Runs detached inside a sandbox (tests/security/test_review_findings.py): opens a connection to
the egress forwarder its command was given (``$HTTP_PROXY``) while that command runs, says so in
/workspace/connected, waits for /workspace/go (after the command ended) and then sends a request
on that connection. Writes what came back to /workspace/late.out: the status, or ``closed``."""

import os
import socket
import time
import urllib.parse

proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
conn = socket.create_connection((proxy.hostname, proxy.port), timeout=30)
open("/workspace/connected", "w").close()
while not os.path.exists("/workspace/go"):
    time.sleep(0.02)
try:
    conn.sendall(b"GET http://denied.example/late HTTP/1.1\r\nHost: denied.example\r\n\r\n")
    answer = conn.recv(4096).split(b" ")
    outcome = answer[1].decode() if len(answer) > 1 else "closed"
except OSError:
    outcome = "closed"
with open("/workspace/late.out", "w") as f:
    f.write(outcome)

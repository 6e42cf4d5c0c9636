"""Run inside a sandbox, detached: stop (SIGSTOP) every tar and gzip that appears.

The platform's snapshot command (``tar -czf - .``) runs as the agent's uid, so the agent may signal
it: a stopped snapshot never ends and holds whatever the platform gave it while it waits.
"""

import os
import signal

while True:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                comm = f.read().strip()
            if comm in ("tar", "gzip"):
                os.kill(int(name), signal.SIGSTOP)
        except OSError:
            continue

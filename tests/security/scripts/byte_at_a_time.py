"""Run inside a sandbox: write N bytes to stdout one write(2) at a time, pausing between writes, so
each byte can reach the supervisor's pipe on its own."""

import os
import sys
import time

for _ in range(int(sys.argv[1])):
    os.write(1, b"x")
    time.sleep(0.0002)

"""Raw concurrent sandbox starts, the baseline next to the platform's cold creates per second
(``bench/live_sandboxes.py``): ``n`` starts from ``clients`` threads at once, with no platform
in the way, so the run shows how many starts per second the engine itself gives on this host.

  docker:  hardened ``docker run -d`` through docker-py (the engine's create + start per container)
  bwrap:   ``bwrap`` with the platform's profile (user, pid, net, ipc, uts and cgroup namespaces,
           read-only rootfs, three size-capped tmpfs, cap-drop ALL, the seccomp filter), timed
           until bwrap reports the sandbox exists (its ``--json-status-fd``)

Removal is not timed (the platform's creates do not include it either).
"""

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

from astraforge.sandbox.profile import SecurityProfile
from astraforge.sandbox.seccomp import filter_program


def concurrently(start: Callable[[], object], n: int, clients: int) -> tuple[list[object], list[float], float]:
    """``n`` calls of ``start`` from ``clients`` threads: what each returned, each call's seconds,
    and the wall-clock seconds of them all."""
    per_client = [n // clients + (i < n % clients) for i in range(clients)]

    def run(count: int) -> list[tuple[object, float]]:
        done = []
        for _ in range(count):
            t = time.perf_counter()
            made = start()
            done.append((made, time.perf_counter() - t))
        return done

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [x for part in pool.map(run, per_client) for x in part]
    return [m for m, _ in results], [s for _, s in results], time.perf_counter() - began


def docker_runs(client: docker.DockerClient, image: str, hardened: dict, n: int, clients: int):
    """Hardened ``docker run -d`` ``n`` times from ``clients`` threads (containers removed after)."""
    made, took, wall = concurrently(lambda: client.containers.run(image, ["sleep", "infinity"], **hardened), n, clients)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda c: c.remove(force=True), made))
    return took, wall


def bwrap_options(rootfs: Path, seccomp_fd: int, status_fd: int) -> list[str]:
    """The platform's bwrap profile (``sandbox/providers/bwrap.py``), run directly by root."""
    p = SecurityProfile()
    argv = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup", "--hostname", "sandbox", "--new-session", "--cap-drop", "ALL"]
    argv += ["--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev"]
    for path, mb in p.tmpfs().items():
        argv += ["--perms", "0755", "--size", str(mb * 1024 * 1024), "--tmpfs", path]
    argv += ["--seccomp", str(seccomp_fd), "--json-status-fd", str(status_fd), "sleep", "infinity"]
    return ["prlimit", f"--as={p.memory_mb * 1024 * 1024}", f"--nproc={p.pids}", *argv]


def bwrap_start(rootfs: Path, seccomp: bytes) -> subprocess.Popen:
    """One raw bwrap sandbox, returned once bwrap says it exists."""
    seccomp_r, seccomp_w = os.pipe()
    os.write(seccomp_w, seccomp)
    os.close(seccomp_w)
    status_r, status_w = os.pipe()
    try:
        proc = subprocess.Popen(
            bwrap_options(rootfs, seccomp_r, status_w),
            pass_fds=(seccomp_r, status_w),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(seccomp_r)
        os.close(status_w)
    try:
        poller = select.poll()
        poller.register(status_r, select.POLLIN)
        if not poller.poll(10_000) or not os.read(status_r, 4096):
            raise RuntimeError("raw bwrap did not start")
    finally:
        os.close(status_r)
    return proc


def bwrap_runs(rootfs: Path, n: int, clients: int):
    """``n`` raw bwrap starts from ``clients`` threads (killed after)."""
    seccomp = filter_program()
    made, took, wall = concurrently(lambda: bwrap_start(rootfs, seccomp), n, clients)
    for proc in made:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
    return took, wall

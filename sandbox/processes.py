"""A process named by more than its pid: pids are reused (this VM's pid_max is 32768, and a test run
starts tens of thousands of processes), so a pid written down earlier may name someone else's process
now. A ``ProcessRef`` keeps the pid with the process's start time (clock ticks since boot, field 22 of
/proc/<pid>/stat) and the boot id; it signals only the process it was taken from, through a pidfd that
pins the process while the identity is checked."""

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if there is no such process or it has
    exited (a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command may hold spaces and parentheses
    return None if fields[0] == "Z" else int(fields[19])


def boot_id() -> str:
    return BOOT_ID.read_text().strip()


@dataclass(frozen=True, slots=True)
class ProcessRef:
    pid: int
    started: int
    boot: str

    @classmethod
    def of(cls, pid: int) -> "ProcessRef":
        started = start_time(pid)
        if started is None:
            raise ProcessLookupError(pid)
        return cls(pid, started, boot_id())

    @classmethod
    def from_json(cls, value: dict) -> "ProcessRef | None":
        """The reference written by ``to_json``; None for a record without an identity (written before
        identities were kept), which is never trusted with a signal."""
        try:
            return cls(int(value["pid"]), int(value["started"]), str(value["boot"]))
        except (KeyError, TypeError, ValueError):
            return None

    def to_json(self) -> dict:
        return {"pid": self.pid, "started": self.started, "boot": self.boot}

    def alive(self) -> bool:
        """Whether the very process this names still runs."""
        return self.boot == boot_id() and start_time(self.pid) == self.started

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Signal this process (never a later one with its pid); False if it is gone."""
        if self.boot != boot_id():
            return False
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return False
        try:
            if start_time(self.pid) != self.started:  # the pid names another process now
                return False
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, sig)
            return True
        finally:
            os.close(fd)

"""Runs inside the sandbox (python3 standard library only): confine a command's writes with Landlock,
then exec it. The driver passes this file's text as ``python3 -I -c`` (isolated: no user site, no
environment, nothing the agent could plant runs first), so the agent cannot replace it.

    python3 -I -c <this file> DIR... -- /bin/sh -c COMMAND

Every DIR (made if missing), /tmp, $HOME and /dev stay writable; every other path — the rest of
/workspace included — is read-only to the command and to everything it starts, for good (Landlock
rules only ever narrow, and are inherited). Reads are not restricted. Landlock grants creation and
removal per directory, so a writable *file* is confined here to its directory; the exact list is
held by the platform's check of each step's diff.

Fails closed: without Landlock (a kernel older than 5.13, or disabled) the command does not run
(exit 126).
"""

import ctypes
import os
import sys

CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446  # x86_64 and every 64-bit arch's generic table
RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 1, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM, REFER, TRUNCATE = 1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14
WRITES = WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO
WRITES |= MAKE_BLOCK | MAKE_SYM


class PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def fail(message: str) -> None:
    sys.stderr.write(f"astraforge confine: {message}\n")
    sys.exit(126)


def confine(writable: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        fail(f"Landlock is not available ({os.strerror(ctypes.get_errno())}): refusing to run unconfined")
    handled = WRITES | (REFER if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0)
    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset < 0:
        fail(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    for path in [*writable, "/tmp", os.environ.get("HOME", "/home/sandbox"), "/dev"]:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # nothing to grant on a path that is not there
        rule = PathBeneath(handled, fd)
        if libc.syscall(ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0) < 0:
            fail(f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}")
        os.close(fd)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 or libc.syscall(RESTRICT_SELF, ruleset, 0) < 0:
        fail(f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    os.close(ruleset)


def main(argv: list[str]) -> None:
    if "--" not in argv:
        fail("usage: confine DIR... -- COMMAND...")
    split = argv.index("--")
    writable, command = argv[:split], argv[split + 1 :]
    for path in writable:
        os.makedirs(path, exist_ok=True)
    confine(writable)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])

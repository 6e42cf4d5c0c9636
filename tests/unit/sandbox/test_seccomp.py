"""The bwrap seccomp filter, run by the real kernel: a child process installs it and calls a
denied syscall, an allowed one, and the program is walked by hand for the jump targets."""

import ctypes
import errno
import os
import struct

from astraforge.sandbox.seccomp import DENIED_X86_64, RET_ALLOW, RET_EPERM, filter_program

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _run_filtered(nr: int) -> int:
    """errno of syscall ``nr`` (0 if it ran) in a child under the filter."""
    code = filter_program()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(code, len(code))
        prog = _Program(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
            os._exit(99)
        ctypes.set_errno(0)
        result = libc.syscall(nr, ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
        os.write(write_fd, struct.pack("i", ctypes.get_errno() if result == -1 else 0))
        os._exit(0)
    os.close(write_fd)
    data = os.read(read_fd, 4)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return struct.unpack("i", data)[0]


def test_a_denied_syscall_answers_eperm_and_others_run() -> None:
    assert _run_filtered(DENIED_X86_64["keyctl"]) == errno.EPERM
    assert _run_filtered(DENIED_X86_64["userfaultfd"]) == errno.EPERM
    assert _run_filtered(39) == 0  # getpid


def test_every_jump_lands_on_the_refusal() -> None:
    code = filter_program()
    insns = [struct.unpack("=HBBI", code[i : i + 8]) for i in range(0, len(code), 8)]
    assert insns[-2][3] == RET_ALLOW and insns[-1][3] == RET_EPERM
    for index, (op, jt, _, k) in enumerate(insns):
        if op == 0x15 and k in DENIED_X86_64.values():
            assert index + 1 + jt == len(insns) - 1, (index, k)

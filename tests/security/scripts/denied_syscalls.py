"""Runs inside a sandbox (tests/security/test_review_findings.py): calls syscalls that the
sandbox's seccomp filter must refuse (docker's default profile refuses them all to a process
without capabilities) and prints, one a line, ``name errno-name`` or ``name ran``.

Numbers are x86_64's; the arguments are harmless (each call would fail anyway if it ran: the
point is whether the kernel code behind it is reachable at all)."""

import ctypes
import errno

CALLS = {
    "keyctl": (250, 0), "add_key": (248, 0), "request_key": (249, 0), "bpf": (321, 0),
    "userfaultfd": (323, 0), "perf_event_open": (298, 0), "unshare": (272, 0x10000000), "setns": (308, -1),
    "mount": (165, 0), "open_by_handle_at": (304, -1), "kexec_load": (246, 0), "init_module": (175, 0),
}  # fmt: skip

libc = ctypes.CDLL(None, use_errno=True)
for name, (nr, arg) in CALLS.items():
    ctypes.set_errno(0)
    result = libc.syscall(nr, ctypes.c_long(arg), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    print(name, errno.errorcode.get(ctypes.get_errno(), "ran") if result == -1 else "ran")

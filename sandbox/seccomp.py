"""A seccomp filter for sandboxes whose runtime installs none itself (bubblewrap), refusing what
docker's default profile refuses to a process without capabilities.

A classic BPF program, built here without libseccomp: foreign architectures (i386 through
``int 0x80``, x32) would reach the kernel under other syscall numbers, so they are refused
whole; then each listed syscall answers EPERM and everything else is allowed (a denylist, as
docker's profile is for these calls). The list names kernel surface that is not namespaced or
that has been a frequent way to a kernel exploit: keyrings, bpf, perf, userfaultfd, io_uring,
namespaces and mounts, modules, kexec, clocks, swap, quotas, NUMA policy.

Only x86_64 has a table; elsewhere ``filter_program`` raises, so a sandbox never starts without
the filter it was promised."""

import platform
import struct

from astraforge.errors import AstraForgeError

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
LD_W_ABS, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06
RET_ALLOW, RET_EPERM = 0x7FFF0000, 0x00050000 | 1
DENIED_X86_64 = {
    "syslog": 103, "uselib": 134, "ustat": 136, "sysfs": 139, "pivot_root": 155,
    "_sysctl": 156, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164, "mount": 165,
    "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170, "setdomainname": 171,
    "iopl": 172, "ioperm": 173, "create_module": 174, "init_module": 175, "delete_module": 176,
    "get_kernel_syms": 177, "query_module": 178, "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212,
    "clock_settime": 227, "mbind": 237, "set_mempolicy": 238, "get_mempolicy": 239, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "migrate_pages": 256, "unshare": 272, "move_pages": 279,
    "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "clock_adjtime": 305, "setns": 308, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
}  # fmt: skip


class NoSeccompFilter(AstraForgeError, RuntimeError):
    """No filter is defined for this machine's architecture."""


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def filter_program() -> bytes:
    """The filter as the kernel (and bwrap's ``--seccomp FD``) takes it: ``struct sock_filter[]``."""
    if platform.machine() != "x86_64":
        raise NoSeccompFilter(f"no seccomp filter for {platform.machine()}: use the docker provider here")
    numbers = sorted(DENIED_X86_64.values())
    n = len(numbers)
    program = [
        _insn(LD_W_ABS, 4),  # seccomp_data.arch
        _insn(JEQ_K, AUDIT_ARCH_X86_64, jt=1),
        _insn(RET_K, RET_EPERM),  # another architecture's numbers: refused whole
        _insn(LD_W_ABS, 0),  # seccomp_data.nr
        _insn(JGE_K, X32_SYSCALL_BIT, jt=n + 1),  # x32: refused whole
        *(_insn(JEQ_K, nr, jt=n - i) for i, nr in enumerate(numbers)),
        _insn(RET_K, RET_ALLOW),
        _insn(RET_K, RET_EPERM),
    ]
    return b"".join(program)

#!/usr/bin/env python3
"""Runs a command where the kernel refuses io_uring, as Docker's default seccomp profile does.

    deny_io_uring.py EPERM|ENOSYS COMMAND [ARG...]

Installs a seccomp filter (no privileges needed: it sets no_new_privs first) under which
io_uring_setup, io_uring_enter and io_uring_register fail with the given errno and every
other system call is allowed, then executes COMMAND, which keeps the filter. x86_64 only.
"""
import ctypes
import errno
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
# io_uring_setup, io_uring_enter, io_uring_register on x86_64.
IO_URING_CALLS = (425, 426, 427)

LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
RET_K = 0x06  # BPF_RET | BPF_K


def insn(code, jt, jf, k):
    return struct.pack("=HBBI", code, jt, jf, k)


def program(error):
    n = len(IO_URING_CALLS)
    prog = [
        insn(LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        insn(JEQ_K, 0, n + 1, AUDIT_ARCH_X86_64),  # another arch: allow
        insn(LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    for i, nr in enumerate(IO_URING_CALLS):
        prog.append(insn(JEQ_K, n - i, 0, nr))  # to the deny below
    prog.append(insn(RET_K, 0, 0, SECCOMP_RET_ALLOW))
    prog.append(insn(RET_K, 0, 0, SECCOMP_RET_ERRNO | error))
    return prog


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("EPERM", "ENOSYS"):
        sys.exit(__doc__)
    if os.uname().machine != "x86_64":
        sys.exit("deny_io_uring.py: x86_64 only")
    prog = program(getattr(errno, sys.argv[1]))
    filters = ctypes.create_string_buffer(b"".join(prog))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("=HxxxxxxQ", len(prog), ctypes.addressof(filters))
    fprog_buf = ctypes.create_string_buffer(fprog)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        sys.exit(f"deny_io_uring.py: no_new_privs: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog_buf), 0, 0) != 0:
        sys.exit(f"deny_io_uring.py: seccomp: {os.strerror(ctypes.get_errno())}")
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()

"""A 129-byte static ELF that the pause-holder execs, so a pod's namespaces cost a
few KiB instead of a forked Python interpreter.

The program (x86-64, written for pycri; no libc):

    _start: mov $34, %eax      # b8 22 00 00 00   pause()
            syscall            # 0f 05
            jmp _start         # eb f7

It is started with SIGCHLD set to SIG_IGN (kept across execve), so the kernel
reaps the children of the pod's PID 1 at once (no zombies). It has no PDEATHSIG: it
outlives its shim (runtime.shim.pause). It has no
signal handlers: SIGKILL stops it (as PID 1 of a pod PID namespace, only SIGKILL
from the shim's namespace can). Other architectures keep the Python pause loop.
"""
from __future__ import annotations

import os
import platform
import signal
import struct

_CODE_X86_64 = bytes.fromhex("b822000000" "0f05" "ebf7")
_BASE = 0x400000
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")


def elf_image() -> bytes | None:
    """The executable for this machine, or None when there is none."""
    if platform.machine() != "x86_64":
        return None
    code_off = _EHDR.size + _PHDR.size
    total = code_off + len(_CODE_X86_64)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8  # 64-bit, LE, v1, SysV
    ehdr = _EHDR.pack(ident, 2, 0x3E, 1, _BASE + code_off, _EHDR.size, 0, 0, _EHDR.size,
                      _PHDR.size, 1, 0, 0, 0)
    phdr = _PHDR.pack(1, 5, 0, _BASE, _BASE, total, total, 0x1000)  # PT_LOAD, R+X
    return ehdr + phdr + _CODE_X86_64


def exec_tiny_pause(name: str) -> None:
    """execve the tiny pause program; returns only if that is impossible here."""
    image = elf_image()
    if image is None:
        return
    try:
        fd = os.memfd_create("pycri-pause", os.MFD_CLOEXEC)
        os.write(fd, image)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execve(fd, ["pycri-pause", name], {})
    except OSError:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        return


"""cgroup v2 device control: the v1 allow-list ("c 1:3 rwm") as a BPF_PROG_TYPE_CGROUP_DEVICE
program attached to the cgroup (v2 has no devices.allow/deny files).

The program sees (type, access, major, minor) of each mknod/open of a device node and allows it
only if one rule matches: same type (or "a"), same major/minor (or "*") and every requested
access bit among the rule's. Everything else is denied (EPERM), as after "devices.deny a".
Attaching again to the same cgroup replaces the program (non-multi attach).
"""
from __future__ import annotations

import ctypes
import os
import platform
import struct

from pycri_common.errors import InvalidArgument

_NR_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_DEV_TYPE = {"b": 1, "c": 2}            # BPF_DEVCG_DEV_BLOCK / _CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}      # BPF_DEVCG_ACC_MKNOD / _READ / _WRITE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


_LDX_W = 0x61     # dst = *(u32 *)(src + off)
_AND_K = 0x57     # dst &= imm (64-bit)
_RSH_K = 0x77     # dst >>= imm
_MOV_K = 0xB7     # dst = imm
_MOV_X = 0xBF     # dst = src
_JNE_K = 0x55     # if dst != imm: pc += off
_EXIT = 0x95


def parse_rule(rule: str) -> tuple[str, int | None, int | None, int]:
    """'c 1:3 rwm' -> ('c', 1, 3, access bits); '*' -> None."""
    try:
        kind, numbers, access = rule.split()
        major_s, minor_s = numbers.split(":")
        major = None if major_s == "*" else int(major_s)
        minor = None if minor_s == "*" else int(minor_s)
    except ValueError:
        raise InvalidArgument(f"device rule {rule!r}: expected 'c|b|a MAJOR:MINOR rwm'") from None
    if kind not in ("a", "b", "c") or not access or set(access) - set(_ACCESS):
        raise InvalidArgument(f"device rule {rule!r}: expected 'c|b|a MAJOR:MINOR rwm'")
    bits = 0
    for letter in access:
        bits |= _ACCESS[letter]
    return kind, major, minor, bits


def build_program(rules: list[str]) -> bytes:
    """The BPF instructions of an allow-list (r2 type, r3 access, r4 major, r5 minor)."""
    prog = [
        _insn(_LDX_W, 2, 1, 0), _insn(_AND_K, 2, imm=0xFFFF),   # type
        _insn(_LDX_W, 3, 1, 0), _insn(_RSH_K, 3, imm=16),       # access
        _insn(_LDX_W, 4, 1, 4), _insn(_LDX_W, 5, 1, 8),         # major, minor
    ]
    for rule in rules:
        kind, major, minor, bits = parse_rule(rule)
        checks: list[bytes] = []
        if kind != "a":
            checks.append(_insn(_JNE_K, 2, imm=_DEV_TYPE[kind]))
        # requested access must be a subset: (access & ~bits) == 0
        checks += [_insn(_MOV_X, 0, 3), _insn(_AND_K, 0, imm=0xFFFF & ~bits),
                   _insn(_JNE_K, 0, imm=0)]
        if major is not None:
            checks.append(_insn(_JNE_K, 4, imm=major))
        if minor is not None:
            checks.append(_insn(_JNE_K, 5, imm=minor))
        allow = [_insn(_MOV_K, 0, imm=1), _insn(_EXIT)]
        block = checks + allow
        for i, ins in enumerate(checks):  # every failed check jumps past this rule
            if ins[0] == _JNE_K:
                off = len(block) - i - 1
                block[i] = ins[:2] + struct.pack("<h", off) + ins[4:]
        prog += block
    prog += [_insn(_MOV_K, 0, imm=0), _insn(_EXIT)]
    return b"".join(prog)


def _bpf(cmd: int, attr: bytes) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(38, f"bpf: no syscall number known for {platform.machine()}")
    buf = ctypes.create_string_buffer(attr, 128)
    res = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), buf, ctypes.c_uint(128))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return int(res)


def attach_device_filter(cgroup_dir: str, rules: list[str]) -> None:
    """Load the allow-list program and attach it to `cgroup_dir` (replacing an earlier one)."""
    code = build_program(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(4096)
    load = struct.pack("<IIQQIIQ", _BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                       ctypes.addressof(insns), ctypes.addressof(license_), 0, 0, 0)
    try:
        prog_fd = _bpf(_BPF_PROG_LOAD, load)
    except OSError:
        # again with the verifier's log, for a message that says why
        load = struct.pack("<IIQQIIQ", _BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                           ctypes.addressof(insns), ctypes.addressof(license_), 1,
                           len(log), ctypes.addressof(log))
        try:
            prog_fd = _bpf(_BPF_PROG_LOAD, load)
        except OSError as e:
            raise InvalidArgument(f"devices: cannot load the cgroup v2 device filter: "
                                  f"{e.strerror}: {log.value.decode(errors='replace')}") from e
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _bpf(_BPF_PROG_ATTACH, struct.pack("<IIII", cg_fd, prog_fd, _BPF_CGROUP_DEVICE, 0))
        except OSError as e:
            raise InvalidArgument(f"devices: cannot attach the device filter to {cgroup_dir}: "
                                  f"{e.strerror}") from e
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)

"""Seccomp: the RuntimeDefault profile (runtime/data/seccomp_default.json) and loading OCI-format
profiles with libseccomp2 through ctypes.

- ``runtime_default_profile(capabilities)`` -> plain OCI profile dict for the daemon to put
  into ContainerSpec["seccomp"] (entries of the data file that depend on capabilities or the
  architecture are resolved here).
- ``load_localhost_profile(path)`` reads a Localhost profile (JSON) for the daemon.
- ``SeccompFilter(profile)`` compiles a profile in the container init (errors come out here,
  before the container is reported ready); ``.load()`` installs it, as the last step before
  execve. Unknown syscall names are skipped (as runc does), rules whose action equals the
  default action are skipped, several conditions on one argument index become separate rules
  (OR), and libseccomp is told not to set no_new_privs itself (the spec decides that).
- ``compiled(profile)`` returns a cached SeccompFilter: a shim may call it once per profile
  before forking inits (saves the ~4 ms compile per container; children inherit the ctx).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
from typing import Any

from pycri_common.bounded_json import load_json
from pycri_common.errors import InvalidArgument
from pycri_common.outside_files import read_regular_file
from runtime import syscalls

MAX_PROFILE_BYTES = 4 * 1024 * 1024
DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "seccomp_default.json")

_ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_OPS: dict[str, int] = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}
_SCMP_FLTATR_CTL_NNP = 3
_EPERM = 1


def runtime_default_profile(capabilities: list[str],
                            machine: str | None = None) -> dict[str, Any]:
    """The RuntimeDefault profile as a plain OCI profile for a container with `capabilities`
    (its bounding set, names like CAP_SYS_ADMIN)."""
    with open(DATA_FILE) as f:
        data = json.load(f)
    arch = machine or platform.machine()
    caps = set(capabilities)
    syscalls = []
    for rule in data["syscalls"]:
        inc = rule.get("includes", {})
        exc = rule.get("excludes", {})
        if inc.get("caps") and not caps.intersection(inc["caps"]):
            continue
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if exc.get("caps") and caps.intersection(exc["caps"]):
            continue
        if exc.get("arches") and arch in exc["arches"]:
            continue
        out = {"names": list(rule["names"]), "action": rule["action"]}
        if "args" in rule:
            out["args"] = [dict(a) for a in rule["args"]]
        if "errnoRet" in rule:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    return {"defaultAction": data["defaultAction"], "defaultErrnoRet": data["defaultErrnoRet"],
            "architectures": list(data["archMap"].get(arch, [])), "syscalls": syscalls}


def load_localhost_profile(path: str) -> dict[str, Any]:
    """Read a Localhost seccomp profile (OCI JSON; a regular file of at most
    MAX_PROFILE_BYTES: a FIFO or device is refused, never waited on). Errors name the file."""
    data = read_regular_file(path, MAX_PROFILE_BYTES, "seccomp profile")
    prof = load_json(data, f"seccomp profile {path}", MAX_PROFILE_BYTES)
    if not isinstance(prof, dict) or not isinstance(prof.get("defaultAction"), str):
        raise InvalidArgument(f"seccomp profile {path}: needs a defaultAction")
    return prof


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


_lib: ctypes.CDLL | None = None


def _libseccomp() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:  # the soname first: find_library would run ldconfig in a subprocess
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError:
            name = ctypes.util.find_library("seccomp")
            if name is None:
                raise InvalidArgument("seccomp: libseccomp2 is not installed") from None
            lib = ctypes.CDLL(name, use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        _lib = lib
    return _lib


def _action(name: Any, errno_ret: Any, default_errno: int, field: str) -> int:
    if name not in _ACTIONS:
        raise InvalidArgument(f"seccomp {field}: unsupported action {name!r}")
    base = _ACTIONS[name]
    if name == "SCMP_ACT_ERRNO":
        return base | ((int(errno_ret) if errno_ret is not None else default_errno) & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return base | ((int(errno_ret) if errno_ret is not None else default_errno) & 0xFFFF)
    return base


class SeccompFilter:
    """A compiled (not yet loaded) filter. Build it early, load() it last."""

    def __init__(self, profile: dict[str, Any]) -> None:
        lib = _libseccomp()
        default_errno = int(profile.get("defaultErrnoRet") or _EPERM)
        self.default_action = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"),
                                      default_errno, "defaultAction")
        if profile.get("listenerPath"):
            raise InvalidArgument("seccomp: SCMP_ACT_NOTIFY listeners are not supported")
        ctx = lib.seccomp_init(self.default_action)
        if not ctx:
            raise InvalidArgument("seccomp: seccomp_init failed (bad defaultAction?)")
        self._ctx: int | None = ctx
        self._program: bytes | None = None
        try:
            if lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 0) != 0:
                raise InvalidArgument("seccomp: cannot disable libseccomp's no_new_privs")
            for arch in profile.get("architectures") or []:
                token = lib.seccomp_arch_resolve_name(
                    arch.removeprefix("SCMP_ARCH_").lower().encode())
                if token == 0:
                    raise InvalidArgument(f"seccomp architectures: unknown {arch!r}")
                rc = lib.seccomp_arch_add(ctx, token)
                if rc not in (0, -17):  # -EEXIST: the native arch is already there
                    raise InvalidArgument(f"seccomp architectures: cannot add {arch}: "
                                          f"{os.strerror(-rc)}")
            for i, rule in enumerate(profile.get("syscalls") or []):
                self._add_rule(lib, rule, default_errno, f"syscalls[{i}]")
        except BaseException:
            self.release()
            raise

    def _add_rule(self, lib: ctypes.CDLL, rule: dict[str, Any], default_errno: int,
                  field: str) -> None:
        if not isinstance(rule, dict):
            raise InvalidArgument(f"seccomp {field}: must be an object")
        action = _action(rule.get("action"), rule.get("errnoRet"), default_errno,
                         field + ".action")
        if action == self.default_action:
            return
        names = list(rule.get("names") or []) + ([rule["name"]] if rule.get("name") else [])
        conds: list[_ArgCmp] = []
        for j, a in enumerate(rule.get("args") or []):
            op = _OPS.get(a.get("op"))
            if op is None:
                raise InvalidArgument(f"seccomp {field}.args[{j}]: unknown op {a.get('op')!r}")
            conds.append(_ArgCmp(int(a["index"]), op, int(a.get("value", 0)),
                                 int(a.get("valueTwo", 0))))
        indexes = [c.arg for c in conds]
        groups = [conds] if len(set(indexes)) == len(indexes) else [[c] for c in conds]
        for name in names:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # unknown to this libseccomp/arch: skipped like runc
                continue
            for group in groups:
                arr = (_ArgCmp * max(len(group), 1))(*group)
                rc = lib.seccomp_rule_add_array(self._ctx, action, nr, len(group), arr)
                if rc != 0:
                    raise InvalidArgument(f"seccomp {field}: cannot add rule for {name}: "
                                          f"{os.strerror(-rc)}")

    def program(self) -> bytes:
        """The filter as the BPF program the kernel runs (seccomp_export_bpf), generated once:
        seccomp_load would generate it on every load (~1.5 ms for the default profile), in
        every forked init and exec. Compiled in the shim (runtime.shim.spawn), the children
        get it with their copy of the shim's memory."""
        if self._program is None:
            if self._ctx is None:
                raise InvalidArgument("seccomp: filter already released")
            fd = os.memfd_create("pycri-seccomp-bpf", os.MFD_CLOEXEC)
            try:
                rc = _libseccomp().seccomp_export_bpf(self._ctx, fd)
                if rc != 0:
                    raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
                size = os.fstat(fd).st_size
                self._program = os.pread(fd, size, 0)
            finally:
                os.close(fd)
        return self._program

    def load(self) -> None:
        """Install the filter on this thread (inherited across fork and execve)."""
        syscalls.load_seccomp_program(self.program())

    def release(self) -> None:
        if self._ctx is not None:
            _libseccomp().seccomp_release(self._ctx)
            self._ctx = None


_CACHE: dict[str, SeccompFilter] = {}
_CACHE_MAX = 8


def compiled(profile: dict[str, Any]) -> SeccompFilter:
    """A compiled filter for `profile`, cached by content (never release() the result)."""
    key = json.dumps(profile, sort_keys=True)
    filt = _CACHE.get(key)
    if filt is None:
        filt = SeccompFilter(profile)
        filt.program()   # now, while libseccomp and the host's files are at hand
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE))).release()
        _CACHE[key] = filt
    return filt

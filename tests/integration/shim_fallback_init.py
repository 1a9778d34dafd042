"""A minimal stand-in for runtime.container_init (contract 5), tests only.

The shim tests use it through PYCRI_TEST_INIT_MODULE so that the shim's
lifecycle, stdio, exec and exit handling can be tested on their own: it joins or
creates the namespaces the spec lists, chroots into rootfs.lower[0] (no overlay,
no mounts, no security settings), reports and waits at the gate like the real init.
"""
from __future__ import annotations

import fcntl
import json
import os
import termios
from typing import Any, NoReturn

from runtime import syscalls

_TYPES = {"network": "net", "ipc": "ipc", "uts": "uts", "pid": "pid", "mount": "mnt",
          "cgroup": "cgroup"}


def _report(fd: int, msg: dict[str, Any]) -> None:
    os.write(fd, json.dumps(msg).encode() + b"\n")


def _fork_for_pid_ns(report_fd: int, close: tuple[int, ...]) -> None:
    """Fork; the parent reports the child's host pid and exits."""
    pid = os.fork()
    if pid:
        _report(report_fd, {"pid": pid})
        os._exit(0)


def run(spec: dict[str, Any], stdio: tuple[int, int, int], gate_fd: int,
        report_fd: int) -> NoReturn:
    try:
        for target, fd in enumerate(stdio):
            if fd != target:
                os.dup2(fd, target)
        new_flags = 0
        pid_ns = False
        for ns in spec.get("namespaces") or []:
            name = _TYPES[ns["type"]]
            if ns.get("path"):
                syscalls.setns_path(ns["path"], syscalls.NAMESPACE_FLAGS[name])
            else:
                new_flags |= syscalls.NAMESPACE_FLAGS[name]
            pid_ns = pid_ns or name == "pid"
        if new_flags:
            syscalls.unshare(new_flags)
        if new_flags & syscalls.CLONE_NEWNS:
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        if pid_ns:
            _fork_for_pid_ns(report_fd, ())
        else:
            _report(report_fd, {"pid": os.getpid()})
        if new_flags & syscalls.CLONE_NEWUTS and spec.get("hostname"):
            syscalls.sethostname(spec["hostname"])
        os.chroot(spec["rootfs"]["lower"][0])
        proc = spec["process"]
        os.chdir(proc.get("cwd") or "/")
        if proc.get("tty"):
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        _report(report_fd, {"ready": True, "user": {"uid": 0, "gid": 0, "groups": []}})
        if os.read(gate_fd, 1) != b"s":
            os._exit(1)
        env = dict(e.split("=", 1) for e in proc.get("env") or [])
        try:
            os.execvpe(proc["args"][0], proc["args"], env)
        except OSError as e:
            _report(report_fd, {"error": f"exec {proc['args'][0]}: {e.strerror}",
                                "kind": "InvalidArgument"})
            os._exit(127)
    except Exception as e:  # noqa: BLE001
        _report(report_fd, {"error": f"{type(e).__name__}: {e}", "kind": "PycriError"})
        os._exit(1)
    os._exit(1)


def exec_into(container_pid: int, spec: dict[str, Any], process: dict[str, Any],
              stdio: tuple[int, int, int], report_fd: int) -> NoReturn:
    try:
        for target, fd in enumerate(stdio):
            if fd != target:
                os.dup2(fd, target)
        root = os.open(f"/proc/{container_pid}/root", os.O_RDONLY | os.O_CLOEXEC)
        own = os.readlink("/proc/self/ns/pid")
        theirs = os.readlink(f"/proc/{container_pid}/ns/pid")
        for name in ("ipc", "uts", "net", "pid", "mnt"):
            if os.readlink(f"/proc/self/ns/{name}") != os.readlink(
                    f"/proc/{container_pid}/ns/{name}"):
                syscalls.setns_path(f"/proc/{container_pid}/ns/{name}",
                                    syscalls.NAMESPACE_FLAGS[name])
        os.fchdir(root)
        os.chroot(".")
        os.close(root)
        if own != theirs:
            _fork_for_pid_ns(report_fd, ())
        else:
            _report(report_fd, {"pid": os.getpid()})
        os.chdir(process.get("cwd") or spec["process"].get("cwd") or "/")
        if process.get("tty"):
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        env = dict(e.split("=", 1) for e in (process.get("env") or spec["process"].get("env")
                                              or []))
        try:
            os.execvpe(process["args"][0], process["args"], env)
        except OSError as e:
            _report(report_fd, {"error": f"exec {process['args'][0]}: {e.strerror}",
                                "kind": "InvalidArgument"})
            os._exit(127)
    except Exception as e:  # noqa: BLE001
        _report(report_fd, {"error": f"{type(e).__name__}: {e}", "kind": "PycriError"})
        os._exit(1)
    os._exit(1)

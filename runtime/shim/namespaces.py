"""Pod namespaces: which ones a PodSpec asks for, pinning and unpinning them.

A namespace is pinned by bind-mounting /proc/<pause>/ns/<type> onto an empty
file <ns_dir>/<type>, so it outlives every process in it and can be joined
(setns) and cleaned up by path. unpin_all() is safe to call from the daemon
when the shim is gone (it only needs stdlib + runtime.syscalls).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

from runtime import syscalls
from runtime.pod_spec import PodSpec

#: /proc ns name -> clone flag, in the order they are pinned
POD_NS_TYPES = ("net", "ipc", "uts", "pid")


def pod_namespace_types(pod: PodSpec) -> list[str]:
    """The namespaces the pause-holder creates for this PodSpec."""
    return pod.namespaces.pause_types()


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """ip link set lo up, in the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        ifreq = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", ifreq)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def pin_path(source: str, target: str) -> None:
    """Bind-mount a namespace file (/proc/.../ns/<type>, /proc/self/fd/N) onto target
    (created empty if missing)."""
    os.makedirs(os.path.dirname(target), mode=0o711, exist_ok=True)
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    try:
        syscalls.mount(source, target, None, syscalls.MS_BIND)
    except BaseException:
        unpin(target)
        raise


def unshare_flags(types: list[str]) -> int:
    flags = 0
    for t in types:
        flags |= syscalls.NAMESPACE_FLAGS[t]
    return flags


def sysctl_path(name: str) -> str:
    """/proc/sys path of a sysctl given as a.b.c or a/b/c (dots in a slash name stay)."""
    if "/" in name:
        rel = name
    else:
        rel = name.replace(".", "/")
    rel = rel.strip("/")
    if not rel or any(part in ("", ".", "..") for part in rel.split("/")):
        raise ValueError(f"invalid sysctl name {name!r}")
    return "/proc/sys/" + rel


def sysctl_namespace(name: str) -> str | None:
    """The namespace a sysctl belongs to (net, ipc, uts) or None when not namespaced."""
    n = name.replace("/", ".")
    if n.startswith("net."):
        return "net"
    if n.startswith(("kernel.shm", "kernel.msg", "fs.mqueue.")) or n == "kernel.sem":
        return "ipc"
    if n in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def check_sysctls(sysctls: dict[str, str], types: list[str]) -> None:
    """Refuse sysctls that would change the host (ValueError with the reason)."""
    for name, value in sysctls.items():
        ns = sysctl_namespace(name)
        if ns is None:
            raise ValueError(f"sysctl {name!r} is not namespaced; refusing to set it on the host")
        if ns not in types:
            raise ValueError(f"sysctl {name!r} needs the pod's own {ns} namespace, "
                             f"but the pod shares the host's")
        sysctl_path(name)
        if not isinstance(value, str) or any(c in value for c in "\n\0"):
            raise ValueError(f"invalid value {value!r} for sysctl {name!r}")


def apply_sysctls(sysctls: dict[str, str]) -> None:
    """Write sysctls; must run inside the pod's namespaces (pause-holder)."""
    for name, value in sysctls.items():
        path = sysctl_path(name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, f"sysctl {name}: cannot open {path}: {e.strerror}") from None
        try:
            os.write(fd, value.encode())
        except OSError as e:
            raise OSError(e.errno, f"sysctl {name}={value!r}: {e.strerror}") from None
        finally:
            os.close(fd)


def pin(pid: int, types: list[str], ns_dir: str) -> dict[str, str]:
    """Bind-mount /proc/<pid>/ns/<type> onto <ns_dir>/<type>; returns type -> path.

    On failure everything pinned so far is unpinned again.
    """
    os.makedirs(ns_dir, mode=0o711, exist_ok=True)
    pinned: dict[str, str] = {}
    try:
        for t in types:
            target = os.path.join(ns_dir, t)
            os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
            pinned[t] = target
            syscalls.mount(f"/proc/{pid}/ns/{t}", target, None, syscalls.MS_BIND)
    except BaseException:
        unpin_all(ns_dir)
        raise
    return pinned


def unpin(path: str) -> None:
    """Unmount (every stacked bind mount of) one pinned namespace file and delete it."""
    while True:
        try:
            syscalls.umount2(path, syscalls.MNT_DETACH | syscalls.UMOUNT_NOFOLLOW)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                break
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def unpin_all(ns_dir: str) -> None:
    """Unmount and remove every pinned namespace file under ns_dir, then ns_dir itself."""
    try:
        names = os.listdir(ns_dir)
    except FileNotFoundError:
        return
    for name in names:
        unpin(os.path.join(ns_dir, name))
    try:
        os.rmdir(ns_dir)
    except OSError:
        pass

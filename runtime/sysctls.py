"""Namespaced sysctls: names, which namespace each belongs to, checking and writing them.

Used by the pause-holder for a pod's sysctls and by the container init for a container's own
(NRI adjustments), both from inside the namespaces the sysctls belong to. Stdlib only.
"""
from __future__ import annotations

import os


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
    """The namespace a sysctl belongs to -- net or ipc, as Kubernetes counts them -- or None
    for one a pod or container may not set (not namespaced, or the hostname, set otherwise)."""
    n = name.replace("/", ".")
    if n.startswith("net."):
        return "net"
    if n.startswith(("kernel.shm", "kernel.msg", "fs.mqueue.")) or n == "kernel.sem":
        return "ipc"
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

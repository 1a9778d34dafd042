"""The pod's network namespace, made by the daemon so CNI can start before the shim is up.

unshare(CLONE_NEWNET) moves only the calling thread, so a short-lived thread of
the daemon makes the namespace, brings its loopback up, bind-mounts
/proc/thread-self/ns/net onto the pin file and exits: no fork, and no other
thread ever changes namespace. The pause-holder later joins it by path.
"""
from __future__ import annotations

import fcntl
import os
import socket
import struct
import threading

from runtime import syscalls
from runtime.shim.namespaces import unpin

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _loopback_up() -> None:
    """ip link set lo up, in the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        ifreq = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", ifreq)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _make(path: str) -> None:
    syscalls.unshare(syscalls.CLONE_NEWNET)
    _loopback_up()
    syscalls.mount("/proc/thread-self/ns/net", path, None, syscalls.MS_BIND)


def create(path: str) -> None:
    """A new network namespace with lo up, pinned at path; OSError on failure (nothing left)."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    failure: list[BaseException] = []

    def work() -> None:
        try:
            _make(path)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller below
            failure.append(exc)

    thread = threading.Thread(target=work, name="netns-create")
    thread.start()
    thread.join()  # the thread, and its hold on the namespace, end here
    if failure:
        remove(path)
        raise failure[0]


def remove(path: str) -> None:
    """Unpins and deletes the namespace file; a missing one is fine."""
    if path:
        unpin(path)

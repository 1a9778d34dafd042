"""The pod's network namespace, made by the daemon so CNI can start before the shim is up.

unshare(CLONE_NEWNET) moves only the calling thread, so a short-lived thread of
the daemon makes the namespace, brings its loopback up, bind-mounts
/proc/thread-self/ns/net onto the pin file and exits: no fork, and no other
thread ever changes namespace. The pause-holder later joins it by path.
"""
from __future__ import annotations

import os
import threading

from runtime import syscalls
from runtime.shim.namespaces import loopback_up, unpin


def _make(path: str) -> None:
    syscalls.unshare(syscalls.CLONE_NEWNET)
    loopback_up()
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

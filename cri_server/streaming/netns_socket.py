"""Connect a TCP socket inside another network namespace, without touching the caller.

setns(CLONE_NEWNET) affects only the calling OS thread, so a short-lived dedicated
thread joins the namespace, creates and connects the socket, and exits: the socket
stays bound to that namespace, the thread's namespace change dies with it, and the
daemon's other threads never see it. Uses runtime.syscalls.setns_path (shim area).
"""
from __future__ import annotations

import socket
import threading

from runtime import syscalls


def connect_in_netns(netns_path: str | None, host: str, port: int,
                     timeout: float = 5.0) -> socket.socket:
    """A socket connected to host:port from inside the network namespace at netns_path.

    netns_path None (host-network pods) connects from the caller's namespace. Raises
    OSError (ConnectionRefusedError, TimeoutError, ...) as socket.create_connection does;
    the socket is returned in blocking mode.
    """
    if netns_path is None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(None)
        return sock
    result: dict[str, object] = {}

    def run() -> None:
        try:
            syscalls.setns_path(netns_path, syscalls.CLONE_NEWNET)
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.settimeout(None)
            result["sock"] = sock
        except BaseException as exc:  # handed to the calling thread  # noqa: BLE001
            result["error"] = exc

    thread = threading.Thread(target=run, name="pycri-netns-connect", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["sock"]  # type: ignore[return-value]

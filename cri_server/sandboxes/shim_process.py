"""Finding what serves a pod, and ending what a pod leaves when its control socket no longer
answers.

A pod is served by the node monitor (runtime.shim.monitor, comm "pycri-monitor"), which
serves every other pod too: `shim.pid` in the pod's shim_dir names it. A per-pod shim
("pycri-shim") is what daemons before the monitor started; both count as "the shim of" a
pod here, but only a per-pod shim is ever killed.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time

from runtime import keeper, proc
from runtime.shim.names import MONITOR_COMM, SHIM_COMM, socket_of_shim_dir

_SERVING = (SHIM_COMM, MONITOR_COMM)


def pid_from_file(shim_dir: str) -> int | None:
    try:
        with open(os.path.join(shim_dir, "shim.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def is_shim(pid: int) -> bool:
    """True while pid is a live (non-zombie) process serving pods: the monitor, or a per-pod
    shim of an older daemon."""
    if _comm(pid) not in _SERVING:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def is_shim_of(pid: int, shim_dir: str) -> bool:
    """pid is a live process serving shim_dir (its pid file names it, or, for a per-pod shim,
    its stdout is <shim_dir>/shim.log): guards against a recycled pid."""
    if not is_shim(pid):
        return False
    log = os.path.join(shim_dir, "shim.log")
    for fd in (1, 2):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == log:
                return True
        except OSError:
            pass
    return pid_from_file(shim_dir) == pid


def kill_stale_shim(shim_dir: str, known_pid: int = 0, timeout: float = 5.0) -> None:
    """Ends what serves shim_dir (pid file or the recorded pid) if it is still alive: a
    per-pod shim is SIGKILLed (and waited for); the monitor, which serves other pods too, is
    never killed: it is asked to stop serving this pod (drop_pod) instead. Its pod's processes
    are then kill_pod_processes' to end."""
    pids = {p for p in (pid_from_file(shim_dir), known_pid) if p}
    for pid in pids:
        if not is_shim_of(pid, shim_dir):
            continue
        if _comm(pid) == MONITOR_COMM:
            _drop_from_monitor(shim_dir)
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout
        while is_shim(pid) and time.monotonic() < deadline:
            time.sleep(0.01)


def _drop_from_monitor(shim_dir: str, timeout: float = 5.0) -> None:
    """Best effort: the monitor forgets the pod (its socket, fds and objects)."""
    req = {"op": "drop_pod", "pod_id": os.path.basename(os.path.abspath(shim_dir))}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_of_shim_dir(shim_dir))
        sock.sendall(json.dumps(req).encode() + b"\n")
        sock.recv(4096)
    except OSError:
        pass
    finally:
        sock.close()


def kill_pod_processes(shim_dir: str, pause_pid: int = 0) -> None:
    """After the pod's shim is gone: SIGKILL what outlives it by design, the containers'
    keepers (<shim_dir>/containers/<cid>.keeper, runtime.keeper) and the pause-holder
    (<shim_dir>/pause.pid or `pause_pid`). Each pid is held by a pidfd and checked by its
    command line (pycri-keeper <cid> / pycri-pause <pod>) before the signal, so a recycled pid
    is never hit."""
    cdir = os.path.join(shim_dir, "containers")
    try:
        names = os.listdir(cdir)
    except OSError:
        names = []
    for name in names:
        if name.endswith(".keeper"):
            keeper.kill_keeper(cdir, name[:-len(".keeper")])
    for pid in {p for p in (proc.read_pid_file(os.path.join(shim_dir, "pause.pid")), pause_pid) if p}:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if proc.cmdline(pid)[:1] == ["pycri-pause"]:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)


def pause_holder_gone(shim_dir: str, pod_id: str, pause_pid: int = 0) -> str:
    """Why the pod cannot be taken back by a successor monitor for good: its pause-holder
    (<shim_dir>/pause.pid or `pause_pid`; checked by pidfd and command line
    `pycri-pause <pod id>`) is gone; "" while it lives (or the pod has none)."""
    pid = proc.read_pid_file(os.path.join(shim_dir, "pause.pid")) or pause_pid
    if not pid:
        return ""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return f"its pause-holder (pid {pid}) is gone"
    try:
        if proc.cmdline(pid)[:2] != ["pycri-pause", pod_id] or proc.ended(pid):
            return f"its pause-holder (pid {pid}) is gone"
        return ""
    finally:
        os.close(fd)

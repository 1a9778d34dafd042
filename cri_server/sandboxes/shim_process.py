"""Finding and ending a pod's shim when its control socket no longer answers."""
from __future__ import annotations

import os
import signal
import time

from runtime import keeper, proc

SHIM_COMM = "pycri-shim"


def pid_from_file(shim_dir: str) -> int | None:
    try:
        with open(os.path.join(shim_dir, "shim.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def is_shim(pid: int) -> bool:
    """True while pid is a live (non-zombie) pycri shim process."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() != SHIM_COMM:
                return False
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def is_shim_of(pid: int, shim_dir: str) -> bool:
    """pid is a live shim serving shim_dir (its stdout is <shim_dir>/shim.log, or its pid file
    names it): guards against a recycled pid that now belongs to another pod's shim."""
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
    """SIGKILLs the shim of shim_dir (pid file or the recorded pid) if it is still alive.

    Its pause-holder dies with it (PDEATHSIG). Waits until it is gone.
    """
    pids = {p for p in (pid_from_file(shim_dir), known_pid) if p}
    for pid in pids:
        if not is_shim_of(pid, shim_dir):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout
        while is_shim(pid) and time.monotonic() < deadline:
            time.sleep(0.01)



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

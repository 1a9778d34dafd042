"""What one shim knows about its pod: the containers, the exec processes and the children
it has not reaped yet; shared by the handlers of runtime.shim.server (single-threaded)."""
from __future__ import annotations

import os
import signal as signal_mod
import sys
from collections.abc import Callable
from typing import Any

from pycri_common.errors import NotFound
from runtime import keeper as keeper_mod
from runtime.pod_spec import PodSpec
from runtime.shim import statusfile
from runtime.shim.loop import Loop
from runtime.shim.records import Container, ExecProcess, State

MAX_UNCLAIMED = 256
READ_CHUNK = 65536

#: what a child pid is: ("pause", None), ("init"|"container", Container), ("exec"|"exec_fork", ExecProcess)
PidEntry = tuple[str, Any]


def close_fd(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def log_to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


class PodState:
    def __init__(self, pod: PodSpec, loop: Loop, pause_pid: int | None,
                 log: Callable[[str], None] = log_to_stderr,
                 unclaimed: dict[int, int] | None = None) -> None:
        self.pod = pod
        self.pod_id = self.pod.pod_id
        self.shim_dir = self.pod.shim_dir
        self.ns_dir = self.pod.ns_dir
        self.loop = loop
        self.pause_pid = pause_pid
        self.pause_alive = pause_pid is not None
        self.pause_pidfd = -1  # the pause-holder when it is not our child (runtime.shim.adopt)
        self.containers: dict[str, Container] = {}
        self.execs: dict[str, ExecProcess] = {}
        self.pids: dict[int, PidEntry] = {}
        #: reaped before anyone said whose they are (one dict for every pod of a monitor: a
        #: pid reaped there is not known to be this pod's until it is tracked)
        self.unclaimed: dict[int, int] = {} if unclaimed is None else unclaimed
        #: one line to this pod's shim.log (runtime.shim.monitor: never the process's stdout)
        self.log = log
        self.shutting_down = False
        #: called whenever a container or exec ended (runtime.shim.shutdown finishes then)
        self.on_settled: Callable[[], None] = lambda: None
        if pause_pid is not None:
            self.pids[pause_pid] = ("pause", None)

    def container(self, cid: str) -> Container:
        c = self.containers.get(cid)
        if c is None or c.state is State.DISCARDED:
            raise NotFound(f"container {cid} not found in pod {self.pod_id}")
        return c

    def signal(self, pid: int, sig: int) -> None:
        """Signal one of our children that has not been reaped yet (never a reused pid)."""
        if pid > 0 and pid in self.pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def open_pidfd(self, c: Container) -> None:
        """A pidfd of the container process c.pid (its keeper's child, not ours), for signals:
        opened while the keeper has not recorded its exit yet, so it is that very process
        (alive, or a zombie the keeper has not reaped). None when it is gone already."""
        if c.pidfd >= 0 or c.pid <= 0 or not c.exit_path:
            return
        try:
            fd = os.pidfd_open(c.pid)
        except OSError:
            return
        if os.path.exists(c.exit_path):
            os.close(fd)  # reaped by the keeper already: the pid may be another process now
            return
        c.pidfd = fd

    def signal_container(self, c: Container, sig: int) -> None:
        """Signal the container's process: by its pidfd; before its pid is known, SIGKILL goes
        to the init the shim forked (it has not become the keeper yet); without a keeper (it
        died: the container is our child then) by pid."""
        if c.pidfd >= 0:
            try:
                signal_mod.pidfd_send_signal(c.pidfd, sig)
            except ProcessLookupError:
                pass
        elif c.pid and c.pid in self.pids:
            self.signal(c.pid, sig)
        elif not c.pid and sig == signal_mod.SIGKILL:
            self.signal(c.init_pid, sig)

    def signal_keeper(self, c: Container, sig: int) -> None:
        """Signal c's keeper: by its pidfd when it is not our child (an adopted pod), else as
        one of our children."""
        if c.keeper_pidfd >= 0:
            try:
                signal_mod.pidfd_send_signal(c.keeper_pidfd, sig)
            except ProcessLookupError:
                pass
        else:
            self.signal(c.init_pid, sig)

    def write_keeper_pid(self, c: Container) -> None:
        """<cid>.keeper: the keeper's pid, for whoever cleans up after a dead shim."""
        try:
            statusfile.write_atomic(keeper_mod.pid_path(statusfile.containers_dir(self.shim_dir),
                                                        c.id), str(c.init_pid).encode(),
                                    durable=False)
        except OSError as e:
            c.message = c.message or f"cannot write the keeper's pid file: {e}"

    def track(self, pid: int, entry: PidEntry, exited: Callable[[int], None]) -> None:
        """Say whose pid is; when it was already reaped, exited(status) runs on the next turn."""
        self.pids[pid] = entry
        if pid in self.unclaimed:
            status = self.unclaimed.pop(pid)
            del self.pids[pid]
            self.loop.call_later(0, lambda: exited(status))

    def unclaimed_exit(self, pid: int, status: int) -> None:
        self.unclaimed[pid] = status
        while len(self.unclaimed) > MAX_UNCLAIMED:
            del self.unclaimed[next(iter(self.unclaimed))]

    def write_status(self, c: Container) -> None:
        try:
            statusfile.write_state(self.shim_dir, c.id, c.snapshot().to_json())
        except OSError as e:
            c.message = c.message or f"cannot write status file: {e}"

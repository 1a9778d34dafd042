"""What one shim knows about its pod: the containers, the exec processes and the children
it has not reaped yet; shared by the handlers of runtime.shim.server (single-threaded)."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pycri_common.errors import NotFound
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


class PodState:
    def __init__(self, pod: PodSpec | dict[str, Any], loop: Loop, pause_pid: int | None) -> None:
        # a dict: the PodSpec's JSON (runtime.shim.server still passes that on)
        self.pod = pod if isinstance(pod, PodSpec) else PodSpec.from_json(pod)
        self.pod_id = self.pod.pod_id
        self.shim_dir = self.pod.shim_dir
        self.ns_dir = self.pod.ns_dir
        self.loop = loop
        self.pause_pid = pause_pid
        self.pause_alive = pause_pid is not None
        self.containers: dict[str, Container] = {}
        self.execs: dict[str, ExecProcess] = {}
        self.pids: dict[int, PidEntry] = {}
        self.unclaimed: dict[int, int] = {}  # reaped before anyone said whose they are
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

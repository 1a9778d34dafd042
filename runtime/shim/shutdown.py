"""Shutting a pod's shim down: the shutdown operation (and SIGTERM to the shim).

SIGTERM to running containers, SIGKILL after the grace period, SIGKILL at once to created
ones and to execs; once every container has ended: stop the pause-holder, unpin the
namespaces, remove shim.sock and shim.pid (status files stay), reply, then `on_done` (the
standalone loop stops; runtime.shim.monitor forgets the pod).
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable

from pycri_common.errors import PycriError
from runtime import syscalls
from runtime.shim import namespaces, pause, protocol, stdio
from runtime.shim.control import Connection
from runtime.shim.execs import Execs
from runtime.shim.podstate import PodState
from runtime.shim.reaper import Reaper
from runtime.shim.records import State

_ENDED = (State.EXITED, State.DISCARDED)


class Shutdown:
    def __init__(self, pod: PodState, execs: Execs, reaper: Reaper,
                 listener: socket.socket, on_done: Callable[[], None] | None = None,
                 dispatch: Callable[[int, int], None] | None = None) -> None:
        self.pod = pod
        self.loop = pod.loop
        self.execs = execs
        self.reaper = reaper
        self.listener = listener
        self.on_done = on_done if on_done is not None else self.loop.stop
        #: who gets a child reaped while waiting for the pause-holder (a monitor: its pod)
        self.dispatch = dispatch if dispatch is not None else reaper.child_exited
        self.conns: list[Connection] = []
        self.finished = False
        pod.on_settled = self.check

    def op_shutdown(self, conn: Connection, req: protocol.Shutdown) -> None:
        self.conns.append(conn)
        self.begin(req.grace)

    def begin(self, grace: float) -> None:
        if self.pod.shutting_down:
            self.check()
            return
        self.pod.shutting_down = True
        for c in list(self.pod.containers.values()):
            if c.state is State.RUNNING:
                self.pod.signal_container(c, signal.SIGTERM)
            elif c.state in (State.CREATED, State.CREATING):
                self.pod.signal_container(c, signal.SIGKILL)
        self.execs.kill_all()
        self.loop.call_later(grace, self._kill)
        self.check()

    def _kill(self) -> None:
        for c in self.pod.containers.values():
            if c.state not in _ENDED:
                self.pod.signal_container(c, signal.SIGKILL)
        self.execs.kill_all()

    def check(self) -> None:
        """Finish the shutdown once every container has ended."""
        if not self.pod.shutting_down or self.finished:
            return
        if any(c.state not in _ENDED or c.keeper_alive for c in self.pod.containers.values()):
            return
        self.finished = True
        for c in list(self.pod.containers.values()):
            stdio.release_fds(self.loop, c)
        self.stop_pause()
        error = ""
        try:
            namespaces.unpin_all(self.pod.ns_dir)
        except OSError as e:
            error = f"unpinning namespaces under {self.pod.ns_dir}: {e}"
        self.loop.forget(self.listener.fileno())
        self.listener.close()
        for name in ("shim.sock", "shim.pid", "pause.pid"):
            try:
                os.unlink(os.path.join(self.pod.shim_dir, name))
            except FileNotFoundError:
                pass
        line = (json.dumps(protocol.error_to_json(PycriError(error))) if error
                else json.dumps({"ok": True})).encode() + b"\n"
        for conn in self.conns:
            if conn.closed:
                continue
            try:
                conn.sock.setblocking(True)
                conn.sock.settimeout(2)
                conn.sock.sendall(line)
            except OSError:
                pass
        self.on_done()

    def stop_pause(self) -> None:
        """SIGKILL the pause-holder and reap until it is gone. With a pod PID namespace the
        kernel holds PID 1 until every process of the namespace is reaped, and some of those
        are our children: so reap everything here, never just the pause pid."""
        pause_pid = self.pod.pause_pid
        if pause_pid is None or not self.pod.pause_alive:
            return
        if self.pod.pause_pidfd >= 0:
            self._stop_adopted_pause()
            return
        self.pod.pids.pop(pause_pid, None)
        ours = _parent_of(pause_pid) == os.getpid()  # not after a successor took the pod over
        try:
            os.kill(pause_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while ours:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == pause_pid:
                break
            self.dispatch(pid, status)
        self.pod.pause_alive = False
        pause.remove_pause_cgroup(self.pod.pod, self.pod.log)

    def _stop_adopted_pause(self, timeout: float = 10.0) -> None:
        """The pause-holder of an adopted pod is not our child (runtime.shim.adopt): SIGKILL by
        its pidfd, reaping our own children (exec processes in its pid namespace; a monitor's
        go to their pods) until the pidfd says it is gone."""
        fd = self.pod.pause_pidfd
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        poller = select.poll()  # not select(): a monitor's fds go past 1024
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while not poller.poll(20) and time.monotonic() < deadline:
            self._reap()
        self._reap()
        self.loop.forget(fd)
        os.close(fd)
        self.pod.pause_pidfd = -1
        self.pod.pause_alive = False
        pause.remove_pause_cgroup(self.pod.pod, self.pod.log)

    def _reap(self) -> None:
        for pid, status in syscalls.reaped_children():
            self.dispatch(pid, status)


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0

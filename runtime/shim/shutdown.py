"""Shutting a pod's shim down: the shutdown operation (and SIGTERM to the shim).

SIGTERM to running containers, SIGKILL after the grace period, SIGKILL at once to created
ones and to execs; once every container has ended: stop the pause-holder (SIGKILL, then its
pidfd says it exited, or PAUSE_STOP_TIMEOUT passes: a wait on the loop, so the monitor's
other pods are served meanwhile), unpin the namespaces, remove shim.sock and shim.pid
(status files stay), reply (queued, never a blocking send), then `on_done` (the standalone
loop stops; runtime.shim.monitor forgets the pod).
"""
from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable

from pycri_common.errors import PycriError
from pycri_common.timeouts import scaled
from runtime.shim import namespaces, pause, protocol, stdio
from runtime.shim.control import Connection
from runtime.shim.execs import Execs
from runtime.shim.loop import Timer
from runtime.shim.podstate import PodState, close_fd
from runtime.shim.reaper import Reaper
from runtime.shim.records import State

_ENDED = (State.EXITED, State.DISCARDED)
#: how long a stopping pod waits for its SIGKILLed pause-holder to exit (s, scaled)
PAUSE_STOP_TIMEOUT = 10.0


class Shutdown:
    def __init__(self, pod: PodState, execs: Execs, reaper: Reaper,
                 listener: socket.socket, on_done: Callable[[], None] | None = None) -> None:
        self.pod = pod
        self.loop = pod.loop
        self.execs = execs
        self.reaper = reaper
        self.listener = listener
        self.on_done = on_done if on_done is not None else self.loop.stop
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
        """Finish the shutdown once every container has ended: their fds go, the
        pause-holder is stopped (loop-driven: the other pods are served meanwhile), then
        _finish."""
        if not self.pod.shutting_down or self.finished:
            return
        if any(c.state not in _ENDED or c.keeper_alive for c in self.pod.containers.values()):
            return
        self.finished = True
        for c in list(self.pod.containers.values()):
            stdio.release_fds(self.loop, c)
        self.stop_pause(self._finish)

    def _finish(self) -> None:
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
        for conn in self.conns:  # queued without blocking (a line fits a socket's buffer)
            if error:
                conn.reply_error(PycriError(error))
            else:
                conn.reply(protocol.Empty())
        self.on_done()

    def stop_pause(self, then: Callable[[], None]) -> None:
        """SIGKILL the pause-holder, then `then()` once it has exited (its pidfd says so) or
        PAUSE_STOP_TIMEOUT passed (it hangs in its exit: with a pod PID namespace the kernel
        holds PID 1 until every process of the namespace is reaped, and whoever is the
        parent of one may not reap it). Never blocks the loop: the monitor reaps its
        children (exec processes in that namespace) as they exit, meanwhile."""
        pause_pid = self.pod.pause_pid
        if pause_pid is None or not self.pod.pause_alive:
            then()
            return
        fd = self.pod.pause_pidfd   # an adopted pod's pause-holder: not our child
        ours = fd < 0 and _parent_of(pause_pid) == os.getpid()  # not when a successor has it
        if ours:
            try:
                fd = os.pidfd_open(pause_pid)   # our child, not reaped yet: that very process
            except OSError:
                fd = -1
        if fd < 0:
            self.pod.pause_alive = False
            then()
            return
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        timer: list[Timer] = []

        def gone(exited: bool) -> None:
            self.loop.forget(fd)
            close_fd(fd)
            if self.pod.pause_pidfd == fd:
                self.pod.pause_pidfd = -1
            if timer:
                timer[0].cancel()
            self.pod.pause_alive = False
            if ours and exited:
                self._reap_pause(pause_pid)
            if exited:
                pause.remove_pause_cgroup(self.pod.pod, self.pod.log)
            else:
                self.pod.log(f"pod {self.pod.pod_id}: pause-holder {pause_pid} did not exit "
                             f"within {PAUSE_STOP_TIMEOUT} s of SIGKILL; the pod stops without "
                             "waiting for it")
            then()

        self.loop.forget(fd)   # an adopted pod's pidfd: its watcher is replaced by this one
        self.loop.add_reader(fd, lambda: gone(True))
        timer.append(self.loop.call_later(scaled(PAUSE_STOP_TIMEOUT), lambda: gone(False)))

    def _reap_pause(self, pause_pid: int) -> None:
        """The pause-holder (our child) has exited: reap it here, so its exit goes nowhere
        else (it may have been reaped by the monitor already: then it is tracked, or waits
        unclaimed)."""
        self.pod.pids.pop(pause_pid, None)
        try:
            os.waitpid(pause_pid, os.WNOHANG)
        except ChildProcessError:
            self.pod.unclaimed.pop(pause_pid, None)


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0

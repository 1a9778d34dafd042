"""Exec processes in the shim: the exec, exec_wait and exec_kill operations.

exec forks a process that enters the container (runtime.shim.spawn.fork_exec) on stdio fds
the caller passed; the reply comes once the exec succeeded (EOF of its report pipe), or for an
exec with wait once it exited (as exec_wait's). A finished exec is forgotten once waited for
(at most MAX_FINISHED_EXECS are kept).
"""
from __future__ import annotations

import functools
import os
import secrets
import signal

from pycri_common.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime.shim import protocol, spawn
from runtime.shim.control import Connection
from runtime.shim.podstate import PodState, close_fd
from runtime.shim.records import ExecProcess, State, exit_code_of
from runtime.shim.reports import read_reports

MAX_FINISHED_EXECS = 1024


class Execs:
    def __init__(self, pod: PodState) -> None:
        self.pod = pod
        self.loop = pod.loop

    def op_exec(self, conn: Connection, req: protocol.Exec, fds: list[int]) -> None:
        """Takes fds (closes them whatever happens)."""
        try:
            c = self.pod.container(req.container_id)
            if c.state is not State.RUNNING:
                raise FailedPrecondition(f"container {c.id} is {c.state}; exec needs a running "
                                         "container")
            if len(fds) == 1:
                stdio = (fds[0], fds[0], fds[0])
            elif len(fds) == 3:
                stdio = (fds[0], fds[1], fds[2])
            else:
                raise InvalidArgument(f"exec needs 1 (tty) or 3 stdio fds passed with SCM_RIGHTS, "
                                      f"got {len(fds)}")
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            try:
                forked = spawn.fork_exec(c.pid, c.spec, req.process, stdio, report_w,
                                         user=c.user, home=c.home)
            except BaseException:
                close_fd(report_r)
                raise
            finally:
                close_fd(report_w)
        finally:
            for fd in fds:
                close_fd(fd)
        e = ExecProcess(secrets.token_hex(8), c)
        e.forked_pid = e.pid = forked
        e.report_fd = report_r
        e.pending_reply = conn
        e.reply_on_exit = req.timeout if req.wait else None
        self.pod.execs[e.id] = e
        self.pod.pids[forked] = ("exec", e)
        os.set_blocking(report_r, False)
        self.loop.add_reader(report_r, lambda: self.read_report(e))
        self._trim()

    def _trim(self) -> None:
        finished = [eid for eid, e in self.pod.execs.items() if e.exited]
        for eid in finished[: max(0, len(finished) - MAX_FINISHED_EXECS)]:
            del self.pod.execs[eid]

    def read_report(self, e: ExecProcess) -> None:
        """What the exec process reported: its pid (after entering a pid namespace) or an error."""
        reports, eof = read_reports(e)
        for report in reports:
            if report.pid and report.pid != e.pid:
                if self.pod.pids.get(e.pid, (None, None))[1] is e:
                    self.pod.pids[e.pid] = ("exec_fork", e)
                e.pid = report.pid
                self.pod.track(report.pid, ("exec", e), functools.partial(self.exited, e))
            if report.error is not None:
                e.error = report.error
        if eof:
            self._report_eof(e)

    def _report_eof(self, e: ExecProcess) -> None:
        self.loop.forget(e.report_fd)
        close_fd(e.report_fd)
        e.report_fd = -1
        conn, e.pending_reply = e.pending_reply, None
        if conn is not None:
            if e.error:
                conn.reply_error(e.error)
            elif e.reply_on_exit is not None:
                reply = self._wait(conn, e, e.reply_on_exit)
                if reply is not None:
                    conn.reply(reply)
            else:
                conn.reply(protocol.ExecReply(e.id, e.pid))
        if e.error and e.exited:
            self.pod.execs.pop(e.id, None)

    def exited(self, e: ExecProcess, status: int) -> None:
        if e.exited:
            return
        e.exited = True
        e.exit_code = exit_code_of(status)
        waiters, e.waiters = e.waiters, []
        for conn, timer in waiters:
            if timer:
                timer.cancel()
            conn.reply(protocol.ExecWaitReply(e.exit_code, e.timed_out))
        if waiters or (e.error and e.report_fd < 0):
            self.pod.execs.pop(e.id, None)
        self.pod.on_settled()

    def _exec(self, eid: str) -> ExecProcess:
        e = self.pod.execs.get(eid)
        if e is None:
            raise NotFound(f"exec {eid!r} not found in pod {self.pod.pod_id}")
        return e

    def op_exec_wait(self, conn: Connection, req: protocol.ExecWait) -> protocol.ExecWaitReply | None:
        return self._wait(conn, self._exec(req.exec_id), req.timeout)

    def _wait(self, conn: Connection, e: ExecProcess, timeout: float
              ) -> protocol.ExecWaitReply | None:
        """The exit of `e` now, or None and `conn` answered when it exits (timeout > 0: it is
        SIGKILLed then)."""
        if e.exited:
            self.pod.execs.pop(e.id, None)
            return protocol.ExecWaitReply(e.exit_code, e.timed_out)
        timer = None
        if timeout > 0:
            def expire() -> None:
                e.timed_out = True
                self.pod.signal(e.pid, signal.SIGKILL)
                if e.forked_pid != e.pid:
                    self.pod.signal(e.forked_pid, signal.SIGKILL)
            timer = self.loop.call_later(timeout, expire)
        e.waiters.append((conn, timer))
        return None

    def op_exec_kill(self, conn: Connection, req: protocol.ExecKill) -> protocol.Empty:
        e = self._exec(req.exec_id)
        if not e.exited:
            self.pod.signal(e.pid, req.signal)
        return protocol.Empty()

    def kill_all(self) -> None:
        for e in self.pod.execs.values():
            if not e.exited:
                self.pod.signal(e.pid, signal.SIGKILL)

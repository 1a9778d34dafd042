"""Exec processes in the shim: the exec, exec_wait and exec_kill operations.

exec forks a process that enters the container (runtime.shim.spawn.fork_exec) on stdio fds
the caller passed; the reply comes once the exec succeeded (EOF of its report pipe). A
finished exec is forgotten once waited for (at most MAX_FINISHED_EXECS are kept).
"""
from __future__ import annotations

import functools
import os
import secrets
import signal
from typing import Any

from runtime.shim import spawn
from runtime.shim.control import Connection, ShimError
from runtime.shim.podstate import PodState, close_fd, read_report, take_report_messages, valid_signal
from runtime.shim.records import ExecProcess, State, exit_code_of

MAX_FINISHED_EXECS = 1024


class Execs:
    def __init__(self, pod: PodState) -> None:
        self.pod = pod
        self.loop = pod.loop

    def op_exec(self, conn: Connection, req: dict[str, Any], fds: list[int]) -> None:
        """Takes fds (closes them whatever happens)."""
        try:
            c = self.pod.container(req)
            if c.state is not State.RUNNING:
                raise ShimError("FailedPrecondition",
                                f"container {c.id} is {c.state}; exec needs a running container")
            process = req.get("process")
            if not isinstance(process, dict) or not isinstance(process.get("args"), list) \
                    or not process["args"] or not all(isinstance(a, str) for a in process["args"]):
                raise ShimError("InvalidArgument", "exec needs process.args, a non-empty list "
                                                   "of strings")
            if len(fds) == 1:
                stdio = (fds[0], fds[0], fds[0])
            elif len(fds) == 3:
                stdio = (fds[0], fds[1], fds[2])
            else:
                raise ShimError("InvalidArgument", f"exec needs 1 (tty) or 3 stdio fds passed "
                                                   f"with SCM_RIGHTS, got {len(fds)}")
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            try:
                forked = spawn.fork_exec(c.pid, c.spec, process, stdio, report_w)
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
        while e.report_fd >= 0:
            data = read_report(e.report_fd)
            if data is None:
                return
            if not data:
                self._report_eof(e)
                return
            msgs, e.report_buf = take_report_messages(e.report_buf + data)
            for msg in msgs:
                pid = msg.get("pid")
                if isinstance(pid, int) and pid > 0 and pid != e.pid:
                    if self.pod.pids.get(e.pid, (None, None))[1] is e:
                        self.pod.pids[e.pid] = ("exec_fork", e)
                    e.pid = pid
                    self.pod.track(pid, ("exec", e), functools.partial(self.exited, e))
                if "error" in msg:
                    e.error = (str(msg.get("kind") or "PycriError"), str(msg["error"]))

    def _report_eof(self, e: ExecProcess) -> None:
        self.loop.forget(e.report_fd)
        close_fd(e.report_fd)
        e.report_fd = -1
        conn, e.pending_reply = e.pending_reply, None
        if conn is not None:
            if e.error:
                conn.reply_error(*e.error)
            else:
                conn.reply({"exec_id": e.id, "pid": e.pid})
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
            conn.reply({"exit_code": e.exit_code, "timed_out": e.timed_out})
        if waiters or (e.error and e.report_fd < 0):
            self.pod.execs.pop(e.id, None)
        self.pod.on_settled()

    def _exec(self, req: dict[str, Any]) -> ExecProcess:
        eid = req.get("exec_id")
        e = self.pod.execs.get(eid) if isinstance(eid, str) else None
        if e is None:
            raise ShimError("NotFound", f"exec {eid!r} not found in pod {self.pod.pod_id}")
        return e

    def op_exec_wait(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any] | None:
        e = self._exec(req)
        if e.exited:
            self.pod.execs.pop(e.id, None)
            return {"exit_code": e.exit_code, "timed_out": e.timed_out}
        timeout = req.get("timeout")
        timer = None
        if isinstance(timeout, (int, float)) and timeout > 0:
            def expire() -> None:
                e.timed_out = True
                self.pod.signal(e.pid, signal.SIGKILL)
                if e.forked_pid != e.pid:
                    self.pod.signal(e.forked_pid, signal.SIGKILL)
            timer = self.loop.call_later(float(timeout), expire)
        e.waiters.append((conn, timer))
        return None

    def op_exec_kill(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        e = self._exec(req)
        sig = valid_signal(req)
        if not e.exited:
            self.pod.signal(e.pid, sig)
        return {}

    def kill_all(self) -> None:
        for e in self.pod.execs.values():
            if not e.exited:
                self.pod.signal(e.pid, signal.SIGKILL)

"""Container create and start in the shim (contract 3 of docs/architecture.md), and the kill
and reopen_log operations.

create forks the container init (runtime.shim.spawn) and replies once the init reports
ready at its gate; start opens the gate and replies once the init reports that the exec
succeeded (EOF of its report pipe). The end of a container is runtime.shim.exits.
"""
from __future__ import annotations

import os
import time

from pycri_common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PycriError,
)
from runtime.shim import oom, protocol, spawn, stdio
from runtime.shim.control import Connection
from runtime.shim.crilog import CriLogWriter
from runtime.shim.exits import Exits
from runtime.shim.podstate import PodState, close_fd
from runtime.shim.records import Container, State
from runtime.shim.reports import read_reports

CREATE_TIMEOUT = 120.0


class Containers:
    def __init__(self, pod: PodState, exits: Exits) -> None:
        self.pod = pod
        self.loop = pod.loop
        self.exits = exits

    # --- create -------------------------------------------------------------------
    def op_create(self, conn: Connection, req: protocol.Create) -> None:
        cid, spec = req.container_id, req.spec
        if cid in self.pod.containers:
            raise AlreadyExists(f"container {cid} already exists in pod {self.pod.pod_id}")
        c = Container(cid, spec)
        child_fds: list[int] = []
        try:
            if spec.log_path:
                try:
                    c.log = CriLogWriter(spec.log_path, log_dir=spec.log_directory)
                except OSError as e:
                    raise InvalidArgument(f"cannot open log file {spec.log_path}: {e}") from None
            child_stdio = stdio.container_stdio(self.loop, c, child_fds)
            gate_r, c.gate_w = os.pipe2(os.O_CLOEXEC)
            child_fds.append(gate_r)
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            child_fds.append(report_w)
            c.report_fd = report_r
            c.init_pid = spawn.fork_container_init(spec, child_stdio, gate_r, report_w)
        except BaseException:
            stdio.release_fds(self.loop, c)
            raise
        finally:
            for fd in child_fds:
                close_fd(fd)
        c.pid = c.init_pid
        self.pod.pids[c.init_pid] = ("container", c)
        self.pod.containers[cid] = c
        os.set_blocking(c.report_fd, False)
        self.loop.add_reader(c.report_fd, lambda: self.read_report(c))
        stdio.watch_outputs(self.loop, c)
        c.pending_create = conn
        c.create_timer = self.loop.call_later(CREATE_TIMEOUT, lambda: self.exits.fail_create(
            c, DeadlineExceeded(f"container init did not get ready in {CREATE_TIMEOUT:.0f}s")))

    def read_report(self, c: Container) -> None:
        """What the init reported: its pid (after a pid-namespace fork), ready, or an error."""
        reports, eof = read_reports(c)
        for report in reports:
            if report.pid:
                self._set_pid(c, report.pid)
            if report.ready:
                c.user = report.user
                self._ready(c)
            if report.error is not None:
                if c.state is State.CREATING:
                    self.exits.fail_create(c, report.error)
                    return
                c.start_error = report.error
        if eof:
            self._report_eof(c)

    def _set_pid(self, c: Container, pid: int) -> None:
        if pid == c.pid:
            return
        if self.pod.pids.get(c.pid, (None, None))[1] is c:
            self.pod.pids[c.pid] = ("init", c)
        c.pid = pid
        self.pod.track(pid, ("container", c), lambda status: self.exits.container_exited(c, status))

    def _ready(self, c: Container) -> None:
        if c.state is not State.CREATING:
            return
        c.state = State.CREATED
        c.created_at = time.time_ns()
        if c.create_timer:
            c.create_timer.cancel()
        self.pod.write_status(c)
        conn, c.pending_create = c.pending_create, None
        if conn is not None:
            conn.reply(protocol.CreateReply(c.pid, c.user))

    def _report_eof(self, c: Container) -> None:
        self.loop.forget(c.report_fd)
        close_fd(c.report_fd)
        c.report_fd = -1
        if c.state is State.CREATING:
            self.exits.fail_create(c, PycriError("container init exited before it was ready"))
            return
        conn, c.pending_start = c.pending_start, None
        if conn is not None:
            if c.start_error:
                conn.reply_error(c.start_error)
            else:
                conn.reply(protocol.StartReply(c.started_at))

    # --- start --------------------------------------------------------------------
    def op_start(self, conn: Connection, req: protocol.Start) -> protocol.StartReply | None:
        c = self.pod.container(req.container_id)
        if c.state is not State.CREATED:
            raise FailedPrecondition(f"container {c.id} is {c.state}; only a created container "
                                     "can start")
        c.oom_count_at_start = oom.oom_kill_count(c.spec)
        try:
            os.write(c.gate_w, b"s")
        except OSError as e:
            raise FailedPrecondition(f"container {c.id}: its init is gone ({e.strerror})") from None
        finally:
            close_fd(c.gate_w)
            c.gate_w = -1
        c.state = State.RUNNING
        c.started_at = time.time_ns()
        self.pod.write_status(c)
        if c.report_fd < 0:
            return protocol.StartReply(c.started_at)
        c.pending_start = conn
        return None

    # --- kill, reopen_log, attach -----------------------------------------------------
    def op_kill(self, conn: Connection, req: protocol.Kill) -> protocol.Empty:
        c = self.pod.container(req.container_id)
        if c.state in (State.CREATED, State.RUNNING, State.CREATING):
            self.pod.signal(c.pid or c.init_pid, req.signal)
        return protocol.Empty()

    def op_reopen_log(self, conn: Connection, req: protocol.ReopenLog) -> protocol.Empty:
        c = self.pod.container(req.container_id)
        if c.state is not State.RUNNING:
            raise FailedPrecondition(f"container {c.id} is {c.state}; logs can be reopened only "
                                     "while it is running")
        if c.log is not None:
            try:
                c.log.reopen()
            except OSError as e:
                raise PycriError(f"reopen log {c.log.path}: {e}") from None
        return protocol.Empty()

    def op_attach(self, conn: Connection, req: protocol.Attach) -> None:
        stdio.attach(self.loop, self.pod.container(req.container_id), conn)

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
from runtime import keeper as keeper_mod
from runtime.shim import oom, protocol, spawn, statusfile, stdio
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
            launch = self._keeper_launch(c, child_fds)
            c.init_pid = spawn.fork_container_init(spec, child_stdio, gate_r, report_w, launch)
        except BaseException:
            stdio.release_fds(self.loop, c)
            raise
        finally:
            for fd in child_fds:
                close_fd(fd)
        self.pod.pids[c.init_pid] = ("keeper", c)
        c.keeper_alive = True
        self.pod.write_keeper_pid(c)
        self._write_spec(c)  # while the init sets up: off the reply's path
        self.pod.containers[cid] = c
        os.set_blocking(c.report_fd, False)
        self.loop.add_reader(c.report_fd, lambda: self.read_report(c))
        os.set_blocking(c.exit_fd, False)
        self.loop.add_reader(c.exit_fd, lambda: self.keeper_recorded(c))
        stdio.watch_outputs(self.loop, c)
        c.pending_create = conn
        c.create_timer = self.loop.call_later(CREATE_TIMEOUT, lambda: self.exits.fail_create(
            c, DeadlineExceeded(f"container init did not get ready in {CREATE_TIMEOUT:.0f}s")))

    def _write_spec(self, c: Container) -> None:
        """<cid>.spec, for a successor shim that adopts the pod (runtime.shim.adopt)."""
        try:
            statusfile.write_spec(self.pod.shim_dir, c.id, c.spec.to_json())
        except OSError as e:
            self.pod.log(f"pod {self.pod.pod_id}: container {c.id}: cannot write its spec "
                         f"(a successor monitor could not adopt it): {e}")

    def _keeper_launch(self, c: Container, child_fds: list[int]) -> keeper_mod.Launch:
        """The exit pipe (our end in c.exit_fd, the keeper's in child_fds) and what the keeper
        of c gets (runtime/keeper/keeper.c); a stale exit record of that id goes first."""
        c.exit_path = keeper_mod.exit_path(statusfile.containers_dir(self.pod.shim_dir), c.id)
        try:
            os.unlink(c.exit_path)
        except FileNotFoundError:
            pass
        c.exit_fd, exit_w = os.pipe2(os.O_CLOEXEC)
        child_fds.append(exit_w)
        outs = list(c.outputs)
        return keeper_mod.Launch(keeper_mod.binary(), c.id, c.exit_path, exit_w, c.exit_fd,
                                 (outs[0], outs[-1]))

    def keeper_recorded(self, c: Container) -> None:
        """EOF on the exit pipe: the keeper recorded the container's exit (or died)."""
        if c.exit_fd < 0:
            return
        try:
            if os.read(c.exit_fd, 64):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self.loop.forget(c.exit_fd)
        close_fd(c.exit_fd)
        c.exit_fd = -1
        if c.report_fd >= 0:
            self.read_report(c)  # a pid or error report may still be queued
        record = keeper_mod.read_exit(c.exit_path)
        if record is not None:
            self.exits.container_exited(c, record["status"], record["finished_at"])
        elif c.pid and c.state not in (State.EXITED, State.DISCARDED):
            # the keeper died (SIGKILL) before the container: we are the nearest subreaper,
            # the container is re-parented to us and reaped here as without a keeper
            self.pod.track(c.pid, ("container", c),
                           lambda status: self.exits.container_exited(c, status))

    def read_report(self, c: Container) -> None:
        """What the init reported: its pid (after a pid-namespace fork), ready, or an error."""
        reports, eof = read_reports(c)
        for report in reports:
            if report.pid:
                self._set_pid(c, report.pid)
            if report.ready:
                c.user = report.user
                c.home = report.home
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
        c.pid = pid
        self.pod.open_pidfd(c)

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
        oom.watch(self.loop, c)
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
            self.pod.signal_container(c, req.signal)
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

"""The shim's control-protocol handlers and container/exec lifecycle (contract 3).

Single-threaded: everything runs from runtime.shim.loop callbacks. Operations
that wait (create, start, wait, delete, exec, exec_wait, shutdown) keep the
connection pending and reply from a later callback; nothing ever blocks the loop.
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import secrets
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable
from typing import Any

from runtime.shim import frames, namespaces, oom, spawn, statusfile
from runtime.shim.control import Connection, ShimError
from runtime.shim.crilog import CriLogWriter
from runtime.shim.loop import BufferedWriter, Loop
from runtime.shim.records import Container, ExecProcess, exit_code_of

CREATE_TIMEOUT = 120.0
DELETE_KILL_TIMEOUT = 10.0
MAX_UNCLAIMED = 256
MAX_FINISHED_EXECS = 1024
STDIN_PAUSE_BYTES = 1 << 20
_READ = 65536
_ALWAYS_ALLOWED = frozenset({"hello", "state", "wait", "shutdown", "exec_wait", "delete", "kill"})


def _now() -> int:
    return time.time_ns()


def _valid_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or value in (".", "..") \
            or len(value) > 128 or "\0" in value:
        raise ShimError("InvalidArgument", f"{what} must be a non-empty name without '/', "
                                           f"got {value!r}")
    return value


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass



def take_report_messages(buf: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """The complete JSON-object lines an init or exec process reported, and the rest."""
    msgs: list[dict[str, Any]] = []
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            msgs.append(msg)
    return msgs, buf

class Shim:
    def __init__(self, pod: dict[str, Any], loop: Loop, pause_pid: int | None,
                 pinned: dict[str, str], listener: socket.socket) -> None:
        self.pod = pod
        self.pod_id = pod["pod_id"]
        self.shim_dir = pod["shim_dir"]
        self.ns_dir = pod["ns_dir"]
        self.loop = loop
        self.pause_pid = pause_pid
        self.pause_alive = pause_pid is not None
        self.pinned = pinned
        self.listener = listener
        self.containers: dict[str, Container] = {}
        self.execs: dict[str, ExecProcess] = {}
        self.pids: dict[int, tuple[str, Any]] = {}
        self.unclaimed: dict[int, int] = {}
        self.conns: set[Connection] = set()
        self.shutting_down = False
        self.shutdown_conns: list[Connection] = []
        self.finished = False
        if pause_pid is not None:
            self.pids[pause_pid] = ("pause", None)
        self._ops: dict[str, Callable[[Connection, dict[str, Any]], dict[str, Any] | None]] = {
            "hello": self.op_hello, "create": self.op_create, "start": self.op_start,
            "kill": self.op_kill, "state": self.op_state, "wait": self.op_wait,
            "delete": self.op_delete, "reopen_log": self.op_reopen_log, "exec": self._exec_needs_fds,
            "exec_wait": self.op_exec_wait, "exec_kill": self.op_exec_kill,
            "attach": self.op_attach, "shutdown": self.op_shutdown,
        }
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), self._accept)

    @staticmethod
    def _exec_needs_fds(conn: Connection, req: dict[str, Any]) -> None:
        raise AssertionError("exec is dispatched with its fds by handle()")

    # --- connections ----------------------------------------------------------
    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        self.conns.add(Connection(self.loop, sock, self.handle, self._conn_closed))

    def _conn_closed(self, conn: Connection) -> None:
        self.conns.discard(conn)
        for c in self.containers.values():
            if conn in c.attached:
                c.attached.remove(conn)
                if c.stdin_once and conn.used_stdin:  # the first stdin session ended
                    self._close_stdin(c)

    def handle(self, conn: Connection, req: dict[str, Any], fds: list[int]) -> dict[str, Any] | None:
        op = req.get("op")
        fn = self._ops.get(op) if isinstance(op, str) else None
        try:
            if fn is None:
                raise ShimError("InvalidArgument", f"unknown op {op!r}")
            if self.shutting_down and op not in _ALWAYS_ALLOWED:
                raise ShimError("FailedPrecondition", f"pod {self.pod_id} is shutting down")
            if op == "exec":
                taken, fds = fds, []
                self.op_exec(conn, req, taken)
                return None
            return fn(conn, req)
        finally:
            for fd in fds:
                _close(fd)

    def _container(self, req: dict[str, Any]) -> Container:
        cid = _valid_id(req.get("container_id"), "container_id")
        c = self.containers.get(cid)
        if c is None or c.state == "discarded":
            raise ShimError("NotFound", f"container {cid} not found in pod {self.pod_id}")
        return c

    # --- simple ops -------------------------------------------------------------
    def op_hello(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        return {"pod_id": self.pod_id, "shim_pid": os.getpid(), "pause_pid": self.pause_pid,
                "pause_alive": self.pause_alive, "ns": dict(self.pinned),
                "containers": sorted(cid for cid, c in self.containers.items()
                                     if c.state not in ("creating", "discarded"))}

    def op_state(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("container_id") is not None:
            c = self._container(req)
            return {"containers": {c.id: c.state_dict()}}
        return {"containers": {cid: c.state_dict() for cid, c in self.containers.items()
                               if c.state not in ("creating", "discarded")}}

    def op_kill(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        c = self._container(req)
        sig = req.get("signal", signal.SIGKILL)
        if not isinstance(sig, int) or not 1 <= sig <= 64:
            raise ShimError("InvalidArgument", f"signal must be an integer 1..64, got {sig!r}")
        if c.state in ("created", "running", "creating"):
            self._signal(c.pid or c.init_pid, sig)
        return {}

    def _signal(self, pid: int, sig: int) -> None:
        """Signal one of our children that has not been reaped yet (never a reused pid)."""
        if pid > 0 and pid in self.pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def op_reopen_log(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        c = self._container(req)
        if c.state != "running":
            raise ShimError("FailedPrecondition",
                            f"container {c.id} is {c.state}; logs can be reopened only while "
                            "it is running")
        if c.log is not None:
            try:
                c.log.reopen()
            except OSError as e:
                raise ShimError("PycriError", f"reopen log {c.log.path}: {e}") from None
        return {}

    # --- create -------------------------------------------------------------------
    def op_create(self, conn: Connection, req: dict[str, Any]) -> None:
        cid = _valid_id(req.get("container_id"), "container_id")
        spec = req.get("spec")
        if not isinstance(spec, dict):
            raise ShimError("InvalidArgument", "create needs a ContainerSpec object in 'spec'")
        if cid in self.containers:
            raise ShimError("AlreadyExists", f"container {cid} already exists in pod {self.pod_id}")
        c = Container(cid, spec)
        child_fds: list[int] = []
        try:
            if spec.get("log_path"):
                try:
                    c.log = CriLogWriter(spec["log_path"], log_dir=spec.get("log_directory"))
                except OSError as e:
                    raise ShimError("InvalidArgument",
                                    f"cannot open log file {spec['log_path']}: {e}") from None
            stdio = self._container_stdio(c, child_fds)
            gate_r, c.gate_w = os.pipe2(os.O_CLOEXEC)
            child_fds.append(gate_r)
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            child_fds.append(report_w)
            c.report_fd = report_r
            c.init_pid = spawn.fork_container_init(spec, stdio, gate_r, report_w)
        except BaseException:
            self._release_fds(c)
            raise
        finally:
            for fd in child_fds:
                _close(fd)
        c.pid = c.init_pid
        self.pids[c.init_pid] = ("container", c)
        self.containers[cid] = c
        os.set_blocking(c.report_fd, False)
        self.loop.add_reader(c.report_fd, lambda: self._read_container_report(c))
        for fd in c.outputs:
            self.loop.add_reader(fd, self._output_reader(c, fd))
        c.pending_create = conn
        c.create_timer = self.loop.call_later(CREATE_TIMEOUT, lambda: self._fail_create(
            c, "DeadlineExceeded", f"container init did not get ready in {CREATE_TIMEOUT:.0f}s"))

    def _output_reader(self, c: Container, fd: int) -> Callable[[], None]:
        def on_readable() -> None:
            self._on_output(c, fd)
        return on_readable

    def _container_stdio(self, c: Container, child_fds: list[int]) -> tuple[int, int, int]:
        if c.tty:
            master, slave = os.openpty()  # both O_CLOEXEC (non-inheritable)
            child_fds.append(slave)
            c.pty_master = master
            out = os.dup(master)
            c.outputs[out] = "stdout"
            c.stdin_writer = BufferedWriter(self.loop, os.dup(master)) if c.stdin else None
            os.set_blocking(out, False)
            return (slave, slave, slave)
        if c.stdin:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            child_fds.append(in_r)
            c.stdin_writer = BufferedWriter(self.loop, in_w)
        else:
            in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            child_fds.append(in_r)
        out_r, out_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        c.outputs[out_r] = "stdout"
        child_fds.append(out_w)
        os.set_blocking(out_w, True)
        err_r, err_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        c.outputs[err_r] = "stderr"
        child_fds.append(err_w)
        os.set_blocking(err_w, True)
        return (in_r, out_w, err_w)

    def _read_container_report(self, c: Container) -> None:
        while c.report_fd >= 0:
            try:
                data = os.read(c.report_fd, _READ)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._container_report_eof(c)
                return
            msgs, c.report_buf = take_report_messages(c.report_buf + data)
            for msg in msgs:
                if isinstance(msg.get("pid"), int) and msg["pid"] > 0:
                    self._set_container_pid(c, msg["pid"])
                if msg.get("ready"):
                    c.user = msg.get("user") or {}
                    self._container_ready(c)
                if "error" in msg:
                    kind = str(msg.get("kind") or "PycriError")
                    if c.state == "creating":
                        self._fail_create(c, kind, str(msg["error"]))
                        return
                    c.start_error = (kind, str(msg["error"]))

    def _set_container_pid(self, c: Container, pid: int) -> None:
        if pid == c.pid:
            return
        if self.pids.get(c.pid, (None, None))[1] is c:
            self.pids[c.pid] = ("init", c)
        c.pid = pid
        self.pids[pid] = ("container", c)
        if pid in self.unclaimed:
            status = self.unclaimed.pop(pid)
            del self.pids[pid]
            self.loop.call_later(0, lambda: self._container_exited(c, status))

    def _container_ready(self, c: Container) -> None:
        if c.state != "creating":
            return
        c.state = "created"
        c.created_at = _now()
        if c.create_timer:
            c.create_timer.cancel()
        self._write_status(c)
        conn, c.pending_create = c.pending_create, None
        if conn is not None:
            conn.reply({"pid": c.pid, "user": c.user})

    def _fail_create(self, c: Container, kind: str, message: str) -> None:
        if c.state != "creating":
            return
        c.state = "discarded"
        if c.create_timer:
            c.create_timer.cancel()
        self._signal(c.pid, signal.SIGKILL)
        self._signal(c.init_pid, signal.SIGKILL)
        if self.containers.get(c.id) is c:
            del self.containers[c.id]
        self._release_fds(c)
        conn, c.pending_create = c.pending_create, None
        if conn is not None:
            conn.reply_error(kind, message)
        self._check_shutdown()

    def _container_report_eof(self, c: Container) -> None:
        self.loop.forget(c.report_fd)
        _close(c.report_fd)
        c.report_fd = -1
        if c.state == "creating":
            self._fail_create(c, "PycriError", "container init exited before it was ready")
            return
        conn, c.pending_start = c.pending_start, None
        if conn is not None:
            if c.start_error:
                conn.reply_error(*c.start_error)
            else:
                conn.reply({"started_at": c.started_at})

    # --- start --------------------------------------------------------------------
    def op_start(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any] | None:
        c = self._container(req)
        if c.state != "created":
            raise ShimError("FailedPrecondition",
                            f"container {c.id} is {c.state}; only a created container can start")
        c.oom_count_at_start = oom.oom_kill_count(c.spec)
        try:
            os.write(c.gate_w, b"s")
        except OSError as e:
            raise ShimError("FailedPrecondition",
                            f"container {c.id}: its init is gone ({e.strerror})") from None
        finally:
            _close(c.gate_w)
            c.gate_w = -1
        c.state = "running"
        c.started_at = _now()
        self._write_status(c)
        if c.report_fd < 0:
            return {"started_at": c.started_at}
        c.pending_start = conn
        return None

    # --- output, stdin, attach ------------------------------------------------------
    def _on_output(self, c: Container, fd: int) -> bool:
        """Relay one chunk; False when nothing was there to read."""
        stream = c.outputs.get(fd)
        if stream is None:
            return False
        try:
            data = os.read(fd, _READ)
        except BlockingIOError:
            return False
        except OSError:  # EIO: pty without slave
            data = b""
        if not data:
            self.loop.forget(fd)
            _close(fd)
            del c.outputs[fd]
            if c.log is not None:
                self._log(c, lambda log: log.flush(stream))
            return False
        if c.log is not None:
            self._log(c, lambda log: log.write(stream, data))
        frame = frames.STDOUT if stream == "stdout" else frames.STDERR
        for conn in list(c.attached):
            conn.send_frame(frame, data)
        return True

    def _log(self, c: Container, action: Any) -> None:
        assert c.log is not None
        try:
            action(c.log)
        except OSError as e:
            if not c.message:
                c.message = f"writing log {c.log.path}: {e}"

    def _drain_outputs(self, c: Container) -> None:
        """Relay what the exited process left in its pipes (bounded: 64 MiB per fd)."""
        for fd in list(c.outputs):
            for _ in range(1024):
                if not self._on_output(c, fd):
                    break

    def _close_stdin(self, c: Container) -> None:
        if c.stdin_writer is not None:
            c.stdin_writer.close_when_flushed()
            c.stdin_writer = None

    def op_attach(self, conn: Connection, req: dict[str, Any]) -> None:
        c = self._container(req)
        if c.state not in ("created", "running"):
            raise ShimError("FailedPrecondition",
                            f"container {c.id} is {c.state}; attach needs a running container")
        conn.enter_attach_mode(lambda cn, s, p: self._attach_frame(c, cn, s, p))
        c.attached.append(conn)
        conn.reply({})

    def _attach_frame(self, c: Container, conn: Connection, stream: int, payload: bytes) -> None:
        if stream in (frames.STDIN, frames.STDIN_CLOSE):
            conn.used_stdin = True
        if stream == frames.STDIN and c.stdin_writer is not None:
            writer = c.stdin_writer
            writer.write(payload)
            if writer.queued > STDIN_PAUSE_BYTES:  # back-pressure: stop reading this client
                self.loop.remove_reader(conn.fd)
                writer.on_drain = lambda: self._resume_attach_readers(c)
        elif stream == frames.STDIN_CLOSE and c.stdin_once:
            self._close_stdin(c)
        elif stream == frames.RESIZE and c.pty_master >= 0:
            try:
                size = json.loads(payload)
                rows, cols = int(size["height"]), int(size["width"])
                fcntl.ioctl(c.pty_master, termios.TIOCSWINSZ,
                            struct.pack("HHHH", rows, cols, 0, 0))
            except (ValueError, KeyError, TypeError, OSError, struct.error):
                pass

    def _resume_attach_readers(self, c: Container) -> None:
        for conn in c.attached:
            conn.resume_reading()

    # --- exit ---------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._child_exited(pid, status)

    def _child_exited(self, pid: int, status: int) -> None:
        entry = self.pids.get(pid)
        if entry is not None and entry[0] == "container" and entry[1].report_fd >= 0:
            self._read_container_report(entry[1])  # a pid report may still be queued
        elif entry is not None and entry[0] == "exec" and entry[1].report_fd >= 0:
            self._read_exec_report(entry[1])
        entry = self.pids.pop(pid, None)
        if entry is None:
            self.unclaimed[pid] = status
            while len(self.unclaimed) > MAX_UNCLAIMED:
                del self.unclaimed[next(iter(self.unclaimed))]
            return
        kind, obj = entry
        if kind == "pause":
            self.pause_alive = False
        elif kind == "container":
            self._container_exited(obj, status)
        elif kind == "exec":
            self._exec_exited(obj, status)

    def _container_exited(self, c: Container, status: int) -> None:
        if c.state in ("exited",):
            return
        if c.state in ("creating", "discarded"):
            self._fail_create(c, "PycriError",
                              f"container init exited with code {exit_code_of(status)} "
                              "before it was ready")
            self._release_fds(c)
            self._remove_cgroup(c)
            return
        self._drain_outputs(c)
        c.mark_exited(status, oom.was_oom_killed(c.spec, c.oom_count_at_start,
                                                 os.WTERMSIG(status) if os.WIFSIGNALED(status)
                                                 else 0))
        if c.start_error and not c.message:
            c.message = c.start_error[1]
        self._remove_cgroup(c)
        _close(c.gate_w)
        c.gate_w = -1
        self._close_stdin(c)
        self._write_status(c)
        state = c.state_dict()
        payload = json.dumps(state).encode()
        for conn in list(c.attached):
            conn.send_frame(frames.EXITED, payload)
            conn.finish()
        c.attached.clear()
        for conn, timer in c.waiters:
            if timer:
                timer.cancel()
            conn.reply(state)
        c.waiters.clear()
        if c.pending_delete:
            self._finish_delete(c)
        self._check_shutdown()

    def _remove_cgroup(self, c: Container) -> None:
        error = oom.remove_container_cgroup(c.spec)
        if error:
            print(f"pycri-shim {self.pod_id}: container {c.id}: {error}", file=sys.stderr)

    # --- wait / delete ----------------------------------------------------------------
    def op_wait(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any] | None:
        c = self._container(req)
        if c.state == "exited":
            return c.state_dict()
        timeout = req.get("timeout")
        timer = None
        if isinstance(timeout, (int, float)) and timeout >= 0:
            def expire() -> None:
                for i, (cn, _) in enumerate(c.waiters):
                    if cn is conn:
                        del c.waiters[i]
                        conn.reply(c.state_dict())
                        return
            timer = self.loop.call_later(float(timeout), expire)
        c.waiters.append((conn, timer))
        return None

    def op_delete(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any] | None:
        cid = _valid_id(req.get("container_id"), "container_id")
        c = self.containers.get(cid)
        if c is None or c.state == "discarded":
            statusfile.remove_state(self.shim_dir, cid)
            return {"deleted": False}
        if c.state == "creating":
            raise ShimError("FailedPrecondition", f"container {cid} is still being created")
        for e in list(self.execs.values()):
            if e.container is c and not e.exited:
                self._signal(e.pid, signal.SIGKILL)
        if c.state == "exited":
            self._forget_container(c)
            return {"deleted": True}
        c.pending_delete.append(conn)
        self._signal(c.pid, signal.SIGKILL)
        self._signal(c.init_pid, signal.SIGKILL)
        self.loop.call_later(DELETE_KILL_TIMEOUT, lambda: self._delete_timeout(c))
        return None

    def _delete_timeout(self, c: Container) -> None:
        conns, c.pending_delete = c.pending_delete, []
        for conn in conns:
            conn.reply_error("DeadlineExceeded",
                             f"container {c.id} (pid {c.pid}) did not exit after SIGKILL")

    def _finish_delete(self, c: Container) -> None:
        conns, c.pending_delete = c.pending_delete, []
        self._forget_container(c)
        for conn in conns:
            conn.reply({"deleted": True})

    def _forget_container(self, c: Container) -> None:
        for conn in list(c.attached):
            conn.finish()
        c.attached.clear()
        for conn, timer in c.waiters:
            if timer:
                timer.cancel()
            conn.reply(c.state_dict())
        c.waiters.clear()
        self._release_fds(c)
        if self.containers.get(c.id) is c:
            del self.containers[c.id]
        for eid in [eid for eid, e in self.execs.items() if e.container is c and e.exited]:
            del self.execs[eid]
        statusfile.remove_state(self.shim_dir, c.id)

    def _release_fds(self, c: Container) -> None:
        for fd in list(c.outputs):
            self.loop.forget(fd)
            _close(fd)
        c.outputs.clear()
        if c.log is not None:
            c.log.flush("stdout")
            c.log.flush("stderr")
            c.log.close()
            c.log = None
        if c.stdin_writer is not None:
            c.stdin_writer.close()
            c.stdin_writer = None
        for name in ("report_fd", "gate_w", "pty_master"):
            fd = getattr(c, name)
            if fd >= 0:
                self.loop.forget(fd)
                _close(fd)
                setattr(c, name, -1)

    def _write_status(self, c: Container) -> None:
        try:
            statusfile.write_state(self.shim_dir, c.id, c.state_dict())
        except OSError as e:
            c.message = c.message or f"cannot write status file: {e}"

    # --- exec ---------------------------------------------------------------------------
    def op_exec(self, conn: Connection, req: dict[str, Any], fds: list[int]) -> None:
        try:
            c = self._container(req)
            if c.state != "running":
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
                _close(report_r)
                raise
            finally:
                _close(report_w)
        finally:
            for fd in fds:
                _close(fd)
        e = ExecProcess(secrets.token_hex(8), c)
        e.forked_pid = e.pid = forked
        e.report_fd = report_r
        e.pending_reply = conn
        self.execs[e.id] = e
        self.pids[forked] = ("exec", e)
        os.set_blocking(report_r, False)
        self.loop.add_reader(report_r, lambda: self._read_exec_report(e))
        self._trim_execs()

    def _trim_execs(self) -> None:
        finished = [eid for eid, e in self.execs.items() if e.exited]
        for eid in finished[: max(0, len(finished) - MAX_FINISHED_EXECS)]:
            del self.execs[eid]

    def _read_exec_report(self, e: ExecProcess) -> None:
        while e.report_fd >= 0:
            try:
                data = os.read(e.report_fd, _READ)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.loop.forget(e.report_fd)
                _close(e.report_fd)
                e.report_fd = -1
                conn, e.pending_reply = e.pending_reply, None
                if conn is not None:
                    if e.error:
                        conn.reply_error(*e.error)
                    else:
                        conn.reply({"exec_id": e.id, "pid": e.pid})
                if e.error and e.exited:
                    self.execs.pop(e.id, None)
                return
            msgs, e.report_buf = take_report_messages(e.report_buf + data)
            for msg in msgs:
                pid = msg.get("pid")
                if isinstance(pid, int) and pid > 0 and pid != e.pid:
                    if self.pids.get(e.pid, (None, None))[1] is e:
                        self.pids[e.pid] = ("exec_fork", e)
                    e.pid = pid
                    self.pids[pid] = ("exec", e)
                    if pid in self.unclaimed:
                        status = self.unclaimed.pop(pid)
                        del self.pids[pid]
                        self.loop.call_later(0, functools.partial(self._exec_exited, e, status))
                if "error" in msg:
                    e.error = (str(msg.get("kind") or "PycriError"), str(msg["error"]))

    def _exec_exited(self, e: ExecProcess, status: int) -> None:
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
            self.execs.pop(e.id, None)
        self._check_shutdown()

    def _exec(self, req: dict[str, Any]) -> ExecProcess:
        eid = req.get("exec_id")
        e = self.execs.get(eid) if isinstance(eid, str) else None
        if e is None:
            raise ShimError("NotFound", f"exec {eid!r} not found in pod {self.pod_id}")
        return e

    def op_exec_wait(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any] | None:
        e = self._exec(req)
        if e.exited:
            self.execs.pop(e.id, None)
            return {"exit_code": e.exit_code, "timed_out": e.timed_out}
        timeout = req.get("timeout")
        timer = None
        if isinstance(timeout, (int, float)) and timeout > 0:
            def expire() -> None:
                e.timed_out = True
                self._signal(e.pid, signal.SIGKILL)
                if e.forked_pid != e.pid:
                    self._signal(e.forked_pid, signal.SIGKILL)
            timer = self.loop.call_later(float(timeout), expire)
        e.waiters.append((conn, timer))
        return None

    def op_exec_kill(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        e = self._exec(req)
        sig = req.get("signal", signal.SIGKILL)
        if not isinstance(sig, int) or not 1 <= sig <= 64:
            raise ShimError("InvalidArgument", f"signal must be an integer 1..64, got {sig!r}")
        if not e.exited:
            self._signal(e.pid, sig)
        return {}

    # --- shutdown -----------------------------------------------------------------------
    def op_shutdown(self, conn: Connection, req: dict[str, Any]) -> None:
        grace = req.get("grace", 10)
        if not isinstance(grace, (int, float)) or grace < 0:
            raise ShimError("InvalidArgument", f"grace must be a number of seconds >= 0, "
                                               f"got {grace!r}")
        self.shutdown_conns.append(conn)
        self.begin_shutdown(float(grace))

    def begin_shutdown(self, grace: float) -> None:
        if self.shutting_down:
            self._check_shutdown()
            return
        self.shutting_down = True
        for c in list(self.containers.values()):
            if c.state == "running":
                self._signal(c.pid, signal.SIGTERM)
            elif c.state in ("created", "creating"):
                self._signal(c.pid, signal.SIGKILL)
                self._signal(c.init_pid, signal.SIGKILL)
        for e in self.execs.values():
            if not e.exited:
                self._signal(e.pid, signal.SIGKILL)
        self.loop.call_later(grace, self._shutdown_kill)
        self._check_shutdown()

    def _shutdown_kill(self) -> None:
        for c in self.containers.values():
            if c.state not in ("exited", "discarded"):
                self._signal(c.pid, signal.SIGKILL)
                self._signal(c.init_pid, signal.SIGKILL)
        for e in self.execs.values():
            if not e.exited:
                self._signal(e.pid, signal.SIGKILL)

    def _check_shutdown(self) -> None:
        if not self.shutting_down or self.finished:
            return
        if any(c.state not in ("exited", "discarded") for c in self.containers.values()):
            return
        self.finished = True
        for c in list(self.containers.values()):
            self._release_fds(c)
        self.stop_pause()
        error = ""
        try:
            namespaces.unpin_all(self.ns_dir)
        except OSError as e:
            error = f"unpinning namespaces under {self.ns_dir}: {e}"
        self.loop.forget(self.listener.fileno())
        self.listener.close()
        for name in ("shim.sock", "shim.pid"):
            try:
                os.unlink(os.path.join(self.shim_dir, name))
            except FileNotFoundError:
                pass
        line = (json.dumps({"ok": False, "kind": "PycriError", "error": error}) if error
                else json.dumps({"ok": True})).encode() + b"\n"
        for conn in self.shutdown_conns:
            if conn.closed:
                continue
            try:
                conn.sock.setblocking(True)
                conn.sock.settimeout(2)
                conn.sock.sendall(line)
            except OSError:
                pass
        self.loop.stop()

    def stop_pause(self) -> None:
        """SIGKILL the pause-holder and reap until it is gone. With a pod PID namespace the
        kernel holds PID 1 until every process of the namespace is reaped, and some of those
        are our children: so reap everything here, never just the pause pid."""
        if self.pause_pid is None or not self.pause_alive:
            return
        self.pids.pop(self.pause_pid, None)
        try:
            os.kill(self.pause_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == self.pause_pid:
                break
            self._child_exited(pid, status)
        self.pause_alive = False
        self._remove_pause_cgroup()

    def _remove_pause_cgroup(self) -> None:
        """v2: the pause-holder's own leaf cgroup (see naming.pause_cgroup_path)."""
        cgroup = self.pod.get("cgroup")
        path = cgroup.get("path") if isinstance(cgroup, dict) else None
        if not path or not isinstance(cgroup, dict):
            return
        driver = str(cgroup.get("driver") or "cgroupfs")
        try:
            from runtime import cgroups
            from runtime.cgroups.naming import pause_cgroup_path

            leaf = pause_cgroup_path(path, driver,
                                     self.pod_id, cgroups.detect_mode())
            if leaf != path:
                cgroups.remove_cgroup(leaf, timeout=1.0)
        except Exception as e:  # noqa: BLE001 - best effort; the pod cgroup removal recurses
            print(f"pycri-shim {self.pod_id}: pause cgroup not removed: {e}", file=sys.stderr)

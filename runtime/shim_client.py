"""Daemon side of the shim control protocol (contract 3, docs/architecture.md).

`ShimClient(shim_dir)` has one method per op: it sends the op's request dataclass and
parses the reply into its dataclass (runtime.shim.protocol, shared with the shim).
Thread-safe: every call uses its own connection. Error replies raise the
pycri_common.errors class named by "kind" (protocol.error_from_json; an unknown kind is
the INTERNAL base class); an unreachable shim raises Unavailable, a reply that does not
come in time DeadlineExceeded, a malformed reply PycriError.

`read_final_states(shim_dir)` reads the status files when the shim is gone.
"""
from __future__ import annotations

import array
import dataclasses
import errno
import json
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from pycri_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    PycriError,
    Unavailable,
)
from pycri_common.timeouts import scaled
from runtime import keeper
from runtime.container_spec import ContainerSpec
from runtime.lines import recv_line
from runtime.shim import control, frames, protocol, statusfile
from runtime.shim.protocol import ContainerState

DEFAULT_TIMEOUT = 30.0
_SLACK = 15.0


def send_with_fds(sock: socket.socket, data: bytes, fds: list[int] | None) -> None:
    """Send all of `data`, the fds (SCM_RIGHTS) with its first byte.

    One sendmsg may take only part of `data` (a unix socket buffers about 200 KiB): the rest
    follows with sendall; the fds went with the first part, where the shim collects them for
    the line they start.
    """
    if not fds:
        sock.sendall(data)
        return
    sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  array.array("i", fds).tobytes())])
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


_R = TypeVar("_R")


class AttachStream:
    """An attached container: frames in both directions (runtime.shim.frames)."""

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self._decoder = frames.FrameDecoder()
        self._queue: list[tuple[int, bytes]] = self._decoder.feed(leftover) if leftover else []

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_stdin(self, data: bytes) -> None:
        for i in range(0, len(data), frames.MAX_PAYLOAD):
            self.sock.sendall(frames.encode(frames.STDIN, data[i:i + frames.MAX_PAYLOAD]))

    def close_stdin(self) -> None:
        self.sock.sendall(frames.encode(frames.STDIN_CLOSE))

    def resize(self, width: int, height: int) -> None:
        self.sock.sendall(frames.encode(frames.RESIZE, json.dumps(
            {"width": int(width), "height": int(height)}).encode()))

    def recv_frame(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """Next (stream, payload); None when the shim closed the stream."""
        self.sock.settimeout(timeout)
        while not self._queue:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise DeadlineExceeded("no attach output within the timeout") from None
            if not data:
                return None
            self._queue.extend(self._decoder.feed(data))
        return self._queue.pop(0)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AttachStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShimClient:
    def __init__(self, shim_dir: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.shim_dir = shim_dir
        self.socket_path = os.path.join(shim_dir, "shim.sock")
        self.timeout = timeout

    # --- transport -------------------------------------------------------------
    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise Unavailable(f"the shim of {self.shim_dir} is not running "
                                  f"({e.strerror})") from None
            raise Unavailable(f"cannot reach the shim at {self.socket_path}: {e}") from None
        return sock

    def _roundtrip(self, sock: socket.socket, req: dict[str, Any], fds: list[int] | None,
                   timeout: float) -> tuple[dict[str, Any], bytes]:
        line = json.dumps(req).encode() + b"\n"
        if len(line) > control.MAX_LINE:
            raise InvalidArgument(f"the {req['op']!r} request is {len(line)} bytes encoded, "
                                  f"more than the {control.MAX_LINE} the shim accepts")
        try:
            send_with_fds(sock, line, fds)
            got = recv_line(sock)
        except TimeoutError:
            raise DeadlineExceeded(f"the shim of {self.shim_dir} did not answer "
                                   f"{req['op']!r} within {timeout:.0f}s") from None
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Unavailable(f"the shim of {self.shim_dir} went away during "
                              f"{req['op']!r}: {e}") from None
        if got is None:
            raise Unavailable(f"the shim of {self.shim_dir} closed the connection during "
                              f"{req['op']!r}")
        line_out, rest = got
        return self._reply_of(line_out, req["op"]), rest

    def _reply_of(self, line: bytes, op: str) -> dict[str, Any]:
        """A reply line as its fields; an error reply raised as its class."""
        try:
            reply = json.loads(line)
        except (ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict):
            raise PycriError(f"the shim of {self.shim_dir} answered {op!r} with a line "
                             f"that is not a JSON object: {line[:100]!r}")
        if not reply.get("ok"):
            raise protocol.error_from_json(reply, f"shim op {op!r} failed")
        reply.pop("ok", None)
        return reply

    def call(self, op: str, fds: list[int] | None = None, timeout: float | None = None,
             **fields: Any) -> dict[str, Any]:
        """One request/reply of any op, untyped (tests, debugging); the ops below are typed.
        fds go with the request by SCM_RIGHTS."""
        return self._call({"op": op, **fields}, fds, timeout or self.timeout)

    def _call(self, req: dict[str, Any], fds: list[int] | None, timeout: float,
              connect_timeout: float | None = None) -> dict[str, Any]:
        timeout = scaled(timeout)
        sock = self._connect(scaled(connect_timeout) if connect_timeout else timeout)
        try:
            reply, _ = self._roundtrip(sock, req, fds, timeout)
            return reply
        finally:
            sock.close()

    def _parsed(self, req: protocol.Request, parse: Callable[[dict[str, Any]], _R],
                reply: dict[str, Any]) -> _R:
        return self._parsed_as(req.op, parse, reply)

    def _parsed_as(self, op: str, parse: Callable[[dict[str, Any]], _R],
                   reply: dict[str, Any]) -> _R:
        try:
            return parse(reply)
        except InvalidArgument as e:  # the shim's fault, not the caller's
            raise PycriError(f"the shim of {self.shim_dir} answered {op!r} with a "
                             f"malformed reply: {e}") from None

    def send(self, req: protocol.Request, parse: Callable[[dict[str, Any]], _R],
             fds: list[int] | None = None, timeout: float | None = None) -> _R:
        """Send a request, parse its reply with `parse` (a reply class's from_json)."""
        return self._parsed(req, parse, self._call(req.to_json(), fds, timeout or self.timeout))

    # --- ops ----------------------------------------------------------------------
    def alive(self) -> bool:
        try:
            self.hello(timeout=2.0)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not usable"
            return False

    def hello(self, timeout: float | None = None) -> protocol.HelloReply:
        return self.send(protocol.Hello(), protocol.HelloReply.from_json, timeout=timeout)

    def create(self, container_id: str, spec: ContainerSpec,
               timeout: float = 150.0) -> protocol.CreateReply:
        """Fork the container init; replies once it waits at its gate."""
        return self.send(protocol.Create(container_id, spec), protocol.CreateReply.from_json,
                         timeout=timeout)

    def start(self, container_id: str) -> int:
        """Release the init to exec; returns started_at (ns)."""
        return self.send(protocol.Start(container_id), protocol.StartReply.from_json).started_at

    def kill(self, container_id: str, signal: int) -> None:
        self.send(protocol.Kill(container_id, int(signal)), protocol.Empty.from_json)

    def state(self, container_id: str | None = None) -> dict[str, ContainerState]:
        """{cid: ContainerState} of one container or of every one."""
        return self.send(protocol.State(container_id), protocol.StateReply.from_json).containers

    def wait(self, container_id: str, timeout: float) -> ContainerState:
        """The state after the container exited or `timeout` seconds passed."""
        req = protocol.Wait(container_id, float(timeout))
        t = float(timeout) + _SLACK
        return self._parsed(req, ContainerState.from_json, self._call(req.to_json(), None, t))

    def delete(self, container_id: str) -> bool:
        """Kill (if running) and forget the container; False if the shim did not know it."""
        return self.send(protocol.Delete(container_id), protocol.DeleteReply.from_json).deleted

    def reopen_log(self, container_id: str) -> None:
        self.send(protocol.ReopenLog(container_id), protocol.Empty.from_json)

    def exec(self, container_id: str, process: dict[str, Any],
             fds: list[int]) -> protocol.ExecReply:
        """Start a process in the container; fds = [stdin, stdout, stderr] or [pty slave].

        The caller keeps (and closes) its own fds.
        """
        return self.send(protocol.Exec(container_id, process), protocol.ExecReply.from_json,
                         fds=fds)

    def exec_until_exit(self, container_id: str, process: dict[str, Any], fds: list[int],
                        timeout: float | None = None) -> PendingExec:
        """Start a process as exec does and have its exit (exec_wait's reply, a timeout > 0
        killing it) come on the same connection: PendingExec.read() once its fileno() is
        readable. Raises what exec raises when the request cannot be sent."""
        req = protocol.Exec(container_id, process, wait=True,
                            timeout=float(timeout) if timeout else 0.0)
        line = json.dumps(req.to_json()).encode() + b"\n"
        if len(line) > control.MAX_LINE:
            raise InvalidArgument(f"the 'exec' request is {len(line)} bytes encoded, more "
                                  f"than the {control.MAX_LINE} the shim accepts")
        sock = self._connect(scaled(self.timeout))
        try:
            send_with_fds(sock, line, fds)
        except (BrokenPipeError, ConnectionResetError) as e:
            sock.close()
            raise Unavailable(f"the shim of {self.shim_dir} went away during 'exec': "
                              f"{e}") from None
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return PendingExec(self, sock, req.timeout)

    def exec_wait(self, exec_id: str, timeout: float | None = None) -> protocol.ExecWaitReply:
        """The exit code once the exec exited; a timeout (> 0) kills the process."""
        req = protocol.ExecWait(exec_id, float(timeout) if timeout else 0.0)
        sock = self._connect(self.timeout)
        try:
            sock.settimeout(None if not req.timeout else req.timeout + _SLACK)
            reply, _ = self._roundtrip(sock, req.to_json(), None, req.timeout + _SLACK)
        finally:
            sock.close()
        return self._parsed(req, protocol.ExecWaitReply.from_json, reply)

    def exec_kill(self, exec_id: str, signal: int) -> None:
        self.send(protocol.ExecKill(exec_id, int(signal)), protocol.Empty.from_json)

    def attach(self, container_id: str) -> AttachStream:
        sock = self._connect(self.timeout)
        try:
            _, rest = self._roundtrip(sock, protocol.Attach(container_id).to_json(), None,
                                      self.timeout)
        except BaseException:
            sock.close()
            raise
        return AttachStream(sock, rest)

    def shutdown(self, grace: float = 10.0) -> None:
        """Stop every container (SIGTERM, grace, SIGKILL), the pause-holder, unpin namespaces;
        the shim exits. A shim that is already gone is not an error."""
        try:
            self.send(protocol.Shutdown(float(grace)), protocol.Empty.from_json,
                      timeout=float(grace) + _SLACK)
        except Unavailable:
            if not os.path.exists(self.socket_path):
                return
            raise


class PendingExec:
    """An exec whose exit comes on its connection (ShimClient.exec_until_exit): select on
    fileno(), call read() when it is readable until it returns the ExecWaitReply. A shim from
    before exec's wait field answers ExecReply at once: read() then asks exec_wait on a new
    connection (fileno() changes) and goes on."""

    def __init__(self, client: ShimClient, sock: socket.socket, timeout: float) -> None:
        self.client = client
        self.sock = sock
        self.timeout = timeout
        self.op = "exec"
        self.buf = b""
        self.reconnects = 0   # connections after the first (fileno() changed)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> protocol.ExecWaitReply | None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError as e:
            raise Unavailable(f"the shim of {self.client.shim_dir} went away during "
                              f"{self.op!r}: {e}") from None
        if not data:
            raise Unavailable(f"the shim of {self.client.shim_dir} closed the connection "
                              f"during {self.op!r}")
        self.buf += data
        line, nl, _ = self.buf.partition(b"\n")
        if not nl:
            if len(self.buf) > control.MAX_LINE:
                raise PycriError(f"the shim of {self.client.shim_dir} answered {self.op!r} "
                                 "with an overlong line")
            return None
        reply = self.client._reply_of(line, self.op)
        if "exit_code" not in reply and self.op == "exec":   # an older shim: exec_wait
            started = self.client._parsed_as(self.op, protocol.ExecReply.from_json, reply)
            self._ask_exec_wait(started.exec_id)
            return None
        return self.client._parsed_as(self.op, protocol.ExecWaitReply.from_json, reply)

    def _ask_exec_wait(self, exec_id: str) -> None:
        self.sock.close()
        self.op, self.buf = "exec_wait", b""
        self.reconnects += 1
        self.sock = self.client._connect(scaled(self.client.timeout))
        req = protocol.ExecWait(exec_id, self.timeout)
        send_with_fds(self.sock, json.dumps(req.to_json()).encode() + b"\n", None)
        self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()


def read_final_states(shim_dir: str) -> dict[str, ContainerState]:
    """Container states from the status files, for a shim that is gone: a container
    not recorded as exited is reported exited with reason "Error" (its shim died)."""
    states = read_states(shim_dir)
    for cid, state in states.items():
        recorded = recorded_exit(shim_dir, cid, state)
        if recorded is not None:
            states[cid] = recorded
        elif state.state != "exited":
            states[cid] = dataclasses.replace(
                state, state="exited", exit_code=state.exit_code or 255, reason="Error",
                message="the pod's shim exited while the container was "
                        + ("running" if state.started_at else "created"))
    return states


def recorded_exit(shim_dir: str, container_id: str,
                  state: ContainerState) -> ContainerState | None:
    """The exit the container's keeper recorded (runtime.keeper) while its shim could not:
    `state` (its status file) turned exited; None when there is no record or it was exited."""
    if state.state == "exited":
        return None
    record = keeper.read_exit(keeper.exit_path(statusfile.containers_dir(shim_dir),
                                               container_id))
    if record is None or record["pid"] != state.pid:
        return None
    status = record["status"]
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else (
        os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255)
    return dataclasses.replace(state, state="exited", exit_code=code,
                               finished_at=record["finished_at"],
                               reason="Completed" if code == 0 else "Error",
                               message=state.message or "exit recorded by the container's "
                                                        "keeper while its shim was gone")


def read_states(shim_dir: str) -> dict[str, ContainerState]:
    """The status files under shim_dir, parsed (an unreadable or malformed one is skipped)."""
    states: dict[str, ContainerState] = {}
    for cid, obj in statusfile.read_states(shim_dir).items():
        state = parse_state(obj)
        if state is not None:
            states[cid] = state
    return states


def parse_state(obj: Any) -> ContainerState | None:
    """A status file's content as a ContainerState; None when it is not one."""
    if not isinstance(obj, dict):
        return None
    try:
        return ContainerState.from_json(obj)
    except InvalidArgument:
        return None


def shim_pid(shim_dir: str) -> int | None:
    """The pid recorded in <shim_dir>/shim.pid (None if missing)."""
    try:
        with open(os.path.join(shim_dir, "shim.pid"), "rb") as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


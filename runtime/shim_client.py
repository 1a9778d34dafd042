"""Daemon side of the shim control protocol (contract 3).

`ShimClient(shim_dir)` has one method per op. Thread-safe: every call uses its
own connection. Error replies raise the pycri_common.errors class named by
"kind" (imported lazily, so importing this module pulls in only the stdlib);
an unreachable shim raises Unavailable, a reply that does not come in time
DeadlineExceeded.

`read_final_states(shim_dir)` reads the status files when the shim is gone.
"""
from __future__ import annotations

import array
import errno
import json
import os
import socket
from typing import Any

from pycri_common.timeouts import scaled
from runtime.shim import control, frames, statusfile

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


def _error(kind: str, message: str) -> Exception:
    from pycri_common import errors

    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.PycriError)):
        cls = errors.PycriError
    return cls(message)


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
                from pycri_common import errors
                raise errors.DeadlineExceeded("no attach output within the timeout") from None
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
                raise _error("Unavailable", f"the shim of {self.shim_dir} is not running "
                                            f"({e.strerror})") from None
            raise _error("Unavailable", f"cannot reach the shim at {self.socket_path}: "
                                        f"{e}") from None
        return sock

    def _roundtrip(self, sock: socket.socket, req: dict[str, Any], fds: list[int] | None,
                   timeout: float) -> tuple[dict[str, Any], bytes]:
        line = json.dumps(req).encode() + b"\n"
        if len(line) > control.MAX_LINE:
            raise _error("InvalidArgument", f"the {req['op']!r} request is {len(line)} bytes "
                                            f"encoded, more than the {control.MAX_LINE} the "
                                            "shim accepts")
        try:
            send_with_fds(sock, line, fds)
            buf = b""
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise _error("Unavailable", f"the shim of {self.shim_dir} closed the "
                                                f"connection during {req['op']!r}")
                buf += chunk
        except TimeoutError:
            raise _error("DeadlineExceeded", f"the shim of {self.shim_dir} did not answer "
                                             f"{req['op']!r} within {timeout:.0f}s") from None
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _error("Unavailable", f"the shim of {self.shim_dir} went away during "
                                        f"{req['op']!r}: {e}") from None
        line_out, rest = buf.split(b"\n", 1)
        try:
            reply = json.loads(line_out)
        except (ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict):
            raise _error("PycriError", f"the shim of {self.shim_dir} answered {req['op']!r} with "
                                       f"a line that is not a JSON object: {line_out[:100]!r}")
        if not reply.get("ok"):
            raise _error(str(reply.get("kind") or "PycriError"),
                         str(reply.get("error") or f"shim op {req['op']!r} failed"))
        reply.pop("ok", None)
        return reply, rest

    def call(self, op: str, fds: list[int] | None = None, timeout: float | None = None,
             **fields: Any) -> dict[str, Any]:
        """One request/reply; fds go with the request by SCM_RIGHTS."""
        t = scaled(timeout or self.timeout)
        sock = self._connect(t)
        try:
            reply, _ = self._roundtrip(sock, {"op": op, **fields}, fds, t)
            return reply
        finally:
            sock.close()

    # --- ops ----------------------------------------------------------------------
    def alive(self) -> bool:
        try:
            self.hello(timeout=2.0)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not usable"
            return False

    def hello(self, timeout: float | None = None) -> dict[str, Any]:
        """{"pod_id", "shim_pid", "pause_pid", "pause_alive", "ns", "containers"}"""
        return self.call("hello", timeout=timeout)

    def create(self, container_id: str, spec: dict[str, Any],
               timeout: float = 150.0) -> dict[str, Any]:
        """Fork the container init; returns {"pid", "user"} once it waits at its gate."""
        return self.call("create", container_id=container_id, spec=spec, timeout=timeout)

    def start(self, container_id: str) -> int:
        """Release the init to exec; returns started_at (ns)."""
        return int(self.call("start", container_id=container_id)["started_at"])

    def kill(self, container_id: str, signal: int) -> None:
        self.call("kill", container_id=container_id, signal=int(signal))

    def state(self, container_id: str | None = None) -> dict[str, dict[str, Any]]:
        """{cid: ContainerState}"""
        if container_id is None:
            reply = self.call("state")
        else:
            reply = self.call("state", container_id=container_id)
        containers: dict[str, dict[str, Any]] = reply["containers"]
        return containers

    def wait(self, container_id: str, timeout: float) -> dict[str, Any]:
        """ContainerState after the container exited or `timeout` seconds passed."""
        t = float(timeout)
        sock = self._connect(t + _SLACK)
        try:
            reply, _ = self._roundtrip(sock, {"op": "wait", "container_id": container_id,
                                              "timeout": t}, None, t + _SLACK)
            return reply
        finally:
            sock.close()

    def delete(self, container_id: str) -> bool:
        """Kill (if running) and forget the container; False if the shim did not know it."""
        return bool(self.call("delete", container_id=container_id).get("deleted"))

    def reopen_log(self, container_id: str) -> None:
        self.call("reopen_log", container_id=container_id)

    def exec(self, container_id: str, process: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        """Start a process in the container; fds = [stdin, stdout, stderr] or [pty slave].

        Returns {"exec_id", "pid"}. The caller keeps (and closes) its own fds.
        """
        return self.call("exec", fds=fds, container_id=container_id, process=process)

    def exec_wait(self, exec_id: str, timeout: float | None = None) -> dict[str, Any]:
        """{"exit_code", "timed_out"}; a timeout (> 0) kills the process."""
        t = float(timeout) if timeout else 0.0
        sock = self._connect(self.timeout)
        try:
            sock.settimeout(None if not t else t + _SLACK)
            reply, _ = self._roundtrip(sock, {"op": "exec_wait", "exec_id": exec_id,
                                              "timeout": t}, None, t + _SLACK)
            return reply
        finally:
            sock.close()

    def exec_kill(self, exec_id: str, signal: int) -> None:
        self.call("exec_kill", exec_id=exec_id, signal=int(signal))

    def attach(self, container_id: str) -> AttachStream:
        sock = self._connect(self.timeout)
        try:
            _, rest = self._roundtrip(sock, {"op": "attach", "container_id": container_id},
                                      None, self.timeout)
        except BaseException:
            sock.close()
            raise
        return AttachStream(sock, rest)

    def shutdown(self, grace: float = 10.0) -> None:
        """Stop every container (SIGTERM, grace, SIGKILL), the pause-holder, unpin namespaces;
        the shim exits. A shim that is already gone is not an error."""
        try:
            self.call("shutdown", grace=float(grace), timeout=float(grace) + _SLACK)
        except Exception as e:
            from pycri_common import errors
            if isinstance(e, errors.Unavailable) and not os.path.exists(self.socket_path):
                return
            raise


def read_final_states(shim_dir: str) -> dict[str, dict[str, Any]]:
    """Container states from the status files, for a shim that is gone: a container
    not recorded as exited is reported exited with reason "Error" (its shim died)."""
    states = statusfile.read_states(shim_dir)
    for state in states.values():
        if state.get("state") != "exited":
            state["state"] = "exited"
            state["exit_code"] = state.get("exit_code") or 255
            state["reason"] = "Error"
            state["message"] = "the pod's shim exited while the container was " + \
                               ("running" if state.get("started_at") else "created")
            state["finished_at"] = state.get("finished_at") or 0
    return states


def shim_pid(shim_dir: str) -> int | None:
    """The pid recorded in <shim_dir>/shim.pid (None if missing)."""
    try:
        with open(os.path.join(shim_dir, "shim.pid"), "rb") as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


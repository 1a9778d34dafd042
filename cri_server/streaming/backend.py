"""What the streaming server needs from the runtime: the backend interface.

The daemon implements `StreamingBackend`; the server calls it once a client has
connected and its streams are set up. All file descriptors are owned by the session
object: the server only reads/writes them and calls `close()` once at the end.

Exec:  `exec(container_id, cmd, tty, stdin, stdout, stderr[, size]) -> StreamSession`
  (`size=(width, height)`, optional keyword: with a tty, the client's first terminal size,
  to set on the pty before the process starts; backends without it get `resize()` just
  after `exec()` returns)
  - `stdin`: fd the server writes the client's input to (None unless stdin was asked);
  - `stdout`: fd the server reads (with tty: the pty master; EIO counts as end of file);
  - `stderr`: fd the server reads (None with tty or when not asked);
  - `close_stdin()`: the client ended its input (for a pty the backend may send ^D);
  - `resize(width, height)`: terminal size change (TIOCSWINSZ on the pty);
  - `wait(timeout)`: exit code once the process ended, None if still running at timeout;
  - `kill()`: the client went away: kill the process (SIGKILL) — must not block long;
  - `close()`: release the fds and anything else the session holds.
Attach: `attach(container_id, stdin, stdout, stderr, tty) -> StreamSession`, the same
  object over the container's main process: `wait()` returns when the container exits
  (its exit code), `kill()` is never called for attach (the server calls `close()` to
  detach; the container keeps running), `close_stdin()` implements stdin_once.
Port-forward: `port_forward(pod_sandbox_id, port) -> socket.socket`, a socket connected
  to localhost:<port> inside the pod's network namespace (see netns_socket). Raise
  OSError (e.g. ConnectionRefusedError) or a pycri_common.errors class on failure; the
  message is sent to the client on the error stream.
"""
from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class StreamSession(Protocol):
    stdin: int | None
    stdout: int | None
    stderr: int | None

    def close_stdin(self) -> None: ...

    def resize(self, width: int, height: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int | None: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


ExecSession = StreamSession
AttachSession = StreamSession


class StreamingBackend(Protocol):
    def exec(self, container_id: str, cmd: Sequence[str], tty: bool, stdin: bool,
             stdout: bool, stderr: bool) -> ExecSession: ...

    def attach(self, container_id: str, stdin: bool, stdout: bool, stderr: bool,
               tty: bool) -> AttachSession: ...

    def port_forward(self, pod_sandbox_id: str, port: int) -> socket.socket: ...

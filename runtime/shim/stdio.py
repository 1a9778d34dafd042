"""A container's stdio in the shim: its pipes or pty, the fan-out of its output to the CRI log
and to attached clients, stdin from attached clients, and closing all of it."""
from __future__ import annotations

import fcntl
import json
import os
import struct
import termios
from collections.abc import Callable

from pycri_common.errors import FailedPrecondition
from runtime import syscalls
from runtime.shim import frames, protocol
from runtime.shim.control import Connection
from runtime.shim.crilog import CriLogWriter
from runtime.shim.loop import BufferedWriter, Loop
from runtime.shim.podstate import READ_CHUNK, close_fd
from runtime.shim.records import Container, State

STDIN_PAUSE_BYTES = 1 << 20


def container_stdio(loop: Loop, c: Container, child_fds: list[int]) -> tuple[int, int, int]:
    """The child's (stdin, stdout, stderr); its ends go to child_fds (closed after the fork),
    ours to c.outputs / c.stdin_writer / c.pty_master."""
    if c.tty:
        master, slave = os.openpty()  # both O_CLOEXEC (non-inheritable)
        child_fds.append(slave)
        c.pty_master = master
        out = os.dup(master)
        c.outputs[out] = "stdout"
        c.stdin_writer = BufferedWriter(loop, os.dup(master)) if c.stdin else None
        os.set_blocking(out, False)
        return (slave, slave, slave)
    if c.stdin:
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        child_fds.append(in_r)
        c.stdin_writer = BufferedWriter(loop, in_w)
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


def watch_outputs(loop: Loop, c: Container) -> None:
    for fd in c.outputs:
        loop.add_reader(fd, _output_reader(loop, c, fd))


def _output_reader(loop: Loop, c: Container, fd: int) -> Callable[[], None]:
    def on_readable() -> None:
        relay_output(loop, c, fd)
    return on_readable


_scratch: tuple[int, int] | None = None  # (read end, write end) of peek()'s pipe


def _forget_scratch() -> None:
    global _scratch
    _scratch = None  # a forked child makes its own: never shared


os.register_at_fork(after_in_child=_forget_scratch)


def _scratch_pipe() -> tuple[int, int]:
    """This process's scratch pipe for peek()."""
    global _scratch
    if _scratch is None:
        _scratch = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    return _scratch


def peek(fd: int, limit: int = READ_CHUNK) -> bytes:
    """Up to `limit` bytes at the head of the pipe fd, left in it (tee(2) into the scratch
    pipe, read back from there); b"" at EOF, BlockingIOError when it is empty."""
    r, w = _scratch_pipe()
    n = syscalls.tee(fd, w, limit)
    return os.read(r, n) if n else b""


def _take(c: Container, fd: int) -> tuple[bytes, int]:
    """(a chunk of fd's output, how much of it is still to be consumed from the pipe). A
    pipe is only peeked at: the caller consumes the chunk once it is in the log, so a shim
    killed meanwhile leaves it to its successor. A pty (the master of a tty container) cannot
    be peeked at: read at once."""
    if not c.tty and c.log is not None:  # without a log nothing is kept to protect
        data = peek(fd)
        return data, len(data)
    try:
        return os.read(fd, READ_CHUNK), 0
    except BlockingIOError:
        raise
    except OSError:  # EIO: pty without slave
        return b"", 0


def relay_output(loop: Loop, c: Container, fd: int) -> bool:
    """Relay one chunk to the log, then (consumed from the pipe) to the attached clients;
    False when nothing was there."""
    stream = c.outputs.get(fd)
    if stream is None:
        return False
    try:
        data, unconsumed = _take(c, fd)
    except BlockingIOError:
        return False
    if not data:
        loop.forget(fd)
        close_fd(fd)
        del c.outputs[fd]
        if c.log is not None:
            _log(c, lambda log: log.flush(stream))
        return False
    if c.log is not None:
        _log(c, lambda log: log.write(stream, data))
    if unconsumed:
        os.read(fd, unconsumed)  # in the log now: only we read the pipe, so all of it is there
    frame = frames.STDOUT if stream == "stdout" else frames.STDERR
    for conn in list(c.attached):
        conn.send_frame(frame, data)
    return True


def _log(c: Container, action: Callable[[CriLogWriter], None]) -> None:
    assert c.log is not None
    try:
        action(c.log)
    except OSError as e:
        if not c.message:
            c.message = f"writing log {c.log.path}: {e}"


def drain_outputs(loop: Loop, c: Container) -> None:
    """Relay what the exited process left in its pipes (bounded: 64 MiB per fd)."""
    for fd in list(c.outputs):
        for _ in range(1024):
            if not relay_output(loop, c, fd):
                break


def close_stdin(c: Container) -> None:
    if c.stdin_writer is not None:
        c.stdin_writer.close_when_flushed()
        c.stdin_writer = None


def attach(loop: Loop, c: Container, conn: Connection) -> None:
    if c.state not in (State.CREATED, State.RUNNING):
        raise FailedPrecondition(f"container {c.id} is {c.state}; attach needs a running "
                                 "container")
    conn.enter_attach_mode(lambda cn, s, p: _attach_frame(loop, c, cn, s, p))
    c.attached.append(conn)
    conn.reply(protocol.Empty())


def detach(c: Container, conn: Connection) -> None:
    """conn closed: with stdin_once, the end of the first stdin session closes stdin."""
    if conn in c.attached:
        c.attached.remove(conn)
        if c.stdin_once and conn.used_stdin:
            close_stdin(c)


def _attach_frame(loop: Loop, c: Container, conn: Connection, stream: int, payload: bytes) -> None:
    if stream in (frames.STDIN, frames.STDIN_CLOSE):
        conn.used_stdin = True
    if stream == frames.STDIN and c.stdin_writer is not None:
        writer = c.stdin_writer
        writer.write(payload)
        if writer.queued > STDIN_PAUSE_BYTES:  # back-pressure: stop reading this client
            loop.remove_reader(conn.fd)
            writer.on_drain = lambda: _resume_attach_readers(c)
    elif stream == frames.STDIN_CLOSE and c.stdin_once:
        close_stdin(c)
    elif stream == frames.RESIZE and c.pty_master >= 0:
        try:
            size = json.loads(payload)
            rows, cols = int(size["height"]), int(size["width"])
            fcntl.ioctl(c.pty_master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        except (ValueError, KeyError, TypeError, OSError, struct.error, RecursionError, OverflowError):
            pass


def _resume_attach_readers(c: Container) -> None:
    for conn in c.attached:
        conn.resume_reading()


def release_fds(loop: Loop, c: Container) -> None:
    """Close every fd the shim holds for c (output, log, stdin, report, gate, pty)."""
    for fd in list(c.outputs):
        loop.forget(fd)
        close_fd(fd)
    c.outputs.clear()
    if c.log is not None:
        c.log.flush("stdout")
        c.log.flush("stderr")
        c.log.close()
        c.log = None
    if c.stdin_writer is not None:
        c.stdin_writer.close()
        c.stdin_writer = None
    for name in ("report_fd", "gate_w", "pty_master", "exit_fd", "pidfd", "keeper_pidfd",
                 "oom_efd"):
        fd = getattr(c, name)
        if fd >= 0:
            loop.forget(fd)
            close_fd(fd)
            setattr(c, name, -1)

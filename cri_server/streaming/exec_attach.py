"""Exec and attach over an upgraded connection (SPDY streams or WebSocket channels).

SPDY: the client opens one stream per `streamType` (error, stdin, stdout, stderr,
resize); the server accepts each with an empty SYN_REPLY and starts the command once
the set implied by the request (stdin/stdout/stderr/tty and the protocol version) is
complete, or gives up after the stream creation timeout. WebSocket: channels 0-4 are
stdin, stdout, stderr, error, resize; the server first sends an empty message on the
lowest channel it writes, so the client knows the session is up (as kubelet does).

With a tty, the server waits up to INITIAL_SIZE_WAIT for the client's first terminal size
(clients send it at once) and hands it to the backend (`exec(..., size=(w, h))` when the
backend accepts that keyword, and a `resize()` right after start in any case), so the
command starts with the right window size.
"""
from __future__ import annotations

import inspect
import logging
import socket
import threading
import time

from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming.backend import StreamingBackend, StreamSession
from cri_server.streaming.remotecommand import (
    Channels,
    OutputChannel,
    SessionRunner,
    read_initial_size,
)
from cri_server.streaming.spdy_session import SpdySession, SpdyStream
from cri_server.streaming.tokens import PendingRequest
from cri_server.streaming.websocket import WsChannelConnection
from pycri_common.errors import PycriError

log = logging.getLogger(__name__)

# With a tty, how long to wait for the client's first terminal size before starting.
INITIAL_SIZE_WAIT = 1.0

_ALL_STREAM_TYPES = (kp.STREAM_ERROR, kp.STREAM_STDIN, kp.STREAM_STDOUT, kp.STREAM_STDERR,
                     kp.STREAM_RESIZE)


def _accepts_size(func: object) -> bool:
    try:
        return "size" in inspect.signature(func).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _start_backend(pending: PendingRequest, backend: StreamingBackend,
                   size: tuple[int, int] | None) -> StreamSession:
    req = pending.request
    tty = bool(req.tty)  # type: ignore[attr-defined]
    stderr = bool(req.stderr) and not tty  # type: ignore[attr-defined]
    if pending.kind == "exec":
        extra = {"size": size} if size and _accepts_size(backend.exec) else {}
        session = backend.exec(req.container_id, list(req.cmd), tty,  # type: ignore[attr-defined]
                               bool(req.stdin), bool(req.stdout), stderr,  # type: ignore[attr-defined]
                               **extra)
    else:
        session = backend.attach(req.container_id, bool(req.stdin),  # type: ignore[attr-defined]
                                 bool(req.stdout), stderr, tty)  # type: ignore[attr-defined]
    if size:
        try:
            session.resize(*size)
        except Exception:
            session.close()
            raise
    return session


def _cmd_of(pending: PendingRequest) -> list[str]:
    return list(getattr(pending.request, "cmd", []))


def _run(pending: PendingRequest, backend: StreamingBackend, channels: Channels,
         protocol: str, client_gone: threading.Event, name: str) -> SessionRunner | None:
    """Start the backend session and copy until it ends; None if it could not start."""
    size, resize_buffer = None, bytearray()
    if channels.resize is not None:
        size, resize_buffer = read_initial_size(channels.resize, INITIAL_SIZE_WAIT)
    try:
        session = _start_backend(pending, backend, size)
    except Exception as exc:  # reported to the client
        if isinstance(exc, (OSError, PycriError)):
            log.info("%s: %s failed to start: %s", name, pending.kind, exc)
        else:
            log.exception("%s: %s failed to start", name, pending.kind)
        _write_error(channels.error, kp.status_message(protocol, None, _cmd_of(pending),
                                                       error=str(exc)))
        return None
    runner = SessionRunner(session, channels, protocol, _cmd_of(pending),
                           is_exec=pending.kind == "exec", client_gone=client_gone, name=name,
                           resize_buffer=resize_buffer)
    try:
        runner.run()
    except Exception:
        log.exception("%s: session failed", name)
    return runner


def _write_error(channel: OutputChannel | None, message: bytes) -> None:
    if channel is None:
        return
    try:
        if message:
            channel.write(message)
        channel.close()
    except (OSError, ConnectionError):
        pass


def serve_spdy(sock: socket.socket, trailing: bytes, protocol: str, pending: PendingRequest,
               backend: StreamingBackend, creation_timeout: float, name: str) -> None:
    req = pending.request
    expected = kp.expected_streams(
        bool(req.stdin), bool(req.stdout), bool(req.stderr),  # type: ignore[attr-defined]
        bool(req.tty), kp.supports_resize(protocol, websocket=False))  # type: ignore[attr-defined]
    streams: dict[str, SpdyStream] = {}
    cond = threading.Condition()

    def on_stream(stream: SpdyStream) -> bool:
        kind = stream.header(kp.STREAM_TYPE_HEADER)
        with cond:
            if kind not in _ALL_STREAM_TYPES or kind in streams:
                return False
            streams[kind] = stream
            cond.notify_all()
        return True

    session = SpdySession(sock, client_side=False, on_stream=on_stream, initial_data=trailing,
                          name=name).start()
    try:
        _serve_spdy_session(session, streams, cond, expected, protocol, pending, backend,
                            creation_timeout, name)
    finally:
        session.close()


def _serve_spdy_session(session: SpdySession, streams: dict[str, SpdyStream],
                        cond: threading.Condition, expected: set[str], protocol: str,
                        pending: PendingRequest, backend: StreamingBackend,
                        creation_timeout: float, name: str) -> None:
    deadline = time.monotonic() + creation_timeout
    with cond:
        while not expected <= streams.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or session.closed:
                break
            cond.wait(min(remaining, 0.1))
        complete = expected <= streams.keys()
    if not complete:
        log.info("%s: client did not open streams %s in time", name,
                 sorted(expected - streams.keys()))
        session.close()
        return
    channels = Channels(stdin=streams.get(kp.STREAM_STDIN), stdout=streams.get(kp.STREAM_STDOUT),
                        stderr=streams.get(kp.STREAM_STDERR), error=streams[kp.STREAM_ERROR],
                        resize=streams.get(kp.STREAM_RESIZE))
    runner = _run(pending, backend, channels, protocol or kp.V1, session.done, name)
    if session.done.is_set():
        session.close()
    else:
        session.linger_close()
    if runner is not None:
        runner.join()


def serve_websocket(sock: socket.socket, trailing: bytes, protocol: str,
                    pending: PendingRequest, backend: StreamingBackend, name: str) -> None:
    conn = WsChannelConnection(sock, protocol, trailing_data=trailing, name=name).start()
    try:
        _serve_ws_session(conn, protocol, pending, backend, name)
    finally:
        conn.close()


def _serve_ws_session(conn: WsChannelConnection, protocol: str, pending: PendingRequest,
                      backend: StreamingBackend, name: str) -> None:
    req = pending.request
    tty = bool(req.tty)  # type: ignore[attr-defined]
    ch = kp.WS_CHANNELS
    channels = Channels(
        stdin=conn.input(ch[kp.STREAM_STDIN]) if req.stdin else None,  # type: ignore[attr-defined]
        stdout=conn.output(ch[kp.STREAM_STDOUT]) if req.stdout else None,  # type: ignore[attr-defined]
        stderr=(conn.output(ch[kp.STREAM_STDERR])
                if req.stderr and not tty else None),  # type: ignore[attr-defined]
        error=conn.output(ch[kp.STREAM_ERROR]),
        resize=conn.input(ch[kp.STREAM_RESIZE]) if tty else None,
    )
    first = next(c for c in (channels.stdout, channels.stderr, channels.error) if c is not None)
    try:
        first.write(b"")
    except (OSError, ConnectionError):
        conn.close()
        return
    runner = _run(pending, backend, channels, protocol or kp.V1, conn.done, name)
    if conn.closed:
        conn.close()
    else:
        conn.linger_close()
    if runner is not None:
        runner.join()

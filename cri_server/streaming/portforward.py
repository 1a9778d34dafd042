"""Port-forward over SPDY (`portforward.k8s.io`) and over WebSocket.

SPDY: each forwarded connection is a pair of streams sharing a `requestID` header (old
clients without it: the error stream's id, or the data stream's id - 2): `streamType`
error and data, both with a `port` header. Once both are open the server connects to
the port through the backend and copies both ways; when the backend closes, the data
stream gets FIN; the client closing (FIN or reset) half-closes the backend socket.
Failures are written on the error stream as the JSON kubelet sends
({"message": ..., "closeConnection": true}). Pairs left incomplete for the stream
creation timeout get "timed out waiting for streams". Many pairs run in one session, at
most MAX_CONNECTIONS at a time (pending or forwarding): streams beyond it are refused
(RST_STREAM), so one session cannot pile up sockets and threads in the daemon.

WebSocket: the ports come from the `port` query parameters (else from the CRI
request); port i uses data channel 2i and error channel 2i+1, and the first message on
each is the port as 2 bytes little endian. Failures are plain text on the error channel.
The connection ends once every port's backend connection ended. At most MAX_CONNECTIONS
ports per connection.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field

from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming.backend import StreamingBackend
from cri_server.streaming.spdy_session import ByteSocket, SpdySession, SpdyStream
from cri_server.streaming.websocket import WsChannelConnection
from pycri_common.errors import PycriError

log = logging.getLogger(__name__)

_COPY_SIZE = 32 * 1024
#: Forwarded connections one session may have open or pending at once.
MAX_CONNECTIONS = 128


def parse_port(value: str) -> int | None:
    """A port header value: 1-5 ASCII digits naming 1..65535, as kubelet's strconv.ParseUint
    reads it; int() alone would also take "+80", " 80" and "8_0"."""
    if not (1 <= len(value) <= 5 and value.isascii() and value.isdigit()):
        return None
    port = int(value, 10)
    return port if 1 <= port <= 65535 else None


@dataclass
class _Pair:
    request_id: str
    created: float
    data: SpdyStream | None = None
    error: SpdyStream | None = None
    started: bool = False


@dataclass
class _Forwards:
    """Backend sockets and threads of one session, torn down together."""

    sockets: set[socket.socket] = field(default_factory=set)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0   # SPDY stream pairs being forwarded

    def add_active(self, delta: int) -> None:
        with self.lock:
            self.active += delta

    def spawn(self, target: object, *args: object, name: str) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        with self.lock:
            self.threads = [x for x in self.threads if x.is_alive()]
            self.threads.append(t)
        t.start()
        return t

    def shutdown_all(self) -> None:
        with self.lock:
            socks = list(self.sockets)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close_all(self) -> None:
        with self.lock:
            socks = list(self.sockets)
            self.sockets.clear()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()

    def join_all(self, timeout: float = 5.0) -> None:
        with self.lock:
            threads = list(self.threads)
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout)


def _connect(backend: StreamingBackend, pod_id: str, port: int,
             forwards: _Forwards) -> socket.socket:
    sock = backend.port_forward(pod_id, port)
    with forwards.lock:
        forwards.sockets.add(sock)
    return sock


def _release(sock: socket.socket, forwards: _Forwards) -> None:
    with forwards.lock:
        forwards.sockets.discard(sock)
    with contextlib.suppress(OSError):
        sock.close()


# ------------------------------------------------------------------ SPDY


def serve_spdy(sock: ByteSocket, trailing: bytes, pod_id: str, backend: StreamingBackend,
               creation_timeout: float, name: str) -> None:
    pairs: dict[str, _Pair] = {}
    cond = threading.Condition()
    forwards = _Forwards()

    def on_stream(stream: SpdyStream) -> bool:
        kind = stream.header(kp.STREAM_TYPE_HEADER)
        if kind not in (kp.STREAM_DATA, kp.STREAM_ERROR):
            return False
        if parse_port(stream.header(kp.PORT_HEADER)) is None:
            return False
        rid = stream.header(kp.REQUEST_ID_HEADER)
        if not rid:
            rid = str(stream.stream_id if kind == kp.STREAM_ERROR else stream.stream_id - 2)
        with cond:
            if rid not in pairs and len(pairs) + forwards.active >= MAX_CONNECTIONS:
                log.warning("%s: refusing port-forward stream %s: %d connections open or pending "
                            "(limit %d)", name, rid, len(pairs) + forwards.active,
                            MAX_CONNECTIONS)
                return False
            pair = pairs.setdefault(rid, _Pair(rid, time.monotonic()))
            if getattr(pair, kind) is not None:
                return False
            setattr(pair, kind, stream)
            cond.notify_all()
        return True

    session = SpdySession(sock, client_side=False, on_stream=on_stream, initial_data=trailing,
                          name=name).start()
    try:
        with cond:
            while not session.done.is_set():
                now = time.monotonic()
                for rid, pair in list(pairs.items()):
                    if pair.data is not None and pair.error is not None:
                        del pairs[rid]
                        forwards.add_active(1)
                        forwards.spawn(_forward_pair, pair, pod_id, backend, forwards,
                                       name=f"{name}-pf{rid}")
                    elif now - pair.created > creation_timeout:
                        del pairs[rid]
                        forwards.spawn(_timed_out, pair, name=f"{name}-pf{rid}-timeout")
                cond.wait(0.1)
    finally:
        forwards.shutdown_all()
        session.close()
        forwards.join_all()
        forwards.close_all()


def _timed_out(pair: _Pair) -> None:
    for stream in (pair.error, pair.data):
        if stream is None:
            continue
        with contextlib.suppress(OSError, ConnectionError):
            if stream is pair.error:
                stream.write(f"timed out waiting for streams of request {pair.request_id}"
                             .encode())
            stream.close()


def _forward_pair(pair: _Pair, pod_id: str, backend: StreamingBackend,
                  forwards: _Forwards) -> None:
    try:
        _forward_pair_streams(pair, pod_id, backend, forwards)
    finally:
        forwards.add_active(-1)


def _forward_pair_streams(pair: _Pair, pod_id: str, backend: StreamingBackend,
                          forwards: _Forwards) -> None:
    assert pair.data is not None and pair.error is not None
    data, error = pair.data, pair.error
    port = parse_port(data.header(kp.PORT_HEADER)) or 0
    try:
        conn = _connect(backend, pod_id, port, forwards)
    except (OSError, PycriError) as exc:  # goes to the client's error stream
        msg = f"error forwarding port {port} to pod {pod_id}: {exc}"
        log.info(msg)
        with contextlib.suppress(OSError, ConnectionError):
            error.write(kp.portforward_error(msg))
        with contextlib.suppress(OSError, ConnectionError):
            error.close()
            data.close()
        return
    upstream = forwards.spawn(_client_to_backend, data, conn,
                              name=threading.current_thread().name + "-up")
    try:
        while True:
            chunk = conn.recv(_COPY_SIZE)
            if not chunk:
                break
            data.write(chunk)
        data.close()
    except (OSError, ConnectionError):
        pass
    upstream.join()
    _release(conn, forwards)
    with contextlib.suppress(OSError, ConnectionError):
        error.close()
    # Like kubelet's RemoveStreams: whatever the client still sends is dropped.
    data.reset()
    error.reset()


def _client_to_backend(data: SpdyStream, conn: socket.socket) -> None:
    try:
        while chunk := data.read():
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        data.reset()
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)


# ------------------------------------------------------------------ WebSocket


def serve_websocket(sock: socket.socket, trailing: bytes, protocol: str, pod_id: str,
                    ports: list[int], backend: StreamingBackend, name: str) -> None:
    conn = WsChannelConnection(sock, protocol, trailing_data=trailing, name=name).start()
    forwards = _Forwards()
    try:
        for i, port in enumerate(ports):
            prefix = port.to_bytes(2, "little")
            conn.send(2 * i, prefix)
            conn.send(2 * i + 1, prefix)
        workers = [forwards.spawn(_ws_forward_port, conn, i, port, pod_id, backend, forwards,
                                  name=f"{name}-port{port}") for i, port in enumerate(ports)]
        for w in workers:
            while w.is_alive():
                w.join(0.2)
                if conn.done.is_set():
                    forwards.shutdown_all()
    except (OSError, ConnectionError):
        pass
    finally:
        forwards.shutdown_all()
        if conn.closed:
            conn.close()
        else:
            conn.linger_close()
        forwards.join_all()
        forwards.close_all()


def _ws_forward_port(conn: WsChannelConnection, index: int, port: int, pod_id: str,
                     backend: StreamingBackend, forwards: _Forwards) -> None:
    data_ch, error_ch = 2 * index, 2 * index + 1
    try:
        backend_sock = _connect(backend, pod_id, port, forwards)
    except (OSError, PycriError) as exc:  # reported on the port's error channel
        with contextlib.suppress(OSError, ConnectionError):
            conn.send(error_ch, f"error forwarding port {port} to pod {pod_id}: {exc}".encode())
        return
    up = forwards.spawn(_ws_client_to_backend, conn, data_ch, backend_sock,
                        name=threading.current_thread().name + "-up")
    try:
        while chunk := backend_sock.recv(_COPY_SIZE):
            conn.send(data_ch, chunk)
    except (OSError, ConnectionError):
        pass
    with contextlib.suppress(OSError):
        backend_sock.shutdown(socket.SHUT_RDWR)
    # `up` ends when the WebSocket closes; the socket is closed by close_all() after both.
    del up


def _ws_client_to_backend(conn: WsChannelConnection, channel: int,
                          backend_sock: socket.socket) -> None:
    try:
        while chunk := conn.read(channel):
            backend_sock.sendall(chunk)
        backend_sock.shutdown(socket.SHUT_WR)
    except OSError:
        with contextlib.suppress(OSError):
            backend_sock.shutdown(socket.SHUT_RDWR)
